"""Playbooks: loading (config, shipped demo file, extra YAML files), validation, matching."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stack.config import ConfigError, ListOf, validate
from stack.schema import remediation as schema

DEMO_FILE = Path(__file__).parent / "playbooks" / "demo.yaml"


@dataclass(frozen=True)
class Action:
    name: str
    backend: str
    operation: str
    params: dict
    timeout: float
    verify_window: float
    verify: str | None


@dataclass(frozen=True)
class Playbook:
    name: str
    match: dict
    target: str
    actions: tuple[Action, ...]
    on_resolved: tuple[Action, ...] = ()
    verify: str | None = None
    skip_if: str | None = None
    restore_after: str | None = None
    restore_timeout: float = 1800.0
    cooldown: float = 600.0
    max_attempts: int = 3
    attempt_window: float = 3600.0
    dry_run: bool = False
    description: str | None = None
    source: str = "config"
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


def _action(a: dict, r: dict) -> Action:
    return Action(name=a["name"], backend=a["backend"], operation=a["operation"],
                  params=dict(a["params"]),
                  timeout=a["timeout"] if a["timeout"] is not None else r["action_timeout"],
                  verify_window=a["verify_window"] if a["verify_window"] is not None else r["verify_window"],
                  verify=a["verify"])


def _playbook(pb: dict, r: dict, source: str) -> Playbook:
    rx = {k: re.compile(v[1:]) for k, v in pb["match"].items() if v.startswith("~")}
    return Playbook(
        name=pb["name"], match=dict(pb["match"]), target=pb["target"],
        actions=tuple(_action(a, r) for a in pb["actions"]),
        on_resolved=tuple(_action(a, r) for a in pb["on_resolved"]),
        verify=pb["verify"], skip_if=pb["skip_if"], restore_after=pb["restore_after"],
        restore_timeout=pb["restore_timeout"],
        cooldown=pb["cooldown"] if pb["cooldown"] is not None else r["cooldown"],
        max_attempts=pb["max_attempts"] if pb["max_attempts"] is not None else r["max_attempts"],
        attempt_window=pb["attempt_window"] if pb["attempt_window"] is not None else r["attempt_window"],
        dry_run=bool(pb["dry_run"]) if pb["dry_run"] is not None else False,
        description=pb["description"], source=source, _regex=rx)


def parse_file(path: str | Path) -> list[dict]:
    """Validate a playbook YAML file (a list, or a mapping with key `playbooks`)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", "file not found", str(p)) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {str(exc).splitlines()[0]}", str(p)) from None
    if isinstance(data, dict) and set(data) == {"playbooks"}:
        data = data["playbooks"]
    if not isinstance(data, list):
        raise ConfigError("playbooks", "expected a list of playbooks", str(p))
    try:
        out = validate(ListOf(schema.PLAYBOOK, unique_key="name"), data, "playbooks")
        for i, pb in enumerate(out):
            schema.check_playbook(pb, f"playbooks[{i}]")
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.problem, str(p)) from None
    return out


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


def context(cfg: dict, labels: dict, extra: dict | None = None) -> dict[str, Any]:
    """Values placeholders can use: the alert's labels plus platform facts."""
    ctx: dict[str, Any] = dict(labels)
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
