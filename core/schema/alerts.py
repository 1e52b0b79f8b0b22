"""`alerts:` thresholds, `for:` durations and selectors of the alert rules (one place for them).

The rule modules in alert_rules/ and the dashboards read these values, so an alert and the
panel that shows the same signal always use the same threshold. Ratios are 0..1, latencies
seconds, rates requests per second (docs/development.md: base units). A duration of 0 means
"at once" (the rule has no `for:`).
"""
import re

from core.spec import ConfigError, Field, parse_duration


# the CDN exporter's region label values (exporters/cdn/regions.py REGIONS; core imports no component)
CDN_REGIONS = ("asia", "europe", "north_america", "other")


def _ratio(default: float) -> Field:
    return Field("float", default, minimum=0.0, maximum=1.0)


def _resources() -> dict:
    """CPU, memory and disk thresholds: the same keys and defaults for the host and each service."""
    return {
        "cpu_ratio": _ratio(0.80),
        "cpu_for": Field("duration", "5m", minimum=0),
        "memory_ratio": _ratio(0.85),
        "memory_for": Field("duration", "0s", minimum=0),  # at once
        "disk_ratio": _ratio(0.90),
        "disk_for": Field("duration", "5m", minimum=0),
    }


SECTION = {
    "service_down_for": Field("duration", "1m", minimum=0),
    "watchdog": Field("bool", True, "an always-firing alert that proves the alert pipeline works"),
    # base of every alert's runbook_url annotation (<base>/<Alert>.md); null = the receiver's own
    # /runbooks (http://<stack.host>:<stack.ports.receiver>/runbooks, which serves docs/runbooks;
    # while the port is 'auto', the committed rule files, used by docker compose, get
    # http://127.0.0.1:9095/runbooks, where compose publishes the receiver)
    "runbook_base_url": Field("str", None, nullable=True,
                              help="base URL of the runbook links; null = the receiver's /runbooks"),
    # team label of the alerts that belong to no single service (Watchdog, hosts, regions)
    "team": Field("str", "ops"),
    # window of the rates in the threshold alerts (CPU, error ratio, p95 latency, cache hits);
    # the recording rules and SLO windows keep their own fixed windows
    "rate_window": Field("duration", "5m", minimum=1),
    # label matchers (PromQL, without braces) that pick the series the rules look at
    "selectors": {
        "platform": Field("str", 'job="platform"', "the monitored services' own /metrics"),
        "node": Field("str", 'job="node"', "node_exporter"),
        "filesystem": Field(
            "str", 'fstype!~"tmpfs|ramfs|squashfs|overlay|nsfs|autofs|fuse.lxcfs",mountpoint!~"/(run|proc|sys|dev)($|/).*"',
            "node_filesystem_* series that count as host disks"),
    },
    # node_exporter: the machine(s) the stack runs on
    "host": _resources(),
    # each service process against its own configured limits (opsstack_service_*_limit_*)
    "service": _resources(),
    "latency": {
        "p95_seconds": Field("float", 0.2, minimum=0.001),
        # region -> p95 threshold in seconds where it differs (e.g. far-away regions)
        "p95_seconds_by_region": Field("dict", {}),
        "for": Field("duration", "10m", minimum=0),
    },
    "errors": {
        "ratio": _ratio(0.05),
        "for": Field("duration", "5m", minimum=0),
        # below this many requests/s a service-region is too quiet to judge
        "min_request_rate": Field("float", 0.1, minimum=0.0),
    },
    "cache": {
        "hit_ratio": _ratio(0.5),
        "for": Field("duration", "5m", minimum=0),
        "min_request_rate": Field("float", 0.1, minimum=0.0, help="lookups/s below which the ratio is ignored"),
    },
    # CDN and cache alerts (alert_rules/cdn.py) on the CDN exporter's metrics; the cache-hit target
    # and the "enough requests" bar are the exporter's own (exporters.cdn.hit_target, min_requests)
    "cdn": {
        "hit_ratio_for": Field("duration", "10m", minimum=0, help="CdnCacheHitRatioLow"),
        "error_ratio": _ratio(0.05),  # CdnErrorRateHigh: 5xx share at the edge per zone and region
        "error_for": Field("duration", "5m", minimum=0),
        # edge requests/s below which a zone-region is too quiet to judge (errors, latency)
        "min_request_rate": Field("float", 0.5, minimum=0.0),
        "latency": {  # CdnLatencyHigh: p95 edge time to first byte (the mean where the plan has no percentiles)
            "p95_seconds": Field("float", 0.25, minimum=0.001, help="the platform's serving region (and any not below)"),
            # CDN region (asia, europe, north_america, other) -> threshold where it differs; a mapping
            # given in the config replaces this one as a whole (defaults: above the demo edge's p99,
            # docs/demo.md "Edge profile")
            "p95_seconds_by_region": Field("dict", {"europe": 0.6, "north_america": 0.5, "other": 0.75}),
            "for": Field("duration", "10m", minimum=0),
        },
        # OriginOverloaded: Varnish backend failures per client request, or 5xx at the edge nginx
        "origin_failure_ratio": _ratio(0.05),
        "origin_for": Field("duration", "5m", minimum=0),
    },
    # security alerts (alert_rules/security.py) on the security and DB exporters' metrics; TLS
    # thresholds are exporters.security.tls.warning_before/critical_before, the RPO/RTO
    # exporters.security.backup.rpo/rto
    "security": {
        "tls_for": Field("duration", "5m", minimum=0, help="TlsCertExpiringSoon"),
        "waf_blocked_rate": Field("float", 1.0, minimum=0.0, help="WafAttackSurge: blocked requests/s per vhost and class"),
        "waf_for": Field("duration", "2m", minimum=0),
        "auth_failure_rate": Field("float", 1.0, minimum=0.0, help="BruteForceDetected: 401 answers/s per vhost"),
        "recent_bans": Field("int", 5, minimum=1, help="BruteForceDetected: fail2ban bans of a jail within its window"),
        "brute_force_for": Field("duration", "2m", minimum=0),
        # the RPO (5m) is watched on the WAL archive (PostgresWalArchiveStale): what a restore can
        # reach is the last archived segment, not the last backup; backups are daily or hourly
        "backup_max_age": Field("duration", "26h", minimum=60,
                                help="BackupStale: the newest backup (any type) of a stanza older than this"),
        "backup_stale_for": Field("duration", "2m", minimum=0, help="BackupStale: how long it must hold"),
        "replica_lag_for": Field("duration", "1m", minimum=0, help="ReplicaLagHigh: a replica behind by more than the RPO"),
    },
    # reactive and predictive scaling alerts (alert_rules/scaling.py, docs/scaling.md) on the
    # region instances' replica CPU (opsstack_demo_replica_*) and the forecaster's recommendation
    "scaling": {
        "cpu_ratio": _ratio(0.80),          # ScalingCpuHigh: replica CPU over this (the band's top)
        "cpu_for": Field("duration", "5m", minimum=0),
        "scale_in_below": _ratio(0.40),     # ScalingTrafficFalling: replica CPU under this ...
        "scale_in_for": Field("duration", "15m", minimum=0),  # ... while traffic falls, this long
        "predictive_lead": Field("duration", "1h", minimum=60,
                                 help="ScalingBelowForecast: act this long before the next peak starts"),
    },
    "region_down": {
        # the share of a region's service probes that must fail for the region to count as down
        "down_ratio": Field("float", 0.75, minimum=0.01, maximum=1.0),
        "for": Field("duration", "1m", minimum=0),
    },
    # targets of the receiver's outcome KPIs (webhook_receiver/kpis.py, alert_rules/kpi.py): an
    # alert fires when a KPI misses its target for `for`
    "kpi": {
        "uptime_ratio": Field("float", 0.999, minimum=0.5, maximum=1.0, help="uptime per service at least"),
        "mttr": Field("duration", "15m", minimum=1, help="mean time to resolve at most"),
        "mtbf": Field("duration", "720h", minimum=1, help="mean time between failures per service at least"),
        "auto_recovery_ratio": _ratio(0.95),
        "response": Field("duration", "5m", minimum=1, help="mean time to acknowledge or automatic action at most"),
        "for": Field("duration", "30m", minimum=0),
    },
    # automation workflows (alert_rules/automation.py, dashboards/automation.py, docs/automation.md)
    # on the automation exporter's gauges (exporters/automation), computed over its window
    "automation": {
        "error_ratio": _ratio(0.005),  # WorkflowErrorRateHigh: failed / finished runs of all DAGs
        "min_runs": Field("int", 20, minimum=1,
                          help="WorkflowErrorRateHigh: fewer finished runs in the window are not judged"),
        "error_for": Field("duration", "5m", minimum=0),
        # WorkflowStuck: the oldest running run of a DAG older than this ...
        "workflow_sla": Field("duration", "1h", minimum=60, help="WorkflowStuck: oldest running run of a DAG"),
        # ... or than its own SLA here (dag_id -> duration; a DAG that waits for approvals runs
        # for as long as they take: the executive approval SLA plus its own steps)
        "workflow_sla_by_dag": Field("dict", {"event_creation": "26h"}, check=lambda v: _dag_slas(v)),
        # ... or the oldest pending approval of a tier older than its tier's SLA
        "approval_sla": {
            "auto": Field("duration", "5m", minimum=60, help="auto tier approves at once: pending = broken"),
            "manager": Field("duration", "4h", minimum=60),
            "executive": Field("duration", "24h", minimum=60),
        },
        "stuck_for": Field("duration", "5m", minimum=0),
        "scheduler_for": Field("duration", "1m", minimum=0, help="AirflowSchedulerDown"),
        "rate_target": _ratio(0.8),  # AutomationRateLow: share done without a person, per kind
        "rate_for": Field("duration", "30m", minimum=0),
        "processing_target": Field("duration", "15m", minimum=1,
                                   help="the board's target for the mean run duration (manual: hours)"),
    },
    "slo": {
        "availability": Field("float", 0.999, minimum=0.5, maximum=0.99999),
        # minimum-traffic guard: no burn-rate alert for a service that served fewer requests
        # than this in the last hour
        "min_requests_per_hour": Field("int", 600, minimum=0),
        "page_for": Field("duration", "5m", minimum=0),
        "ticket_for": Field("duration", "30m", minimum=0),
    },
}


DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")  # Airflow's dag_id characters


def _dag_slas(value: dict) -> str | None:
    for dag, sla in value.items():
        if not isinstance(dag, str) or not DAG_ID.match(dag):
            return f"{dag!r} is not a DAG id (letters, digits, _ . -)"
        try:
            seconds = parse_duration(sla)
        except ValueError as exc:
            return f"{dag}: {exc}"
        if seconds < 60:
            return f"{dag}: an SLA must be at least 1m, got {sla!r}"
    return None


def check(cfg):
    a = cfg["alerts"]
    regions = cfg["platform"]["regions"]
    for region, value in a["latency"]["p95_seconds_by_region"].items():
        key = f"alerts.latency.p95_seconds_by_region.{region}"
        if region not in regions:
            raise ConfigError(key, f"unknown region (regions: {', '.join(regions)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(key, f"expected a latency in seconds > 0, got {value!r}")
    for region, value in a["cdn"]["latency"]["p95_seconds_by_region"].items():
        key = f"alerts.cdn.latency.p95_seconds_by_region.{region}"
        if region not in CDN_REGIONS:
            raise ConfigError(key, f"unknown CDN region (regions: {', '.join(CDN_REGIONS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(key, f"expected a latency in seconds > 0, got {value!r}")
    for name, value in a["selectors"].items():
        if "{" in value or "}" in value:
            raise ConfigError(f"alerts.selectors.{name}", "write the matchers without braces, e.g. job=\"node\"")
