"""Incidents: the ticket KPIs of the webhook receiver (issue 5) and automatic remediation (issue 6).

Prometheus (the receiver's /metrics, read from the ticket database at scrape time): open
tickets by severity, MTTA / MTTR / MTBF per service, escalations per level, notification
failures, the Watchdog heartbeat. PostgreSQL (the `postgres` datasource, the receiver's
tables): tickets per day and the open tickets with owner and level. Thresholds follow the
escalation policy: MTTA turns red past the level-1 acknowledge timeout, the heartbeat past
receiver.heartbeat_timeout. The "Automatic remediation" row: runs and actions by playbook and
outcome, auto-recovery success rate, time to recover, automation rate (tickets closed without
a person), the kill switch, and the latest runs from the remediation audit tables. The
"Outcome KPIs" row: uptime, MTBF, MTTR, auto-recovery rate and response time over
receiver.kpis.window against their targets (alerts.kpi; webhook_receiver/kpis.py).
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash, stat, table, timeseries
from grafana_foundation_sdk.models.common import (BigValueColorMode, BigValueGraphMode)

from core.config import format_duration
from dashboards.common import bars as _bars, lines as _lines
from dashboards.common import (BLUE, GREEN, ORANGE, POSTGRES, RED, SERVICE, YELLOW, label_variable, new_dashboard,
                               panel, prom, reduce_last, steps, to_model)

UID = "opsstack-incidents"
TITLE = "Incidents"


class _Sql:
    """A PostgreSQL datasource query (the SDK ships no builder for it)."""

    def __init__(self, sql: str, fmt: str = "time_series"):
        self.sql, self.fmt = sql, fmt

    def build(self) -> dict:
        return {"datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid}, "editorMode": "code",
                "format": self.fmt, "rawQuery": True, "rawSql": self.sql}


def _stat() -> stat.Panel:
    return (stat.Panel().reduce_options(reduce_last()).color_mode(BigValueColorMode.BACKGROUND)
            .graph_mode(BigValueGraphMode.NONE))


def _human(seconds: float) -> str:
    return format_duration(seconds)


def now_row(cfg: dict) -> list:
    return [
        panel(_stat(), "Open critical tickets",
              "Critical tickets not yet resolved (opened or acknowledged): opsstack_tickets_open.", "none",
              [prom('sum(opsstack_tickets_open{severity="critical"})', "critical", instant=True)],
              thresholds=steps([(None, GREEN), (1, RED)]), w=6, h=5),
        panel(_stat(), "Open warning tickets",
              "Warning tickets not yet resolved (opened or acknowledged).", "none",
              [prom('sum(opsstack_tickets_open{severity="warning"})', "warning", instant=True)],
              thresholds=steps([(None, GREEN), (1, YELLOW)]), w=6, h=5),
        panel(_stat(), "Unacknowledged",
              "Tickets still escalating: nobody has acknowledged them yet (status open).", "none",
              [prom('sum(opsstack_tickets_open{status="open"})', "open", instant=True)],
              thresholds=steps([(None, GREEN), (1, ORANGE)]), w=6, h=5),
        panel(_stat(), "Alerting pipeline heartbeat age",
              "Seconds since Alertmanager last delivered the Watchdog heartbeat to the receiver. Past "
              f"{_human(cfg['receiver']['heartbeat_timeout'])} (receiver.heartbeat_timeout) the receiver opens an "
              "AlertingPipelineDown ticket.", "s",
              [prom("time() - max(opsstack_receiver_heartbeat_last_seen_timestamp_seconds)", "age", instant=True)],
              thresholds=steps([(None, GREEN), (cfg["receiver"]["heartbeat_timeout"] or 600, RED)]), w=6, h=5),
        panel(_bars(), "Open tickets by severity and status",
              "Unresolved tickets per severity, split into open (escalating) and acknowledged.", "none",
              [prom("sum by (severity, status) (opsstack_tickets_open)", "{{severity}} · {{status}}", instant=True)],
              thresholds=steps([(None, GREEN), (1, ORANGE)]), w=12, h=7),
        panel(table.Panel(), "Open tickets",
              "Every unresolved ticket from the receiver's database: severity, age, owner and escalation level. "
              "Acknowledge, resolve or comment in the incident console (/console on the receiver).", "none",
              [_Sql("SELECT id AS \"ticket\", severity, alertname, service, status, assignee AS owner, level,\n"
                    "       opened_at AS \"opened\", next_escalation_at AS \"next escalation\"\n"
                    "FROM tickets WHERE status <> 'resolved'\n"
                    "ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, opened_at",
                    "table")],
              datasource=POSTGRES, w=12, h=7),
    ]


def kpi_row(cfg: dict) -> list:
    pol = cfg["escalation"]["policies"][0]
    l1 = pol["levels"][0]["ack_timeout"]
    return [
        panel(_bars(), "MTTA by service",
              "Mean time to acknowledge over the last 30 days (opsstack_tickets_mtta_seconds). Red past the "
              f"level-1 acknowledge timeout of the default policy ({_human(l1)}), when level 2 gets paged.", "s",
              [prom(f"opsstack_tickets_mtta_seconds{{{SERVICE}}}", "{{service}}", instant=True)],
              thresholds=steps([(None, GREEN), (l1 * 0.5, YELLOW), (l1, RED)]), w=8, h=8),
        panel(_bars(), "MTTR by service",
              "Mean time from ticket opened to resolved over the last 30 days (opsstack_tickets_mttr_seconds).", "s",
              [prom(f"opsstack_tickets_mttr_seconds{{{SERVICE}}}", "{{service}}", instant=True)],
              thresholds=steps([(None, GREEN), (3600, YELLOW), (4 * 3600, RED)]), w=8, h=8),
        panel(_bars(), "MTBF by service",
              "Mean time between two tickets of a service over the last 30 days (opsstack_tickets_mtbf_seconds); "
              "short means a service that keeps failing.", "s",
              [prom(f"opsstack_tickets_mtbf_seconds{{{SERVICE}}}", "{{service}}", instant=True)],
              thresholds=steps([(None, RED), (86400, YELLOW), (7 * 86400, GREEN)]), w=8, h=8),
    ]


KPI = "opsstack_kpi"


def outcome_row(cfg: dict) -> list:
    """Issue 14: the outcome KPIs against their targets (webhook_receiver/kpis.py over
    receiver.kpis.window; targets alerts.kpi, the thresholds of alert_rules/kpi.py). Red = the
    KPI misses its target (its Kpi* alert fires after alerts.kpi.for)."""
    k = cfg["alerts"]["kpi"]
    win = _human(cfg["receiver"]["kpis"]["window"])
    return [
        panel(_bars(), f"Uptime by service (target ≥ {k['uptime_ratio']:.2%})",
              f"Share of the last {win} (or of the time the receiver watched, when shorter) with no down alert "
              f"({', '.join(cfg['receiver']['kpis']['down_alerts'])}) of the service firing "
              f"({KPI}_uptime_ratio, from the alert episodes on the tickets). Red below the target "
              "(alerts.kpi.uptime_ratio, KpiUptimeLow).", "percentunit",
              [prom(f"min by (service) ({KPI}_uptime_ratio{{{SERVICE}}})", "{{service}}", instant=True)],
              thresholds=steps([(None, RED), (k["uptime_ratio"], GREEN)]), min_value=0.99, max_value=1,
              decimals=3, w=6, h=6),
        panel(_bars(), f"MTBF by service (target ≥ {_human(k['mtbf'])})",
              f"Up time over the last {win} divided by the service's tickets opened or reopened in it "
              f"({KPI}_mtbf_seconds); no bar for a service without failures. Red below the target "
              "(alerts.kpi.mtbf, KpiMtbfLow).", "s",
              [prom(f"min by (service) ({KPI}_mtbf_seconds{{{SERVICE}}})", "{{service}}", instant=True)],
              thresholds=steps([(None, RED), (k["mtbf"], GREEN)]), min_value=0, w=6, h=6),
        panel(_stat(), f"MTTR (target ≤ {_human(k['mttr'])})",
              f"Mean time from a ticket's (re)opening to its resolution, tickets resolved in the last {win} "
              f"({KPI}_mttr_seconds). Red past the target (alerts.kpi.mttr, KpiMttrHigh). No value: no ticket "
              "resolved in the window.", "s",
              [prom(f"max({KPI}_mttr_seconds)", "MTTR", instant=True)],
              thresholds=steps([(None, GREEN), (k["mttr"], RED)]), w=4, h=6),
        panel(_stat(), f"Auto-recovery rate (target ≥ {k['auto_recovery_ratio']:.0%})",
              f"Share of the tickets resolved in the last {win} that automation closed: the alert resolved after "
              f"a playbook acted, before any person acted on the ticket ({KPI}_auto_recovery_ratio). Red below "
              "the target (alerts.kpi.auto_recovery_ratio, KpiAutoRecoveryLow).", "percentunit",
              [prom(f"max({KPI}_auto_recovery_ratio)", "auto-recovery", instant=True)],
              thresholds=steps([(None, RED), (k["auto_recovery_ratio"], GREEN)]), min_value=0, max_value=1,
              w=4, h=6),
        panel(_stat(), f"Response time (target ≤ {_human(k['response'])})",
              f"Mean time from a ticket's (re)opening to its first response over the last {win}: a person "
              "acknowledging, resolving, reassigning or commenting, or a playbook action; unanswered tickets count "
              f"with the time they waited ({KPI}_response_seconds). Red past the target (alerts.kpi.response, "
              "KpiResponseSlow).", "s",
              [prom(f"max({KPI}_response_seconds)", "response", instant=True)],
              thresholds=steps([(None, GREEN), (k["response"], RED)]), w=4, h=6),
    ]


def trend_row(cfg: dict) -> list:
    return [
        panel(timeseries.Panel().fill_opacity(60).line_width(0), "Tickets per day",
              "Tickets opened per day and severity, from the receiver's tickets table (reopened tickets count "
              "once, on the day they first opened).", "none",
              [_Sql("SELECT date_trunc('day', opened_at) AS time, severity AS metric, count(*) AS value\n"
                    "FROM tickets WHERE $__timeFilter(opened_at)\nGROUP BY 1, 2 ORDER BY 1")],
              datasource=POSTGRES, w=12, h=8),
        panel(_lines(), "Tickets opened",
              "Tickets opened per second by severity (rate of opsstack_tickets_opened_total).", "ops",
              [prom(f"sum by (severity) (rate(opsstack_tickets_opened_total{{{SERVICE}}}[$__rate_interval]))",
                    "{{severity}}")], w=12, h=8),
        panel(_lines(), "Escalations by level",
              "Pages sent to each escalation level per second (opsstack_tickets_escalations_total): level 2 and 3 "
              "mean the level below did not acknowledge in time.", "ops",
              [prom("sum by (level) (rate(opsstack_tickets_escalations_total[$__rate_interval]))", "L{{level}}")],
              thresholds=steps([(None, GREEN)]), w=12, h=8),
        panel(_lines(), "Notification failures",
              "Failed notification attempts per second by channel (each retry counts; "
              "opsstack_tickets_notification_failures_total) and messages given up after notifications.max_attempts.",
              "ops",
              [prom("sum by (channel) (rate(opsstack_tickets_notification_failures_total[$__rate_interval]))",
                    "{{channel}} failures"),
               prom("sum by (channel) (opsstack_tickets_notifications_failed)", "{{channel}} given up")],
              thresholds=steps([(None, GREEN)]), w=12, h=8),
        panel(_lines(), "Webhook deliveries",
              "Alertmanager deliveries per second by outcome: stored, invalid (4xx), unauthorized, db_error "
              "(503: Alertmanager retries).", "reqps",
              [prom("sum by (outcome) (rate(opsstack_receiver_webhook_requests_total[$__rate_interval]))",
                    "{{outcome}}")],
              w=12, h=8),
        panel(_lines(), "Processing backlog",
              "Stored Alertmanager payloads not yet turned into tickets (queued processing) and the age of the "
              "oldest; it should drain within seconds. Failed payloads are retried, then set aside.", "s",
              [prom("max(opsstack_receiver_payloads_pending_age_seconds)", "oldest pending")],
              thresholds=steps([(None, GREEN), (60, RED)]), w=12, h=8),
        panel(_lines(), "Webhook latency p99",
              "99th percentile of the receiver's request duration per route.", "s",
              [prom("histogram_quantile(0.99, sum by (le, route) "
                    "(rate(opsstack_receiver_request_duration_seconds_bucket[$__rate_interval])))", "{{route}}")],
              thresholds=steps([(None, GREEN), (0.05, RED)]), w=12, h=8),
    ]


RUNS = "opsstack_remediation_runs_total"
ATTEMPTS = "opsstack_remediation_attempts_total"
TTR = "opsstack_remediation_time_to_recover_seconds"
CLOSED = "opsstack_remediation_tickets_resolved_total"
# goals of docs/remediation.md: success >= 95%, recovery well under 2 minutes
SUCCESS_GOAL = 0.95
RECOVER_GOAL_S = 120


def _switch_mappings() -> list:
    """opsstack_remediation_kill_switch: 0 = automatic actions run, 1 = switched off."""
    from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

    return [ValueMap(options={"0": ValueMappingResult(text="ON", color=GREEN, index=0),
                              "1": ValueMappingResult(text="OFF (kill switch)", color=RED, index=1)})]


def remediation_row(cfg: dict) -> list:
    """Issue 6: what automatic remediation did, how often it worked, how fast, and how many
    tickets closed without a person (metrics of webhook_receiver/remediation/metrics.py, read
    from the receiver's database at scrape time; counters over $__rate_interval windows)."""
    recovered = f'sum(increase({RUNS}{{outcome="recovered"}}[$__rate_interval]))'
    decided = f'sum(increase({RUNS}{{outcome=~"recovered|exhausted"}}[$__rate_interval]))'
    success_thresholds = steps([(None, RED), (0.8, YELLOW), (SUCCESS_GOAL, GREEN)])
    return [
        panel(_stat(), "Auto-recovery success rate",
              "Share of remediation runs that ended with a verified recovery (outcome recovered) among those that "
              "ran their ladder to an end (recovered or exhausted), over the last $__rate_interval window with "
              f"runs. Goal: at least {SUCCESS_GOAL:.0%}. Skipped and dry runs do not count.", "percentunit",
              [prom(f"{recovered} / {decided}", "success rate")],
              thresholds=success_thresholds, min_value=0, max_value=1, w=6, h=5),
        panel(_stat(), "Automation rate",
              "Share of resolved tickets that automation closed without a person: the alert resolved after a "
              "playbook acted and before any person acted on the ticket (opsstack_remediation_tickets_resolved_total, "
              "closed_by=automation vs people), over the last $__rate_interval window with resolved tickets.",
              "percentunit",
              [prom(f'sum(increase({CLOSED}{{closed_by="automation"}}[$__rate_interval])) / '
                    f"sum(increase({CLOSED}[$__rate_interval]))", "automation rate")],
              thresholds=steps([(None, BLUE)]), min_value=0, max_value=1, w=6, h=5),
        panel(_stat(), "Mean time to recover",
              "Mean time from the alert's start to the verified recovery of the runs that recovered in the last "
              f"$__rate_interval window ({TTR}: _sum / _count). Goal: under {_human(RECOVER_GOAL_S)}.", "s",
              [prom(f"sum(rate({TTR}_sum[$__rate_interval])) / sum(rate({TTR}_count[$__rate_interval]))",
                    "mean")],
              thresholds=steps([(None, GREEN), (RECOVER_GOAL_S / 2, YELLOW), (RECOVER_GOAL_S, RED)]), w=6, h=5),
        panel(_stat(), "Automatic actions",
              "OFF while the kill switch is on (remediation.kill_switch in the config, or PUT "
              "/api/v1/remediation/kill-switch at run time): playbooks then do nothing and every ticket goes "
              "straight to people.", "none",
              [prom("max(opsstack_remediation_kill_switch)", "kill switch", instant=True)],
              thresholds=steps([(None, GREEN), (1, RED)]), w=6, h=5).mappings(_switch_mappings()),
        panel(_lines(), "Remediation runs by playbook and outcome",
              "Playbook runs per $__rate_interval window by how they ended: recovered (verified in Prometheus), "
              "exhausted (every action tried, handed to people), skipped (stood aside: skip_if, kill switch, "
              "cooldown, lock held, condition already cleared), dry_run, failed.", "none",
              [prom(f"sum by (playbook, outcome) (increase({RUNS}[$__rate_interval]))", "{{playbook}} · {{outcome}}")],
              min_value=0, w=12, h=8),
        panel(_lines(), "Remediation actions by playbook and action",
              "Actions of the playbook ladders per $__rate_interval window by outcome: recovered (verified), "
              "not_recovered (ran, the condition did not clear: the next rung follows), failed, timeout, dry_run.",
              "none",
              [prom(f"sum by (playbook, action, outcome) (increase({ATTEMPTS}[$__rate_interval]))",
                    "{{playbook}} · {{action}} · {{outcome}}")],
              min_value=0, w=12, h=8),
        panel(_lines(), "Auto-recovery success rate by playbook",
              "Per playbook: recovered runs / runs that ended recovered or exhausted, per $__rate_interval window; "
              "and the automation rate (resolved tickets closed without a person). Dashed line: the "
              f"{SUCCESS_GOAL:.0%} goal.", "percentunit",
              [prom(f'sum by (playbook) (increase({RUNS}{{outcome="recovered"}}[$__rate_interval])) / '
                    f'sum by (playbook) (increase({RUNS}{{outcome=~"recovered|exhausted"}}[$__rate_interval]))',
                    "{{playbook}}"),
               prom(f'sum(increase({CLOSED}{{closed_by="automation"}}[$__rate_interval])) / '
                    f"sum(increase({CLOSED}[$__rate_interval]))", "automation rate")],
              thresholds=steps([(None, RED), (SUCCESS_GOAL, GREEN)]), min_value=0, max_value=1, w=12, h=8),
        panel(_lines(), "Time to recover by playbook",
              f"Mean time from the alert's start to the verified recovery per playbook ({TTR}), over the runs "
              f"that recovered in each $__rate_interval window. Dashed line: the {_human(RECOVER_GOAL_S)} goal.",
              "s",
              [prom(f"sum by (playbook) (rate({TTR}_sum[$__rate_interval])) / "
                    f"sum by (playbook) (rate({TTR}_count[$__rate_interval]))", "{{playbook}}")],
              thresholds=steps([(None, GREEN), (RECOVER_GOAL_S, RED)]), min_value=0, w=12, h=8),
        panel(table.Panel(), "Latest remediation runs",
              "The newest playbook runs in the time range from the receiver's database (remediation_runs and "
              "remediation_attempts): the ticket, what ran in order (action: status, verified), the outcome, the "
              "time to recover and whether people were paged. Details per ticket: the incident console or "
              "GET /api/v1/tickets/<id>/remediation.", "none",
              [_Sql("SELECT r.created_at AS \"started\", r.ticket_id AS \"ticket\", r.playbook, r.target,\n"
                    "       r.status AS \"outcome\",\n"
                    "       string_agg(a.action || ': ' || a.status || CASE WHEN a.verified THEN ', recovered'\n"
                    "                  WHEN a.verified = false THEN ', not recovered' ELSE '' END,\n"
                    "                  ' → ' ORDER BY a.phase, a.step) AS \"what ran\",\n"
                    "       round(sum(a.duration_seconds)::numeric, 2) AS \"action seconds\",\n"
                    "       CASE WHEN r.status = 'recovered'\n"
                    "            THEN round(extract(epoch FROM r.finished_at - r.alert_starts_at)::numeric, 1)\n"
                    "       END AS \"time to recover (s)\",\n"
                    "       r.escalated AS \"paged people\", r.reason\n"
                    "FROM remediation_runs r LEFT JOIN remediation_attempts a ON a.run_id = r.id\n"
                    "WHERE $__timeFilter(r.created_at)\n"
                    "GROUP BY r.id ORDER BY r.id DESC LIMIT 100", "table")],
              datasource=POSTGRES, w=24, h=9),
    ]


def build(cfg: dict) -> dict:
    d = new_dashboard(UID, TITLE, tags=["incidents", "receiver"],
                      description="Tickets, escalations, notifications and response KPIs from the webhook receiver.",
                      variables=[label_variable("service", "opsstack_tickets_opened_total", title="Service")],
                      time_from="now-7d", refresh="1m")
    d = d.with_row(dash.Row("Now"))
    for p in now_row(cfg):
        d = d.with_panel(p)
    d = d.with_row(dash.Row("Response (last 30 days)"))
    for p in kpi_row(cfg):
        d = d.with_panel(p)
    d = d.with_row(dash.Row(f"Outcome KPIs against targets (last {_human(cfg['receiver']['kpis']['window'])})"))
    for p in outcome_row(cfg):
        d = d.with_panel(p)
    d = d.with_row(dash.Row("Trends"))
    for p in trend_row(cfg):
        d = d.with_panel(p)
    d = d.with_row(dash.Row("Automatic remediation"))
    for p in remediation_row(cfg):
        d = d.with_panel(p)
    return to_model(d)
