"""Operations Overview: the wall screen of the 24/7 operations centre.

Rows (issue 3): system health, real-time performance, regional performance, user activity,
active alerts, SLO error budget. Variables: datasource, service, region. Every threshold
comes from the config section the alert rules use (``alerts:``), so a panel turns red
exactly where its alert fires. Series come from the recording rules of
alert_rules/platform.yml and slo.yml where the aggregation is fixed, and from raw series with
``$__rate_interval`` where the panel's own resolution matters.

DB query time appears when the database exporter is enabled (``exporters.db.enabled``), the CDN
edge response time per region when the CDN exporter is (``exporters.cdn.enabled``: the
Cloudflare windows, ``opsstack_cdn_*``), and the security-status row (threats blocked, access
denied, TLS expiry, backup age) when the security exporter is (``exporters.security.enabled``);
the CDN & Cache and Security dashboards have the details.
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash, logs, piechart, stat, table
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    VizOrientation,
)

from core import series
from core.config import format_duration
from dashboards.common import bars as _bars, lines as _lines
from dashboards.common import (
    GREEN,
    LOKI,
    ORANGE,
    RED,
    SERVICE,
    SERVICE_REGION,
    YELLOW,
    alert_list_panel,
    loki,
    new_dashboard,
    panel,
    prom,
    reduce_last,
    region_variable,
    service_variable,
    steps,
    to_model,
    up_down_mappings, with_rows)

UID = "opsstack-operations-overview"
TITLE = "Operations Overview"


def _stat(orientation: VizOrientation = VizOrientation.AUTO) -> stat.Panel:
    return (stat.Panel().reduce_options(reduce_last()).color_mode(BigValueColorMode.BACKGROUND)
            .graph_mode(BigValueGraphMode.NONE).orientation(orientation))


def system_health(cfg: dict) -> list:
    a = cfg["alerts"]
    objective = a["slo"]["availability"]
    p = a["selectors"]["platform"]
    svc_cpu, svc_mem, svc_disk = a["service"]["cpu_ratio"], a["service"]["memory_ratio"], a["service"]["disk_ratio"]
    host = a["host"]
    return [
        panel(_stat(), "Service status by region",
              "Health probe of every service instance right now (opsstack_probe_up from the probe "
              "exporter). DOWN for longer than "
              f"{_dur(a['service_down_for'])} fires ServiceDown.",
              "none", [prom(f"opsstack_probe_up{{{SERVICE_REGION}}}", "{{service}} · {{region}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=12, h=6)
        .mappings(up_down_mappings()),
        panel(_stat(), "30-day uptime",
              "Share of successful health probes over the last 30 days per service "
              "(service_region:opsstack_probe_up:avg_over_time30d). Green at or above the "
              f"{objective:.3%} availability objective, red below it.",
              "percentunit", [prom(f"avg by (service) ({series.UPTIME_30D}{{{SERVICE_REGION}}})",
                                   "{{service}}", instant=True)],
              thresholds=steps([(None, RED), (objective, GREEN)]), decimals=3, w=12, h=6),
        panel(_bars(), "Service CPU vs limit",
              "CPU used by each service over its configured limit: the service's own "
              "opsstack_service_cpu_seconds_total where it exports one, else process_cpu_seconds_total, "
              "over opsstack_service_cpu_limit_cores (as ServiceCpuHigh reads it). ServiceCpuHigh fires "
              f"above {svc_cpu:.0%} for {_dur(a['service']['cpu_for'])}.",
              "percentunit",
              [prom(f"sum by (service) (rate(opsstack_service_cpu_seconds_total{{{p},{SERVICE}}}[$__rate_interval])\n"
                    f"  or rate(process_cpu_seconds_total{{{p},{SERVICE}}}[$__rate_interval]))\n"
                    f"/ on (service)\nmax by (service) (opsstack_service_cpu_limit_cores{{{p},{SERVICE}}})",
                    "{{service}}", instant=True)],
              thresholds=steps([(None, GREEN), (svc_cpu, RED)]), min_value=0, max_value=1, w=8, h=7),
        panel(_bars(), "Service memory vs limit",
              "Resident memory of each service process over its configured limit "
              "(process_resident_memory_bytes / opsstack_service_memory_limit_bytes). ServiceMemoryHigh "
              f"fires at once above {svc_mem:.0%}.",
              "percentunit",
              [prom(f"max by (service) (process_resident_memory_bytes{{{p},{SERVICE}}})\n"
                    f"/ on (service)\nmax by (service) (opsstack_service_memory_limit_bytes{{{p},{SERVICE}}})",
                    "{{service}}", instant=True)],
              thresholds=steps([(None, GREEN), (svc_mem, RED)]), min_value=0, max_value=1, w=8, h=7),
        panel(_bars(), "Service volumes used",
              "Used over capacity of each service's data volume (opsstack_volume_used_bytes / "
              f"opsstack_volume_capacity_bytes). ServiceDiskAlmostFull fires above {svc_disk:.0%}.",
              "percentunit",
              [prom(f"max by (service, volume) (opsstack_volume_used_bytes{{{p},{SERVICE}}})\n"
                    f"/ on (service, volume)\n"
                    f"max by (service, volume) (opsstack_volume_capacity_bytes{{{p},{SERVICE}}})",
                    "{{service}} · {{volume}}", instant=True)],
              thresholds=steps([(None, GREEN), (svc_disk, RED)]), min_value=0, max_value=1, w=8, h=7),
        panel(_bars(), "Hosts: CPU, memory, fullest disk",
              "node_exporter: CPU busy (HostCpuHigh above "
              f"{host['cpu_ratio']:.0%}), memory used (HostMemoryHigh above {host['memory_ratio']:.0%}) "
              f"and the fullest real filesystem (HostDiskAlmostFull above {host['disk_ratio']:.0%}) "
              "of every machine. The bar turns red at the lowest of the three thresholds.",
              "percentunit",
              [prom(f"1 - avg by (instance) (rate(node_cpu_seconds_total{{{a['selectors']['node']},"
                    f"mode=\"idle\"}}[$__rate_interval]))", "{{instance}} CPU", instant=True),
               prom(f"1 - node_memory_MemAvailable_bytes{{{a['selectors']['node']}}}\n"
                    f"/ node_memory_MemTotal_bytes{{{a['selectors']['node']}}}", "{{instance}} memory", instant=True),
               prom(f"max by (instance) (1 - node_filesystem_avail_bytes{{{a['selectors']['node']},"
                    f"{a['selectors']['filesystem']}}}\n/ node_filesystem_size_bytes{{{a['selectors']['node']},"
                    f"{a['selectors']['filesystem']}}})", "{{instance}} disk", instant=True)],
              thresholds=steps([(None, GREEN), (min(host["cpu_ratio"], host["memory_ratio"], host["disk_ratio"]), RED)]),
              min_value=0, max_value=1, w=24, h=6),
    ]


def realtime_performance(cfg: dict) -> list:
    a = cfg["alerts"]
    target = a["latency"]["p95_seconds"]
    out = [
        panel(_lines(), "API p95 latency by service",
              "95th percentile of the request duration the services measure themselves "
              "(opsstack_http_request_duration_seconds, selected regions together). The dashed line is "
              f"the {target * 1000:g} ms target; ServiceLatencyHigh fires when a service-region stays "
              f"above it for {_dur(a['latency']['for'])}.",
              "s",
              [prom("histogram_quantile(0.95, sum by (service, le) (rate(opsstack_http_request_duration_seconds_bucket"
                    f"{{{SERVICE_REGION}}}[$__rate_interval])))", "{{service}}")],
              thresholds=steps([(None, GREEN), (target, RED)]), min_value=0, w=12, h=8),
        panel(_stat(), "Worst p95 latency now",
              "Highest p95 latency of any selected service-region over the last 5 minutes "
              "(service_region:opsstack_http_request_duration_seconds:p95_rate5m) against the "
              f"{target * 1000:g} ms target.",
              "s", [prom(f"max({series.latency('p95')}{{{SERVICE_REGION}}})", "worst p95", instant=True)],
              thresholds=steps([(None, GREEN), (target * 0.8, YELLOW), (target, RED)]), w=4, h=8),
    ]
    if cfg["exporters"].get("db", {}).get("enabled"):
        db_threshold = cfg["exporters"]["db"].get("alerts", {}).get("avg_query_time", 0.1)
        out.append(panel(
            _lines(), "DB mean query time",
            "Mean execution time of the database's statements (pg_stat_statements through the DB "
            "exporter: opsstack_db_statements_exec_seconds_total / opsstack_db_statements_calls_total). "
            f"The dashed line is the {db_threshold * 1000:g} ms alert threshold; the Database dashboard "
            "has the details.",
            "s",
            [prom("sum by (server) (rate(opsstack_db_statements_exec_seconds_total[$__rate_interval]))\n/\n"
                  "sum by (server) (rate(opsstack_db_statements_calls_total[$__rate_interval]))", "{{server}}")],
            thresholds=steps([(None, GREEN), (db_threshold, RED)]), min_value=0, w=8, h=8))
    out += [
        panel(_lines(), "Concurrent users vs 24h peak",
              "Active user sessions now (opsstack_active_sessions, selected services and regions) and "
              "the highest value of the last 24 hours.",
              "short",
              [prom(f"sum(opsstack_active_sessions{{{SERVICE_REGION}}})", "active sessions"),
               prom(f"max_over_time(sum(opsstack_active_sessions{{{SERVICE_REGION}}})[1d:1m])", "24h peak")],
              min_value=0, w=16 if cfg["exporters"].get("db", {}).get("enabled") else 12, h=8),
        panel(_stat(), "Load vs 24h peak",
              "Active sessions now as a share of the 24-hour peak.",
              "percentunit",
              [prom(f"sum(opsstack_active_sessions{{{SERVICE_REGION}}})\n/\n"
                    f"max_over_time(sum(opsstack_active_sessions{{{SERVICE_REGION}}})[1d:1m])", "load", instant=True)],
              thresholds=steps([(None, GREEN), (0.9, YELLOW)]), w=8, h=8),
    ]
    if cfg["exporters"].get("cdn", {}).get("enabled"):
        lat = a["cdn"]["latency"]
        out.append(panel(
            _lines(), "CDN edge response time by region",
            "p95 edge time to first byte per CDN region over Cloudflare's last closed window "
            "(opsstack_cdn_edge_response_quantile_seconds; the mean opsstack_cdn_edge_response_seconds where "
            f"the plan has no percentiles). Dashed: the {lat['p95_seconds'] * 1000:g} ms threshold of the "
            "platform's serving region; CdnLatencyHigh uses each region's own (alerts.cdn.latency). Details: "
            "the CDN & Cache dashboard.",
            "s",
            [prom('max without (quantile) (opsstack_cdn_edge_response_quantile_seconds{quantile="0.95"})\n'
                  "or opsstack_cdn_edge_response_seconds", "{{zone}} {{region}}")],
            thresholds=steps([(None, GREEN), (lat["p95_seconds"], RED)]), min_value=0, w=24, h=8))
    return out


def regional_performance(cfg: dict) -> list:
    a = cfg["alerts"]
    target = a["latency"]["p95_seconds"]
    err = a["errors"]["ratio"]
    objective = a["slo"]["availability"]
    return [
        panel(_lines(), "p95 latency by region",
              "95th percentile request duration per region (selected services together); dashed: the "
              f"{target * 1000:g} ms target.",
              "s",
              [prom("histogram_quantile(0.95, sum by (region, le) (rate(opsstack_http_request_duration_seconds_bucket"
                    f"{{{SERVICE_REGION}}}[$__rate_interval])))", "{{region}}")],
              thresholds=steps([(None, GREEN), (target, RED)]), min_value=0, w=8, h=8),
        panel(_lines(), "Availability by region",
              "Share of requests that did not answer 5xx over the last 5 minutes, per region "
              "(from service_region:opsstack_http_errors:rate5m and ..._requests:rate5m). Red below "
              f"{1 - err:.0%} (ServiceErrorRatioHigh), yellow below the {objective:.1%} objective.",
              "percentunit",
              [prom(f"1 - (\n  sum by (region) ({series.ERRORS_5M}{{{SERVICE_REGION}}})\n/\n"
                    f"  sum by (region) ({series.REQUESTS_5M}{{{SERVICE_REGION}}})\n)", "{{region}}")],
              thresholds=steps([(None, RED), (1 - err, YELLOW), (objective, GREEN)]), max_value=1, w=8, h=8),
        panel(piechart.Panel().reduce_options(reduce_last()), "Traffic share by region",
              "Requests per second of the selected services, split by region (last 5 minutes).",
              "reqps",
              [prom(f"sum by (region) ({series.REQUESTS_5M}{{{SERVICE_REGION}}})", "{{region}}", instant=True)],
              w=8, h=8),
        panel(_bars(), "Region share of each service's traffic",
              "For every service, the share of its requests served by each region "
              "(service_region:opsstack_http_requests:share_rate5m). A region near 0 while others grow "
              "means traffic was rerouted away from it.",
              "percentunit",
              [prom(f"{series.SHARE_5M}{{{SERVICE_REGION}}}", "{{service}} · {{region}}", instant=True)],
              min_value=0, max_value=1, w=12, h=8),
        panel(_lines(), "Synthetic probe latency by region",
              "Total duration of the health probes per region as the probe exporter sees it "
              "(opsstack_probe_duration_seconds{phase=\"total\"}, slowest service of the region).",
              "s",
              [prom(f"max by (region) (opsstack_probe_duration_seconds{{{SERVICE_REGION},phase=\"total\"}})",
                    "{{region}}")],
              min_value=0, w=12, h=8),
    ]


def user_activity(cfg: dict) -> list:
    return [
        panel(_lines().stacking(_stack()), "Active sessions by region",
              "Active user sessions per region (opsstack_active_sessions), stacked.",
              "short", [prom(f"sum by (region) (opsstack_active_sessions{{{SERVICE_REGION}}})", "{{region}}")],
              min_value=0, w=12, h=8),
        panel(piechart.Panel().reduce_options(reduce_last()), "Clients: mobile vs web",
              "Active sessions by client type (label client of opsstack_active_sessions).",
              "short", [prom(f"sum by (client) (opsstack_active_sessions{{{SERVICE_REGION}}})", "{{client}}",
                             instant=True)], w=6, h=8),
        panel(piechart.Panel().reduce_options(reduce_last()), "User geography",
              "Requests per second by where the users are (label geo of opsstack_user_requests_total: "
              "capital region, provinces, overseas).",
              "reqps", [prom(f"sum by (geo) (rate(opsstack_user_requests_total{{{SERVICE_REGION}}}[$__rate_interval]))",
                             "{{geo}}", instant=True)], w=6, h=8),
        panel(_lines(), "Requests per minute vs the day's peak",
              "Requests per minute served by the selected services and regions, and the highest "
              "5-minute rate of the last 24 hours.",
              "reqpm",
              [prom(f"sum(rate(opsstack_http_requests_total{{{SERVICE_REGION}}}[$__rate_interval])) * 60",
                    "requests/min"),
               prom(f"max_over_time(sum({series.REQUESTS_5M}{{{SERVICE_REGION}}})[1d:1m]) * 60", "24h peak")],
              min_value=0, w=24, h=8),
    ] + peak_forecast(cfg)


PEAK = 'job="opsstack_forecaster",kind=~"requests|sessions"'


def peak_forecast(cfg: dict) -> list:
    """The forecaster's next daily peak of the platform's traffic and sessions (forecasters/peak.py):
    platform-wide targets, so the service/region variables do not apply."""
    return [
        panel(_stat(), "Next daily peak (forecast)",
              "When the forecaster expects the next daily peak of the platform's request rate and of its "
              "concurrent users (opsstack_forecast_next_peak_timestamp_seconds, edge=peak; from the daily "
              "profile of the last 7 days of history). Platform-wide: the service/region variables do not "
              "apply. No value: less than a day of history yet.",
              "dateTimeAsLocal",
              [prom(f'opsstack_forecast_next_peak_timestamp_seconds{{{PEAK},edge="peak"}} * 1000', "{{target}}",
                    instant=True)], w=8, h=6),
        panel(_stat(), "Daily peak window (local hours)",
              "Hour of day of the forecast peak and its window (the hours within 10% of the peak-to-trough "
              "range of the daily profile), local time of forecast.timezone (label timezone), e.g. start "
              "14, end 16 for the demo's 14:00-16:00 plateau (opsstack_forecast_peak_hour).",
              "none",
              [prom(f"opsstack_forecast_peak_hour{{{PEAK}}}", "{{target}} {{edge}}", instant=True)],
              decimals=1, w=8, h=6),
        panel(_stat(), "Expected at the next peak",
              "Forecast value of each target at its next daily peak (opsstack_forecast_next_peak_value): "
              "requests per second for `requests`, active sessions for `sessions`.",
              "short",
              [prom(f"opsstack_forecast_next_peak_value{{{PEAK}}}", "{{target}}", instant=True)], w=8, h=6),
    ]


def active_alerts(cfg: dict) -> list:
    link = (dash.DashboardLink("Alert groups in Alertmanager").type("link")
            .url("/alerting/groups?alertmanager=Alertmanager").target_blank(True))
    return [
        panel(_stat(), "Firing alerts by severity",
              "Critical and warning alerts firing in Prometheus now (the ALERTS series), by severity; "
              "0 when none fires.",
              "none",
              [prom('count by (severity) (ALERTS{alertstate="firing",severity=~"critical|warning"})\n'
                    'or on () vector(0)', "{{severity}}", instant=True)],
              thresholds=steps([(None, YELLOW), (1, ORANGE)]), w=6, h=10),
        panel(table.Panel(), "Firing alerts",
              "Every firing alert with its service, region, severity and tier (ALERTS in Prometheus). "
              "Watchdog (info) always fires: it shows that rule evaluation works. Alertmanager groups, "
              "silences and inhibitions: the link opens Grafana Alerting on the Alertmanager datasource.",
              "none",
              [prom('max by (alertname, service, region, severity, tier) '
                    '(ALERTS{alertstate="firing",service=~"$service|opsstack|platform|host"})',
                    instant=True, table=True)],
              w=10, h=10).links([link]),
        alert_list_panel(
            "Alert rules firing or pending",
            "Grafana's alert list of the Prometheus datasource's alerting rules (firing and pending), "
            "for the selected services.",
            label_filter='{service=~"$service"}', w=8, h=10, links=[link]),
        panel(_lines(), "Alertmanager: active and suppressed alerts",
              "Alerts Alertmanager holds (alertmanager_alerts): active ones are notified, suppressed "
              "ones are silenced or inhibited; and failed notifications per second to the receiver.",
              "short",
              [prom('sum by (state) (alertmanager_alerts{job="alertmanager"})', "{{state}}"),
               prom('sum(rate(alertmanager_notifications_failed_total{job="alertmanager"}[$__rate_interval]))',
                    "failed notifications/s")],
              min_value=0, w=24, h=7),
    ]


def slo_budget(cfg: dict) -> list:
    slo = cfg["alerts"]["slo"]
    objective = slo["availability"]
    budget = series.slo_budget(cfg)
    return [
        panel(_bars(), "Error budget remaining (30 days)",
              f"Share of the 30-day error budget ({budget:.2%} of the requests may fail for the "
              f"{objective:.1%} availability objective) that is left per service "
              "(service:opsstack_slo_error_budget_remaining:ratio30d). Below 0 the objective is missed.",
              "percentunit",
              [prom(f"{series.SLO_BUDGET_REMAINING}{{{SERVICE}}}", "{{service}}", instant=True)],
              thresholds=steps([(None, RED), (0, ORANGE), (0.25, YELLOW), (0.5, GREEN)]),
              min_value=-1, max_value=1, w=8, h=8),
        panel(_stat(), "Availability (30 days)",
              "Share of requests that did not answer 5xx over 30 days per service "
              f"(1 - service:opsstack_slo_error_ratio:rate30d). Green at or above {objective:.1%}.",
              "percentunit",
              [prom(f"1 - {series.slo_error_ratio('30d')}{{{SERVICE}}}", "{{service}}", instant=True)],
              thresholds=steps([(None, RED), (objective, GREEN)]), decimals=3, w=6, h=8),
        panel(_lines(), "Burn rate (1 hour)",
              "How fast each service spends its error budget: the 1-hour error ratio over the budget. "
              "1 spends it exactly in 30 days; SloErrorBudgetBurnFast pages at 14.4 (with the 5-minute "
              "window) or 6 (6 hours / 30 minutes), SloErrorBudgetBurnSlow tickets at 3 and 1.",
              "suffix:x",
              [prom(f"{series.slo_error_ratio('1h')}{{{SERVICE}}} / {budget:g}", "{{service}}")],
              thresholds=steps([(None, GREEN), (1, YELLOW), (6, ORANGE), (14.4, RED)]), min_value=0, w=10, h=8),
    ]


def security_status(cfg: dict) -> list:
    """Threats, blocked access, TLS expiry, backup age from the security exporter (details: the
    Security dashboard); platform-wide, so the service/region variables do not apply."""
    sec = cfg["exporters"].get("security", {})
    if not sec.get("enabled"):
        return []
    s = cfg["alerts"]["security"]
    warn, crit = sec["tls"]["warning_before"] / 86400, sec["tls"]["critical_before"] / 86400
    rpo, max_age = sec["backup"]["rpo"], s["backup_max_age"]
    logs_read = '0 * max(opsstack_security_collector_success{collector="logs"})'
    return [
        panel(_stat(), "Threats blocked",
              "Requests per second the WAF (ModSecurity + OWASP CRS at the edge nginx) blocked, all attack "
              f"classes (opsstack_waf_blocked_requests_total); WafAttackSurge above {s['waf_blocked_rate']:g}/s "
              "per vhost and class. 0: the audit log is read and nothing was blocked.",
              "reqps",
              [prom("sum(rate(opsstack_waf_blocked_requests_total[$__rate_interval]))\n"
                    f"or on () {logs_read}", "blocked", instant=True)],
              thresholds=steps([(None, GREEN), (s["waf_blocked_rate"], RED)]), w=6, h=5),
        panel(_stat(), "Access denied",
              "401, 403 and 429 answers per second of the edge nginx, all vhosts "
              f"(opsstack_access_responses_total); BruteForceDetected above {s['auth_failure_rate']:g} 401/s "
              "on a vhost or when fail2ban bans many addresses.",
              "reqps",
              [prom('sum(rate(opsstack_access_responses_total{status=~"401|403|429"}[$__rate_interval]))\n'
                    f"or on () {logs_read}", "denied", instant=True)],
              thresholds=steps([(None, GREEN), (s["auth_failure_rate"], RED)]), w=6, h=5),
        panel(_stat(), "TLS: fewest days left",
              "Days until the first certificate of any TLS endpoint expires: the verified chain, else the leaf "
              "(opsstack_tls_chain_not_after_timestamp_seconds, opsstack_tls_leaf_not_after_timestamp_seconds). "
              f"TlsCertExpiringSoon warns below {warn:g} days, pages below {crit:g}.",
              "d",
              [prom("(min(\n  opsstack_tls_chain_not_after_timestamp_seconds\n"
                    "  or opsstack_tls_leaf_not_after_timestamp_seconds\n) - time()) / 86400", "days left",
                    instant=True)],
              thresholds=steps([(None, RED), (crit, ORANGE), (warn, GREEN)]), w=6, h=5),
        panel(_stat(), "Backup age",
              "Time since the newest pgBackRest backup finished, the oldest stanza "
              f"(opsstack_backup_last_completion_timestamp_seconds); BackupStale above {_dur(max_age)} "
              f"(alerts.security.backup_max_age). The {_dur(rpo)} RPO is the WAL archive's "
              "(PostgresWalArchiveStale, Database board).",
              "s",
              [prom("max(time() - max by (stanza) (opsstack_backup_last_completion_timestamp_seconds))",
                    "backup age", instant=True)],
              thresholds=steps([(None, GREEN), (max_age, RED)]), w=6, h=5),
    ]


def scaling_row(cfg: dict) -> list:
    """Replicas running against what the next daily peak needs (forecasters/scaling_advisor.py,
    docs/scaling.md), and the replicas' CPU against the utilisation band."""
    sc = cfg["forecast"].get("scaling", {})
    if not cfg["forecast"]["enabled"] or not sc.get("enabled", True):
        return []
    low, high = sc["band_low"], sc["band_high"]
    return [
        panel(_lines(), "Replicas: running and needed at the next peak",
              "Replicas of each service region now (opsstack_demo_replicas, the demo's capacity knob) and "
              "what the forecaster says the next daily peak needs to stay at or under "
              f"{high:.0%} CPU (opsstack_scaling_recommended_replicas; absent until a day of history). "
              "ScalingBelowForecast fires before the peak when fewer run; playbook scale-ahead adds them.",
              "short",
              [prom(f"sum by (service) (opsstack_demo_replicas{{{SERVICE_REGION}}})", "{{service}} running"),
               prom(f"sum by (service) (opsstack_scaling_recommended_replicas{{{SERVICE_REGION}}})",
                    "{{service}} needed at peak")],
              min_value=0, w=12, h=7),
        panel(_lines(), "Replica CPU against the utilisation band",
              "Busy share of the replicas' workers per service (rate of opsstack_demo_replica_cpu_seconds_total "
              f"over opsstack_demo_replica_cpu_cores). The target band is {low:.0%}-{high:.0%}; "
              "ScalingCpuHigh (scale-out) above the band's top, ScalingTrafficFalling (scale-in) when "
              "traffic falls at low use.",
              "percentunit",
              [prom("sum by (service) (rate(opsstack_demo_replica_cpu_seconds_total"
                    f"{{{SERVICE_REGION}}}[$__rate_interval]))\n"
                    f"/ sum by (service) (opsstack_demo_replica_cpu_cores{{{SERVICE_REGION}}})", "{{service}}")],
              thresholds=steps([(None, YELLOW), (low, GREEN), (high, RED)]), min_value=0, w=12, h=7),
    ]


def logs_row(cfg: dict) -> list:
    """Loki (docs/logs.md): the services' error lines over time and the lines themselves."""
    return [
        panel(_lines(), "Error log lines by service",
              "Lines logged at level error or critical per service (Loki, count per interval): what "
              "LogErrorSurge compares with the hour before. The demo's error-burst fault logs one per failed "
              "request (at most 20/s per service).",
              "short",
              [loki('sum by (service) (count_over_time({level=~"error|critical",service=~"$service"}'
                    ' [$__interval]))', "{{service}}")],
              datasource=LOKI, min_value=0, w=24, h=7),
        panel(logs.Panel(), "Logs of the selected services",
              "The key=value lines the services and the stack's programs ship to Loki, newest first; "
              "labels: service, component, level (region on the demo's request errors). Open a line's "
              "context or Explore for more.",
              "none",
              [loki('{service=~"$service",level=~".+"}')],
              datasource=LOKI, w=24, h=12),
    ]


ROWS = (
    ("System health", system_health),
    ("Real-time performance", realtime_performance),
    ("Regional performance", regional_performance),
    ("User activity", user_activity),
    ("Active alerts", active_alerts),
    ("Security status", security_status),
    ("SLO error budget", slo_budget),
    ("Scaling", scaling_row),
    ("Logs", logs_row),
)


def build(cfg: dict) -> dict:
    d = new_dashboard(
        UID, TITLE,
        description=f"{cfg['platform']['name']}: health, performance, regions, users, alerts and SLOs "
                    "of every service — the operations centre's wall screen.",
        tags=["operations", "platform"],
        variables=[service_variable(), region_variable()],
        time_from="now-6h", refresh="30s")
    return to_model(with_rows(d, ROWS, cfg))


def _stack():
    from grafana_foundation_sdk.builders.common import StackingConfig
    from grafana_foundation_sdk.models.common import StackingMode

    return StackingConfig().mode(StackingMode.NORMAL)


def _dur(seconds: float) -> str:
    return format_duration(seconds)
