"""Outcome KPIs missing their targets: uptime, MTTR, MTBF, auto-recovery rate, response time.

The receiver computes the KPIs from its ticket tables over `receiver.kpis.window` and exports
them on its /metrics (webhook_receiver/kpis.py: `opsstack_kpi_*`, job opsstack_receiver); the
targets come from `alerts.kpi`, the same values the receiver exports as `opsstack_kpi_target`
and the incidents dashboard draws. Every receiver replica reports the same figures (they come
from PostgreSQL), so the rules aggregate the replicas away. A KPI with no sample (no ticket in
the window) never fires. Warning, tier 2: a process problem for the team, not a page.
"""
from __future__ import annotations

from alert_rules.common import alert, fmt, group
from core.config import format_duration

KPI = "opsstack_kpi"


def groups(cfg: dict) -> list[dict]:
    a = cfg["alerts"]
    k = a["kpi"]
    team = a["team"]
    window = format_duration(cfg["receiver"]["kpis"]["window"])
    common = {"for_seconds": k["for"], "severity": "warning", "tier": 2, "team": team}
    rules = [
        alert(cfg, "KpiUptimeLow",
              f"min by (service) ({KPI}_uptime_ratio) < {fmt(k['uptime_ratio'])}",
              service="{{ $labels.service }}", **common,
              summary="A service's uptime is below its target.",
              description=f"{{{{ $labels.service }}}} was up {{{{ $value | humanizePercentage }}}} of the last "
                          f"{window} (target {k['uptime_ratio']:.2%}), from its down alerts' episodes."),
        alert(cfg, "KpiMttrHigh",
              f"max({KPI}_mttr_seconds) > {fmt(k['mttr'])}",
              service="opsstack", **common,
              summary="Incidents take longer to resolve than the target.",
              description=f"The mean time to resolve of the last {window} is {{{{ $value | humanizeDuration }}}} "
                          f"(target at most {format_duration(k['mttr'])})."),
        alert(cfg, "KpiMtbfLow",
              f"min by (service) ({KPI}_mtbf_seconds) < {fmt(k['mtbf'])}",
              service="{{ $labels.service }}", **common,
              summary="A service fails more often than the target.",
              description=f"{{{{ $labels.service }}}} had a mean time between failures of "
                          f"{{{{ $value | humanizeDuration }}}} over the last {window} "
                          f"(target at least {format_duration(k['mtbf'])})."),
        alert(cfg, "KpiAutoRecoveryLow",
              f"max({KPI}_auto_recovery_ratio) < {fmt(k['auto_recovery_ratio'])}",
              service="opsstack", **common,
              summary="Too few incidents are closed by automation.",
              description=f"Automation closed {{{{ $value | humanizePercentage }}}} of the incidents resolved in "
                          f"the last {window} (target {k['auto_recovery_ratio']:.0%})."),
        alert(cfg, "KpiResponseSlow",
              f"max({KPI}_response_seconds) > {fmt(k['response'])}",
              service="opsstack", **common,
              summary="Incidents wait longer than the target for a first response.",
              description=f"The mean time to acknowledge or to an automatic action over the last {window} is "
                          f"{{{{ $value | humanizeDuration }}}} (target at most {format_duration(k['response'])})."),
    ]
    return [group("opsstack-kpi", rules)]
