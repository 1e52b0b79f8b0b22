"""Helpers shared by the rule domain modules: one way to write an alert or a recording rule.

``alert()`` puts the labels and annotations every alert must have (docs/development.md, Conventions) in one
order: labels severity, tier, service, team; annotations summary, description, runbook_url.
``selector()`` joins PromQL label matchers (config selectors + extra ones) into ``{...}``.
``team_scopes()`` splits per-service rules by owning team so the `team` label is right even
when services belong to different teams.
"""
from __future__ import annotations

import re

from core.config import format_duration

SEVERITIES = ("critical", "warning", "info")
TIERS = ("1", "2", "3")
NAME_RE = re.compile(r"^[A-Z][a-zA-Z0-9]*$")
MAX_NAME = 40
MAX_GROUP_RULES = 20


def selector(*matchers: str) -> str:
    """'{a="b",c=~"d"}' from matcher strings; empty parts are dropped; '' when none."""
    parts = [m.strip().strip(",") for m in matchers if m and m.strip()]
    return "{" + ",".join(parts) + "}" if parts else ""


# where docker compose publishes the receiver: the committed rule files (rendered while the
# receiver port is still 'auto') are the ones the compose stack mounts
COMPOSE_RECEIVER_URL = "http://127.0.0.1:9095"


def runbook_base(cfg: dict) -> str:
    """alerts.runbook_base_url, else the receiver's own /runbooks (webhook_receiver/runbooks.py)."""
    base = cfg["alerts"]["runbook_base_url"]
    if base:
        return base.rstrip("/")
    st = cfg["stack"]
    port = st["ports"]["receiver"]
    if not isinstance(port, int):
        return f"{COMPOSE_RECEIVER_URL}/runbooks"
    host = st["host"] if st["host"] not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/runbooks"


def runbook_url(cfg: dict, name: str) -> str:
    return f"{runbook_base(cfg)}/{name}.md"


def alert(cfg: dict, name: str, expr: str, *, severity: str, tier: int | str, service: str,
          team: str, summary: str, description: str, for_seconds: float | None = None,
          labels: dict | None = None) -> dict:
    """One alerting rule. ``for_seconds`` None or 0 = fires at once (no `for:`)."""
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise ValueError(f"alert name {name!r} must be CamelCase and <= {MAX_NAME} characters")
    if severity not in SEVERITIES:
        raise ValueError(f"{name}: severity must be one of {SEVERITIES}")
    if str(tier) not in TIERS:
        raise ValueError(f"{name}: tier must be one of {TIERS}")
    if not (summary[:1].isupper() and summary.endswith(".")) or "{{" in summary:
        raise ValueError(f"{name}: summary must be a static sentence with a capital and a period")
    rule: dict = {"alert": name, "expr": expr}
    if for_seconds:
        rule["for"] = format_duration(for_seconds)
    rule["labels"] = {"severity": severity, "tier": str(tier), "service": service, "team": team,
                      **(labels or {})}
    rule["annotations"] = {"summary": summary, "description": description,
                           "runbook_url": runbook_url(cfg, name)}
    return rule


def record(name: str, expr: str, labels: dict | None = None) -> dict:
    rule = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def group(name: str, rules: list[dict], interval: str | None = None) -> dict:
    if len(rules) > MAX_GROUP_RULES:
        raise ValueError(f"group {name} has {len(rules)} rules (max {MAX_GROUP_RULES}); split it")
    g: dict = {"name": name}
    if interval:
        g["interval"] = interval
    g["rules"] = rules
    return g


def team_scopes(cfg: dict) -> list[tuple[str, str]]:
    """[(team, service matcher)] covering every configured service.

    One team (the default): [(team, "")] — the rule needs no service selector, so it also
    covers services that show up in metrics without being in the config.
    """
    by_team: dict[str, list[str]] = {}
    for s in cfg["platform"]["services"]:
        by_team.setdefault(s["team"], []).append(s["name"])
    if len(by_team) == 1:
        return [(next(iter(by_team)), "")]
    # service names are slugs (platform schema): no regex metacharacters to escape
    return [(team, 'service=~"' + "|".join(names) + '"')
            for team, names in sorted(by_team.items())]


def fmt(x: float) -> str:
    """A number for PromQL: no trailing zeros, no exponent for the ranges we use."""
    s = f"{x:.10f}".rstrip("0").rstrip(".")
    return s or "0"
