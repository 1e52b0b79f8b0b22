"""Log alerts: Loki ruler rules in LogQL (docs/logs.md), not Prometheus rules.

Not in build.DOMAINS (promtool cannot read LogQL): the launcher writes them into the Loki
ruler's folder (stack/loki_config.py) and the committed rendering for docker compose is
provisioning/loki/rules/fake/logs.yml (`render_committed`). The ruler sends to the stack's
Alertmanager, so they take the same routes and escalation as the metric alerts.

- LogErrorSurge: a service logs many more error lines in 5m than its own mean 5m over the
  hour before (and at least `logs.alerts.error_surge_min_lines`); a service with no errors
  in the hour before has no baseline, and `unless` keeps the surge.
- LogPanicOrTraceback: a Python traceback, a Go panic or a CRITICAL line in the last 5m.
- LogsAbsent: a component the stack runs sent no line at all for `logs.alerts.silence`;
  the shipper's `logship stats` heartbeat (every minute) counts, so a quiet component is not
  absent, a dead shipper or process is.

Labels: the components' lines carry only service, component, level (and region for the demo's
request errors); `service` is `opsstack` for the stack's own programs.
"""
from __future__ import annotations

from alert_rules.common import alert, fmt, group, team_scopes
from core.config import format_duration

STACK_SERVICE = "opsstack"
ERRORS = 'level=~"error|critical"'
# a Python traceback, a Go panic, a CRITICAL line (LogQL backtick string: no escaping)
PANIC_RX = r"Traceback \(most recent call last\)|panic: |level=CRITICAL"


def _sel(*matchers: str) -> str:
    return "{" + ",".join(m for m in matchers if m) + "}"


def error_surge_expr(cfg: dict, scope: str) -> str:
    a = cfg["logs"]["alerts"]
    sel = _sel(ERRORS, f'service!="{STACK_SERVICE}"', scope)
    now = f"sum by (service) (count_over_time({sel}[5m]))"
    before = f"sum by (service) (count_over_time({sel}[1h] offset 5m))"
    return (f"({now} >= {a['error_surge_min_lines']})\n"
            f"unless\n({before} / 12 * {fmt(a['error_surge_factor'])} >= {now})")


def panic_expr() -> str:
    return f'sum by (service, component) (count_over_time({{component=~".+"}} |~ `{PANIC_RX}` [5m])) > 0'


def absent_expr(cfg: dict, components: list[tuple[str, str]]) -> str:
    """components: [(component, service)] the stack runs."""
    w = format_duration(cfg["logs"]["alerts"]["silence"])
    return "\nor ".join(f'absent_over_time({{component="{c}",service="{s}"}}[{w}])' for c, s in components)


def groups(cfg: dict, components: list[tuple[str, str]]) -> list[dict]:
    a, la = cfg["alerts"], cfg["logs"]["alerts"]
    rules = []
    for team, scope in team_scopes(cfg):
        rules.append(alert(cfg, "LogErrorSurge", error_surge_expr(cfg, scope), for_seconds=60,
                           severity="warning", tier=1, service="{{ $labels.service }}", team=team,
                           summary="A service logs many more errors than it usually does.",
                           description="{{ $labels.service }} logged {{ $value }} error lines in 5m, over "
                                       f"{fmt(la['error_surge_factor'])} times its mean of the hour before "
                                       f"(and at least {la['error_surge_min_lines']})."))
    rules.append(alert(cfg, "LogPanicOrTraceback", panic_expr(), severity="warning", tier=2,
                       service="{{ $labels.service }}", team=a["team"],
                       summary="A component logged a traceback, a panic or a critical error.",
                       description="{{ $labels.component }} ({{ $labels.service }}) logged {{ $value }} "
                                   "traceback, panic or CRITICAL lines in the last 5m."))
    if components:
        rules.append(alert(cfg, "LogsAbsent", absent_expr(cfg, components), severity="warning", tier=2,
                           service="{{ $labels.service }}", team=a["team"],
                           summary="A component sends no logs.",
                           description="No line from {{ $labels.component }} ({{ $labels.service }}) reached "
                                       f"Loki for {format_duration(la['silence'])}, not even the shipper's "
                                       "heartbeat: the process or its log shipping is down."))
    return [group("opsstack-logs", rules)]


def components_of(cfg: dict) -> list[tuple[str, str]]:
    """[(component, service)] whose lines the default stack ships (as the launcher labels them)."""
    out = []
    if cfg["demo"]["enabled"]:
        out += [("demo", s["name"]) for s in cfg["platform"]["services"]]
    for name, on in (("exporter-app", cfg["exporters"]["app"]["enabled"]),
                     ("exporter-db", cfg["exporters"].get("db", {}).get("enabled")),
                     ("forecaster", cfg["forecast"]["enabled"]), ("receiver", True)):
        if on:
            out.append((name, STACK_SERVICE))
    return out
