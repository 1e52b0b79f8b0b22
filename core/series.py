"""Names of the recorded series: the contract between the rules that record them
(alert_rules/platform.py, alert_rules/slo.py) and the dashboards that plot them. Both sides
import the names from here, so a rename is one edit and neither component imports the other."""
from __future__ import annotations

# platform (alert_rules/platform.py), by service and region
REQUESTS_5M = "service_region:opsstack_http_requests:rate5m"
ERRORS_5M = "service_region:opsstack_http_errors:rate5m"
ERROR_RATIO_5M = "service_region:opsstack_http_error_ratio:rate5m"
BUCKETS_5M = "service_region_le:opsstack_http_request_duration_seconds_bucket:rate5m"
SHARE_5M = "service_region:opsstack_http_requests:share_rate5m"
REGION_SHARE_5M = "region:opsstack_http_requests:share_rate5m"
UPTIME_30D = "service_region:opsstack_probe_up:avg_over_time30d"
SERVICE_UPTIME_30D = "service:opsstack_probe_up:avg_over_time30d"


def latency(q: str) -> str:
    """Latency quantile q (p50, p95, p99) over 5m, by service and region."""
    return f"service_region:opsstack_http_request_duration_seconds:{q}_rate5m"


def availability(window: str) -> str:
    return f"service_region:opsstack_availability:ratio_rate{window}"


# SLO (alert_rules/slo.py), by service
SLO_REQUESTS_5M = "service:opsstack_http_requests:rate5m"
SLO_ERRORS_5M = "service:opsstack_http_errors:rate5m"
SLO_REQUESTS_1H = "service:opsstack_http_requests:increase1h"
SLO_BUDGET_REMAINING = "service:opsstack_slo_error_budget_remaining:ratio30d"


def slo_error_ratio(window: str) -> str:
    return f"service:opsstack_slo_error_ratio:rate{window}"


def slo_budget(cfg: dict) -> float:
    """The error budget of the availability objective (0.001 for 99.9%)."""
    return round(1 - cfg["alerts"]["slo"]["availability"], 10)
