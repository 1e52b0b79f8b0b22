"""Playbooks: loading (config, shipped demo file, extra YAML files), validation, matching."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import ConfigError
from core.schema.remediation import parse_file

from .template import _PH

DEMO_FILE = Path(__file__).parent / "playbooks" / "demo.yaml"


@dataclass(frozen=True)
class Verify:
    """How an action is verified (core.schema.remediation VERIFY): ``query`` with placeholders;
    recovered when its result holds no series of the alert (``recovered_when`` absent) or one
    (present); ``window``: how long to wait (None: the action's verify_window)."""
    query: str
    recovered_when: str = "absent"
    window: float | None = None


@dataclass(frozen=True)
class Action:
    name: str
    backend: str
    operation: str
    params: dict
    timeout: float
    verify_window: float
    verify: Verify | None


@dataclass(frozen=True)
class Playbook:
    name: str
    match: dict
    target: str
    actions: tuple[Action, ...]
    on_resolved: tuple[Action, ...] = ()
    verify: Verify | None = None
    skip_if: str | None = None
    restore_after: str | None = None
    restore_timeout: float = 1800.0
    cooldown: float = 600.0
    max_attempts: int = 3
    attempt_window: float = 3600.0
    dry_run: bool = False
    description: str | None = None
    source: str = "config"
    schedule: dict | None = None      # core.schema.remediation SCHEDULE: act in a low-traffic window
    _regex: dict = field(default_factory=dict, compare=False, repr=False)

    def matches(self, labels: dict) -> bool:
        for k, want in self.match.items():
            have = labels.get(k)
            if have is None:
                return False
            if want.startswith("~"):
                rx = self._regex.get(k)
                if rx is None or not rx.fullmatch(have):
                    return False
            elif have != want:
                return False
        return True


def _verify(v: dict | str | None) -> Verify | None:
    if v is None:
        return None
    if isinstance(v, str):  # a playbook dict not passed through the schema's check_playbook
        return Verify(v)
    return Verify(v["query"], v.get("recovered_when") or "absent", v.get("window"))


def _action(a: dict, r: dict, pb_verify: Verify | None = None) -> Action:
    """The action's verify is its own, else the playbook's; its window the first set of: its own
    verify block's window, its verify_window, the playbook verify block's window,
    remediation.verify_window."""
    own = _verify(a["verify"])
    v = own or pb_verify
    if own is not None and own.window is not None:
        window = own.window
    elif a["verify_window"] is not None:
        window = a["verify_window"]
    elif pb_verify is not None and pb_verify.window is not None:
        window = pb_verify.window
    else:
        window = r["verify_window"]
    return Action(name=a["name"], backend=a["backend"], operation=a["operation"],
                  params=dict(a["params"]),
                  timeout=a["timeout"] if a["timeout"] is not None else r["action_timeout"],
                  verify_window=window, verify=v)


def _playbook(pb: dict, r: dict, source: str) -> Playbook:
    rx = {k: re.compile(v[1:]) for k, v in pb["match"].items() if v.startswith("~")}
    pv = _verify(pb["verify"])
    return Playbook(
        name=pb["name"], match=dict(pb["match"]), target=pb["target"],
        actions=tuple(_action(a, r, pv) for a in pb["actions"]),
        on_resolved=tuple(_action(a, r) for a in pb["on_resolved"]),
        verify=pv, skip_if=pb["skip_if"], restore_after=pb["restore_after"],
        restore_timeout=pb["restore_timeout"],
        cooldown=pb["cooldown"] if pb["cooldown"] is not None else r["cooldown"],
        max_attempts=pb["max_attempts"] if pb["max_attempts"] is not None else r["max_attempts"],
        attempt_window=pb["attempt_window"] if pb["attempt_window"] is not None else r["attempt_window"],
        dry_run=bool(pb["dry_run"]) if pb["dry_run"] is not None else False,
        description=pb["description"], source=source, _regex=rx, schedule=pb.get("schedule"))


def load_playbooks(cfg: dict) -> list[Playbook]:
    """Every enabled playbook for this config, shipped demo ones first."""
    r = cfg["remediation"]
    found: list[tuple[dict, str]] = []
    # the demo playbooks need the resolved runtime (`opsstack up` fills demo.ports)
    if r["demo_playbooks"] and cfg.get("demo", {}).get("enabled") and cfg["demo"].get("ports"):
        found += [(pb, "demo") for pb in parse_file(DEMO_FILE)]
    for f in r["playbook_files"]:
        found += [(pb, str(f)) for pb in parse_file(f)]
    found += [(pb, "config") for pb in r["playbooks"]]
    seen: dict[str, str] = {}
    out = []
    for pb, src in found:
        if pb["name"] in seen:
            raise ConfigError("remediation.playbooks", f"playbook {pb['name']!r} defined twice "
                              f"({seen[pb['name']]} and {src})")
        seen[pb["name"]] = src
        if pb["enabled"]:
            out.append(_playbook(pb, r, src))
    return out


def find(playbooks: list[Playbook], labels: dict) -> Playbook | None:
    """The first playbook whose match selects these labels."""
    for pb in playbooks:
        if pb.matches(labels):
            return pb
    return None


# ---------------------------------------------------------------- what a label may be
# Placeholders the runner computes from the config (never taken from an alert's labels).
COMPUTED = frozenset({"all_regions", "healthy_regions", "admin_url", "admin_urls", "services", "run_dir",
                      "host", "target"})
# A label value that reaches a target, a command, a path, a URL, a body or a PromQL guard: a plain
# name (letters, digits, '-', '_', '.', ':', '@', '+', '='), no '/', no '..', no spaces, no quotes,
# no shell or control characters.
SAFE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,199}")


def placeholders(value: Any) -> set[str]:
    """Names of the placeholders used anywhere in value (strings inside dicts and lists)."""
    if isinstance(value, str):
        return {m.group(1) for m in _PH.finditer(value) if m.group(1)}
    if isinstance(value, (list, tuple)):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    return set()


def referenced_labels(pb: Playbook) -> set[str]:
    """The alert labels a playbook puts into its target, guards, action params and verify queries."""
    used = placeholders([pb.target, pb.verify.query if pb.verify else "", pb.skip_if or "", pb.restore_after or "",
                         (pb.schedule or {}).get("deadline") or "", (pb.schedule or {}).get("traffic") or ""])
    for a in (*pb.actions, *pb.on_resolved):
        used |= placeholders(a.params) | placeholders(a.verify.query if a.verify else "")
    return used - COMPUTED


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_label(cfg: dict, name: str, value: Any) -> str | None:
    """Why this label value may not reach a playbook's target, command, path or URL (None: it may).

    ``service`` must be a service of ``platform.services`` and ``region`` one of ``platform.regions``;
    any other label must be a plain name (SAFE_VALUE)."""
    platform = cfg.get("platform") or {}
    if name == "service":
        known = [s["name"] for s in platform.get("services", [])]
        if value not in known:
            return f"service {_show(value)} is not a service of the platform (known: {', '.join(known)})"
        return None
    if name == "region":
        known = list(platform.get("regions", []))
        if value not in known:
            return f"region {_show(value)} is not a region of the platform (known: {', '.join(known)})"
        return None
    if not isinstance(value, str) or not SAFE_VALUE.fullmatch(value) or ".." in value:
        return (f"label {name}={_show(value)} is not a plain name (letters, digits, - _ . : @ + = only; "
                f"no '/', '..', spaces or shell characters)")
    return None


def check_target(cfg: dict, pb: Playbook, labels: dict) -> str | None:
    """None when every label the playbook uses is one it may act on; else why it refuses."""
    for name in sorted(referenced_labels(pb)):
        if name in labels:
            problem = check_label(cfg, name, labels[name])
            if problem:
                return problem
    return None


def context(cfg: dict, labels: dict, extra: dict | None = None) -> dict[str, Any]:
    """Values placeholders can use: the alert's labels plus platform facts.

    A label named like a computed value (admin_url, run_dir, ...) is dropped: those come from
    the config only."""
    ctx: dict[str, Any] = {k: v for k, v in labels.items() if k not in COMPUTED}
    regions = list(cfg.get("platform", {}).get("regions", []))
    ctx["all_regions"] = regions
    if labels.get("region") in regions:
        ctx["healthy_regions"] = [r for r in regions if r != labels["region"]]
    else:
        ctx["healthy_regions"] = regions
    host = cfg["stack"]["host"]
    ports = (cfg.get("demo") or {}).get("ports") or {}
    svc = labels.get("service")
    if svc and isinstance(ports.get(svc), dict) and "admin" in ports[svc]:
        ctx["admin_url"] = f"http://{host}:{ports[svc]['admin']}"
    ctx["admin_urls"] = [f"http://{host}:{d['admin']}" for _, d in sorted(ports.items())
                         if isinstance(d, dict) and "admin" in d]
    ctx["services"] = [s["name"] for s in cfg.get("platform", {}).get("services", [])]
    ctx["run_dir"] = str(Path(cfg["stack"]["run_dir"]).resolve())
    ctx["host"] = host
    if extra:
        ctx.update(extra)
    return ctx
