"""Automation workflow alerts on the automation exporter's gauges (exporters/automation, docs/automation.md).

The exporter reads Airflow's REST API and the event-request API at scrape time and exports gauges
computed over its window (``exporters.automation.window``, 24h): runs by state, the error ratio,
the oldest running run per DAG, the pending approvals per tier, the automation rate. Thresholds
are ``alerts.automation``; the Automation board (dashboards/automation.py) draws the same values.

- WorkflowErrorRateHigh: failed / finished runs of all DAGs above ``error_ratio`` (0.5%), judged
  only with at least ``min_runs`` finished runs in the window (one failure out of 3 runs is not a
  page).
- WorkflowStuck: the oldest running run of a DAG older than its SLA (``workflow_sla``, or the DAG's
  own in ``workflow_sla_by_dag``: a DAG that waits for approvals runs as long as they take), or the
  oldest pending approval of a tier older than that tier's ``approval_sla`` (label ``kind`` run |
  approval; the approval tier is ``approval_tier``: the ``tier`` label is the escalation tier).
- AirflowSchedulerDown: the scheduler or the dag-processor reports unhealthy, or the exporter cannot
  read the Airflow API (``opsstack_automation_up{source="airflow"} == 0``); with the exporter enabled,
  also when its series are absent (the exporter is not scraped). Label ``component``.
  (The exporter runs with ``exporters.automation.enabled`` or when the demo runs Airflow.)
- AutomationRateLow (warning): the share of incidents / event requests done without a person
  below ``rate_target`` (80%), per ``kind``.

The rules are inert without the exporter's series (e.g. the docker stack, which does not run it),
so the group is always rendered; only the absence check needs the exporter to be enabled.
All rules carry ``service="automation"``: AirflowSchedulerDown (critical) inhibits the warnings
it causes (Alertmanager: equal service).
"""
from __future__ import annotations

from alert_rules.common import alert, fmt, group
from core.config import format_duration, parse_duration

SERVICE = "automation"
UP = 'opsstack_automation_up{source="airflow"}'
APPROVAL_TIERS = ("auto", "manager", "executive")


def exporter_enabled(cfg: dict) -> bool:
    """Whether the stack runs the automation exporter: exporters.automation.enabled, or the demo
    runs Airflow (demo.airflow: true, or a mapping with enabled: true)."""
    if (cfg["exporters"].get("automation") or {}).get("enabled") is True:
        return True
    demo = cfg.get("demo") or {}
    airflow = demo.get("airflow")
    if isinstance(airflow, dict):
        airflow = airflow.get("enabled")
    return demo.get("enabled") is not False and airflow is True


def window(cfg: dict) -> str:
    w = (cfg["exporters"].get("automation") or {}).get("window")
    return format_duration(w) if isinstance(w, (int, float)) else "window"


def dag_slas(cfg: dict) -> dict[str, float]:
    """dag_id -> SLA seconds of the DAGs with their own (alerts.automation.workflow_sla_by_dag)."""
    return {dag: parse_duration(v) for dag, v in sorted(cfg["alerts"]["automation"]["workflow_sla_by_dag"].items())}


def stuck_run_expr(cfg: dict) -> str:
    a = cfg["alerts"]["automation"]
    own = dag_slas(cfg)
    metric = "opsstack_automation_oldest_running_seconds"
    # dag ids are checked by the schema ([A-Za-z0-9_.-]): safe inside a quoted matcher
    others = ",".join(f'dag_id!="{d}"' for d in own)
    parts = [f"{metric}{{{others}}} > {fmt(a['workflow_sla'])}" if others
             else f"{metric} > {fmt(a['workflow_sla'])}"]
    parts += [f'{metric}{{dag_id="{d}"}} > {fmt(s)}' for d, s in own.items()]
    return "\nor ".join(parts)


def stuck_approval_expr(cfg: dict) -> str:
    sla = cfg["alerts"]["automation"]["approval_sla"]
    # the series' `tier` (auto|manager|executive) is kept as approval_tier: the rule's `tier`
    # label is the escalation tier and replaces it
    parts = [f'opsstack_automation_approval_oldest_seconds{{tier="{t}"}} > {fmt(sla[t])}' for t in APPROVAL_TIERS]
    return 'label_replace(\n  ' + "\n  or ".join(parts) + '\n, "approval_tier", "$1", "tier", "(.*)")'


def scheduler_expr() -> str:
    return ("(\n"
            '  label_replace(min(opsstack_automation_scheduler_healthy) == 0, "component", "scheduler", "", "")\n'
            '  or label_replace(min(opsstack_automation_dag_processor_healthy) == 0, '
            '"component", "dag-processor", "", "")\n'
            f") and on () max({UP}) == 1\n"
            f'or label_replace(max({UP}) == 0, "component", "api", "", "")')


def groups(cfg: dict) -> list[dict]:
    a = cfg["alerts"]["automation"]
    team = cfg["alerts"]["team"]
    win = window(cfg)
    own = ", ".join(f"{d} {format_duration(s)}" for d, s in dag_slas(cfg).items())
    approval = ", ".join(f"{t} {format_duration(a['approval_sla'][t])}" for t in APPROVAL_TIERS)

    def al(name, expr, **kw):
        return alert(cfg, name, expr, service=SERVICE, team=team, **kw)

    rules = [
        al("WorkflowErrorRateHigh",
           f"max(opsstack_automation_error_ratio) > {fmt(a['error_ratio'])}\n"
           f'and on () sum(opsstack_automation_dag_runs{{state=~"success|failed"}}) >= {a["min_runs"]}',
           severity="critical", tier=2, for_seconds=a["error_for"],
           summary="Too many automation workflow runs fail.",
           description="{{ $value | humanizePercentage }} of the finished workflow runs of the last "
                       f"{win} failed (target at most {a['error_ratio']:.1%}, judged from at least "
                       f"{a['min_runs']} finished runs); the Automation board names the DAG and task."),
        al("WorkflowStuck", stuck_run_expr(cfg),
           severity="warning", tier=2, for_seconds=a["stuck_for"], labels={"kind": "run"},
           summary="An automation workflow run has been running longer than its SLA.",
           description="The oldest running run of DAG {{ $labels.dag_id }} started {{ $value | humanizeDuration }} "
                       f"ago (SLA {format_duration(a['workflow_sla'])}" + (f"; {own}" if own else "") + ")."),
        al("WorkflowStuck", stuck_approval_expr(cfg),
           severity="warning", tier=2, for_seconds=a["stuck_for"], labels={"kind": "approval"},
           summary="An automation workflow run has been running longer than its SLA.",
           description="The oldest pending {{ $labels.approval_tier }} approval of an event request has waited "
                       f"{{{{ $value | humanizeDuration }}}} (SLA per tier: {approval})."),
        al("AirflowSchedulerDown", scheduler_expr(),
           severity="critical", tier=2, for_seconds=a["scheduler_for"],
           summary="Airflow does not schedule the automation workflows.",
           description="Airflow's {{ $labels.component }} is down: the scheduler or dag-processor reports "
                       "unhealthy, or (component api) the automation exporter cannot read the Airflow API "
                       "(value {{ $value }}); no workflow run starts or moves on."),
        al("AutomationRateLow", f"min by (kind) (opsstack_automation_rate) < {fmt(a['rate_target'])}",
           severity="warning", tier=3, for_seconds=a["rate_for"],
           summary="Too little of the work is done without a person.",
           description="Only {{ $value | humanizePercentage }} of the {{ $labels.kind }} of the last "
                       f"{win} were done without a person (target {a['rate_target']:.0%})."),
    ]
    if exporter_enabled(cfg):
        rules.append(al(
            "AirflowSchedulerDown", f"absent({UP})",
            severity="critical", tier=2,
            for_seconds=max(a["scheduler_for"], 4 * cfg["stack"]["scrape_interval"]),
            labels={"component": "exporter"},
            summary="Airflow does not schedule the automation workflows.",
            description="No opsstack_automation_up series (value {{ $value }}): the automation exporter is "
                        "enabled but Prometheus does not get its metrics, so Airflow is not watched."))
    return [group("opsstack-automation", rules)]
