"""The monitoring watching itself: `Watchdog` and `ScrapeTargetDown`.

Watchdog always fires. Alertmanager routes it to the receiver on a short repeat interval;
when the receiver stops hearing it, Prometheus, the rule evaluation or Alertmanager is dead
(a dead-man's switch). Severity `info` (docs/development.md allows only critical|warning|info).

ScrapeTargetDown: Prometheus cannot scrape a target (``up == 0``). When the probe exporter or a
service's /metrics is gone, the alerts built on them cannot fire: this one says so.
"""
from __future__ import annotations

from alert_rules.common import alert, group
from core.config import format_duration


TARGET_SERVICE = "{{ with $labels.service }}{{ . }}{{ else }}{{ $labels.job }}{{ end }}"


def groups(cfg: dict) -> list[dict]:
    a = cfg["alerts"]
    rules = [
        alert(cfg, "ScrapeTargetDown", "up == 0", for_seconds=a["service_down_for"],
              severity="warning", tier=1, service=TARGET_SERVICE, team=a["team"],
              summary="Prometheus cannot scrape a target.",
              description="Scraping {{ $labels.instance }} (job {{ $labels.job }}) has failed for more "
                          f"than {format_duration(a['service_down_for'])}: the alerts that use its "
                          "metrics cannot fire while it is down."),
    ]
    if a["watchdog"]:
        rules.insert(0, watchdog(cfg))
    return [group("opsstack-meta", rules)]


def watchdog(cfg: dict) -> dict:
    a = cfg["alerts"]
    return alert(cfg, "Watchdog", "vector(1)", severity="info", tier=3, service="opsstack",
                 team=a["team"],
                 summary="The alerting pipeline is alive.",
                 description="This alert always fires so that the receiver can tell that Prometheus "
                             "evaluates rules and Alertmanager delivers notifications; its absence "
                             "means the pipeline is broken (value {{ $value }}).")
