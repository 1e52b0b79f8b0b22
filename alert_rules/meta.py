"""The alerting pipeline watching itself: `Watchdog`.

Watchdog always fires. Alertmanager routes it to the receiver on a short repeat interval;
when the receiver stops hearing it, Prometheus, the rule evaluation or Alertmanager is dead
(a dead-man's switch). Severity `info` (CONVENTIONS allow only critical|warning|info).
"""
from __future__ import annotations

from alert_rules.common import alert, group


def groups(cfg: dict) -> list[dict]:
    a = cfg["alerts"]
    if not a["watchdog"]:
        return []
    return [group("opsstack-meta", [
        alert(cfg, "Watchdog", "vector(1)", severity="info", tier=3, service="opsstack",
              team=a["team"],
              summary="The alerting pipeline is alive.",
              description="This alert always fires so that the receiver can tell that Prometheus "
                          "evaluates rules and Alertmanager delivers notifications; its absence "
                          "means the pipeline is broken (value {{ $value }})."),
    ])]
