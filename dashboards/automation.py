"""Automation: the automation workflows on Apache Airflow and the event-creation pipeline (issue 13,
scenario 2.1; the automation exporter, docs/automation.md "Board and alerts").

Rows: at a glance (the seed's first screen: workflows in operation, automation rate against its
target, error rate against 0.5%, hours saved, speed against manual, average processing time against
15 min), workflows (per-DAG success ratio, duration and queued p50/p95, runs by state, the oldest
running run against its SLA, task failures), approvals (pending and oldest per tier against the
tier's SLA), response and automation rate (alert to first action against 5 min), Airflow health
(scheduler, dag-processor, the API, the automation alerts). Variables: datasource, dag.

Every series is a gauge the exporter computes at scrape time over its window
(``exporters.automation.window``, 24h): no rate() on them. Thresholds are the keys
alert_rules/automation.py uses (``alerts.automation``; the response target ``alerts.kpi.response``),
so a panel turns red where its alert fires.
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import stat, table
from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueGraphMode

from core.config import format_duration, parse_duration
from dashboards.common import bars as _bars, lines as _lines
from dashboards.common import (
    GREEN,
    RED,
    YELLOW,
    alert_list_panel,
    label_variable,
    new_dashboard,
    panel,
    prom,
    reduce_last,
    steps,
    to_model,
    up_down_mappings, with_rows)

UID = "opsstack-automation"
TITLE = "Automation"

# the event-request API's approval tiers (docs/automation.md; alert_rules/automation.py APPROVAL_TIERS)
APPROVAL_TIERS = ("auto", "manager", "executive")
D = 'dag_id=~"$dag"'
M = "opsstack_automation"


def _stat(graph: bool = False) -> stat.Panel:
    return (stat.Panel().reduce_options(reduce_last()).color_mode(BigValueColorMode.BACKGROUND)
            .graph_mode(BigValueGraphMode.AREA if graph else BigValueGraphMode.NONE))


def fmt(x: float) -> str:
    return f"{x:.10f}".rstrip("0").rstrip(".") or "0"


def _window(cfg: dict) -> str:
    w = (cfg["exporters"].get("automation") or {}).get("window")
    return format_duration(w) if isinstance(w, (int, float)) else "24h"


def dag_slas(cfg: dict) -> dict[str, float]:
    """dag_id -> SLA seconds of the DAGs with their own (alerts.automation.workflow_sla_by_dag)."""
    return {d: parse_duration(v) for d, v in sorted(cfg["alerts"]["automation"]["workflow_sla_by_dag"].items())}


def run_age_share_expr(cfg: dict) -> str:
    """Age of each DAG's oldest running run over its SLA (WorkflowStuck fires above 1)."""
    a = cfg["alerts"]["automation"]
    own = dag_slas(cfg)
    metric = f"{M}_oldest_running_seconds"
    others = ",".join([D] + [f'dag_id!="{d}"' for d in own])
    parts = [f"{metric}{{{others}}} / {fmt(a['workflow_sla'])}"]
    parts += [f'{metric}{{{D},dag_id="{d}"}} / {fmt(s)}' for d, s in own.items()]
    return "\nor ".join(parts)


def approval_age_share_expr(cfg: dict) -> str:
    """Age of each tier's oldest pending approval over that tier's SLA."""
    sla = cfg["alerts"]["automation"]["approval_sla"]
    return "\nor ".join(f'{M}_approval_oldest_seconds{{tier="{t}"}} / {fmt(sla[t])}' for t in APPROVAL_TIERS)


def glance(cfg: dict) -> list:
    a = cfg["alerts"]["automation"]
    win = _window(cfg)
    err, target, proc = a["error_ratio"], a["rate_target"], a["processing_target"]
    return [
        panel(_stat(), "Workflows in operation",
              f"Automated workflows in operation: the DAGs Airflow has active, not paused "
              f"({M}_workflows_in_operation).", "none",
              [prom(f"max({M}_workflows_in_operation)", "workflows", instant=True)],
              thresholds=steps([(None, YELLOW), (1, GREEN)]), w=4, h=5),
        panel(_stat(), f"Automation rate (target ≥ {target:.0%})",
              "Share of the work done without a person over the window: incidents closed by automatic "
              "remediation and event requests completed without a manual step "
              f"({M}_rate{{kind}}). Red below the target (alerts.automation.rate_target); AutomationRateLow "
              f"fires after {format_duration(a['rate_for'])}.", "percentunit",
              [prom(f"min by (kind) ({M}_rate)", "{{kind}}", instant=True)],
              thresholds=steps([(None, RED), (target, GREEN)]), min_value=0, max_value=1, w=4, h=5),
        panel(_stat(), f"Error rate (target ≤ {err:.1%})",
              f"Failed / finished workflow runs of all DAGs over the last {win} ({M}_error_ratio). "
              f"WorkflowErrorRateHigh fires above {err:.1%} (alerts.automation.error_ratio) once the window "
              f"holds at least {a['min_runs']} finished runs.", "percentunit",
              [prom(f"max({M}_error_ratio)", "error rate", instant=True)],
              thresholds=steps([(None, GREEN), (err, RED)]), min_value=0, decimals=2, w=4, h=5),
        panel(_stat(), "Hours saved",
              f"Manual minutes of each workflow x its successful runs over the last {win}, in hours, all DAGs "
              f"({M}_time_saved_seconds / 3600).", "h",
              [prom(f"sum({M}_time_saved_seconds) / 3600", "hours saved", instant=True)],
              thresholds=steps([(None, GREEN)]), decimals=1, w=4, h=5),
        panel(_stat(), "Speed against manual",
              f"Manual minutes of a workflow over its mean run time ({M}_speedup_ratio): 24x = a 6 h manual "
              "job done in 15 min.", "suffix:x",
              [prom(f"{M}_speedup_ratio{{{D}}}", "{{dag_id}}", instant=True)],
              thresholds=steps([(None, RED), (1, YELLOW), (2, GREEN)]), decimals=1, w=4, h=5),
        panel(_stat(), f"Average processing time (target ≤ {format_duration(proc)})",
              f"Mean duration of the successful workflow runs of the last {win} ({M}_processing_seconds_avg) "
              "against the target (alerts.automation.processing_target; manual: hours).", "s",
              [prom(f"max({M}_processing_seconds_avg)", "mean run", instant=True)],
              thresholds=steps([(None, GREEN), (proc, RED)]), min_value=0, w=4, h=5),
    ]


def workflows(cfg: dict) -> list:
    a = cfg["alerts"]["automation"]
    win = _window(cfg)
    err, proc = a["error_ratio"], a["processing_target"]
    own = ", ".join(f"{d} {format_duration(s)}" for d, s in dag_slas(cfg).items())
    return [
        panel(_bars(), "Run success ratio per DAG",
              f"Successful / finished runs of each DAG over the last {win} ({M}_dag_run_success_ratio). "
              f"Red below {1 - err:.1%} (1 - alerts.automation.error_ratio).", "percentunit",
              [prom(f"{M}_dag_run_success_ratio{{{D}}}", "{{dag_id}}", instant=True)],
              thresholds=steps([(None, RED), (1 - err, GREEN)]), min_value=0, max_value=1, w=8, h=8),
        panel(_lines(), "Run duration p50 / p95 per DAG",
              f"Duration of the finished runs of each DAG over the last {win} "
              f"({M}_dag_run_duration_seconds, quantile 0.5 and 0.95). Dashed: the "
              f"{format_duration(proc)} processing target.", "s",
              [prom(f'{M}_dag_run_duration_seconds{{{D},quantile="0.5"}}', "{{dag_id}} p50"),
               prom(f'{M}_dag_run_duration_seconds{{{D},quantile="0.95"}}', "{{dag_id}} p95")],
              thresholds=steps([(None, GREEN), (proc, RED)]), min_value=0, w=8, h=8),
        panel(_lines(), "Queued time p50 / p95 per DAG",
              "Time from a run being queued to its start, per DAG over the window "
              f"({M}_dag_run_queued_seconds): growing with a healthy scheduler means the executor's slots "
              "(parallelism) are full.", "s",
              [prom(f'{M}_dag_run_queued_seconds{{{D},quantile="0.5"}}', "{{dag_id}} p50"),
               prom(f'{M}_dag_run_queued_seconds{{{D},quantile="0.95"}}', "{{dag_id}} p95")],
              min_value=0, w=8, h=8),
        panel(_lines(), "Runs by state",
              f"Runs of the selected DAGs in the last {win} per state ({M}_dag_runs{{state}}).", "none",
              [prom(f"sum by (state) ({M}_dag_runs{{{D}}})", "{{state}}")], min_value=0, w=8, h=8),
        panel(_bars(), "Oldest running run vs its SLA",
              f"Age of each DAG's oldest running run ({M}_oldest_running_seconds) over its SLA "
              f"(alerts.automation.workflow_sla {format_duration(a['workflow_sla'])}"
              + (f"; own: {own}" if own else "") +
              f"). Above 100% for {format_duration(a['stuck_for'])} fires WorkflowStuck.", "percentunit",
              [prom(run_age_share_expr(cfg), "{{dag_id}}", instant=True)],
              thresholds=steps([(None, GREEN), (0.8, YELLOW), (1, RED)]), min_value=0, w=8, h=8)
        .no_value("no run running"),
        panel(table.Panel(), "Task failures",
              f"Failed task instances per DAG and task over the last {win} ({M}_task_failures), most first; "
              "the task's log in Airflow says why.", "none",
              [prom(f"sort_desc({M}_task_failures{{{D}}} > 0)", instant=True, table=True)], w=8, h=8)
        .no_value("no failed task in the window"),
    ]


def approvals(cfg: dict) -> list:
    sla = cfg["alerts"]["automation"]["approval_sla"]
    per_tier = ", ".join(f"{t} {format_duration(sla[t])}" for t in APPROVAL_TIERS)
    return [
        panel(_bars(), "Pending approvals by tier",
              f"Event requests waiting for a decision per approval tier ({M}_approvals_pending): manager for "
              "101-500 attendees, executive above 500; auto (up to 100) approves at once.", "none",
              [prom(f"sum by (tier) ({M}_approvals_pending)", "{{tier}}", instant=True)],
              thresholds=steps([(None, GREEN), (1, YELLOW)]), min_value=0, w=8, h=8),
        panel(_bars(), "Oldest pending approval vs its tier's SLA",
              f"Wait of each tier's oldest pending approval ({M}_approval_oldest_seconds) over the tier's SLA "
              f"(alerts.automation.approval_sla: {per_tier}). Above 100% fires WorkflowStuck (kind approval).",
              "percentunit", [prom(approval_age_share_expr(cfg), "{{tier}}", instant=True)],
              thresholds=steps([(None, GREEN), (0.8, YELLOW), (1, RED)]), min_value=0, w=8, h=8)
        .no_value("no approval pending"),
        panel(_lines(), "Approval queue",
              f"Pending approvals per tier over time ({M}_approvals_pending).", "none",
              [prom(f"sum by (tier) ({M}_approvals_pending)", "{{tier}}")], min_value=0, w=8, h=8),
    ]


def response(cfg: dict) -> list:
    a = cfg["alerts"]["automation"]
    resp, target = cfg["alerts"]["kpi"]["response"], a["rate_target"]
    return [
        panel(_lines(), f"Alert to first action (target < {format_duration(resp)})",
              f"Time from an alert to the first action on it, automatic or a person's ({M}_response_seconds by "
              f"quantile, over the window). Dashed: the {format_duration(resp)} target (alerts.kpi.response).",
              "s", [prom(f"{M}_response_seconds", "{{quantile}}")],
              thresholds=steps([(None, GREEN), (resp, RED)]), min_value=0, w=12, h=8),
        panel(_lines(), "Automation rate vs target",
              f"Share of incidents and of event requests done without a person ({M}_rate by kind). Dashed: the "
              f"{target:.0%} target (alerts.automation.rate_target).", "percentunit",
              [prom(f"min by (kind) ({M}_rate)", "{{kind}}")],
              thresholds=steps([(None, RED), (target, GREEN)]), min_value=0, max_value=1, w=12, h=8),
    ]


def health(cfg: dict) -> list:
    a = cfg["alerts"]["automation"]
    return [
        panel(_stat(), "Airflow components",
              "Scheduler and dag-processor health as Airflow reports it "
              f"({M}_scheduler_healthy, {M}_dag_processor_healthy) and the exporter's last read of the Airflow "
              f'API ({M}_up{{source="airflow"}}). DOWN for {format_duration(a["scheduler_for"])} fires '
              "AirflowSchedulerDown.", "none",
              [prom(f"min({M}_scheduler_healthy)", "scheduler", instant=True),
               prom(f"min({M}_dag_processor_healthy)", "dag-processor", instant=True),
               prom(f'max({M}_up{{source="airflow"}})', "Airflow API", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=8, h=6).mappings(up_down_mappings()),
        panel(_lines(), "Heartbeat age",
              "Seconds since the scheduler's and the dag-processor's last heartbeat "
              f"({M}_scheduler_heartbeat_age_seconds, {M}_dag_processor_heartbeat_age_seconds).", "s",
              [prom(f"max({M}_scheduler_heartbeat_age_seconds)", "scheduler"),
               prom(f"max({M}_dag_processor_heartbeat_age_seconds)", "dag-processor")],
              min_value=0, w=8, h=6),
        panel(_stat(), "DAGs",
              f"DAGs Airflow knows, active and paused ({M}_dags).", "none",
              [prom(f"sum by (state) ({M}_dags)", "{{state}}", instant=True)],
              thresholds=steps([(None, GREEN)]), w=4, h=6),
        panel(_lines(), "Exporter scrape time",
              f"Time the automation exporter took to read Airflow and the event-request API "
              f"({M}_scrape_duration_seconds).", "s",
              [prom(f"max({M}_scrape_duration_seconds)", "scrape")], min_value=0, w=4, h=6),
        alert_list_panel("Automation alerts",
                         "Firing and pending automation alerts (WorkflowErrorRateHigh, WorkflowStuck, "
                         "AirflowSchedulerDown, AutomationRateLow; alert_rules/automation.yml).",
                         label_filter='{service="automation"}', w=24, h=8),
    ]


ROWS = [
    ("At a glance", glance),
    ("Workflows", workflows),
    ("Approvals", approvals),
    ("Response and automation rate", response),
    ("Airflow health", health),
]


def build(cfg: dict) -> dict:
    d = new_dashboard(
        UID, TITLE,
        description="Automation workflows on Apache Airflow: workflows in operation, automation rate, error rate, "
                    "hours saved, speed against manual, processing time, per-DAG runs, approvals by tier, "
                    "alert-to-action time and Airflow's health.",
        tags=["automation", "airflow"], time_from="now-24h", refresh="1m",
        variables=[label_variable("dag", f"{M}_dag_runs", "dag_id", title="DAG")])
    return to_model(with_rows(d, ROWS, cfg))
