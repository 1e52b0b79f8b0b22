"""The monitored platform: recording rules per service and region, service/region/host alerts.

Sources (docs/development.md):
- the probe exporter: ``opsstack_probe_up{service,region}``;
- each service's own /metrics (``alerts.selectors.platform``, target label ``service``):
  ``opsstack_http_requests_total{region,route,code}``,
  ``opsstack_http_request_duration_seconds`` (histogram), ``process_*``,
  ``opsstack_service_{cpu_limit_cores,memory_limit_bytes}``, ``opsstack_volume_{used,capacity}_bytes``;
- node_exporter (``alerts.selectors.node``) for the host.

Recording rules (names level:metric:operations):
- ``service_region:opsstack_http_requests:rate5m``, ``..._errors:rate5m`` (5xx),
  ``service_region:opsstack_http_error_ratio:rate5m``;
- ``service_region:opsstack_http_request_duration_seconds:p50_rate5m`` (p95, p99);
- ``service_region:opsstack_http_requests:share_rate5m`` (a region's share of the service's
  traffic), ``region:opsstack_http_requests:share_rate5m`` (of the platform's);
- ``service_region:opsstack_availability:ratio_rate<W>`` for W in 5m 30m 1h 2h 6h 1d 3d 30d
  (non-5xx / all requests);
- ``service_region:opsstack_probe_up:avg_over_time30d`` and ``service:...`` (30-day uptime).
"""
from __future__ import annotations

from core.config import format_duration
from alert_rules.common import alert, fmt, group, record, selector, team_scopes
from core.series import (BUCKETS_5M, ERROR_RATIO_5M, ERRORS_5M, REGION_SHARE_5M, REQUESTS_5M,  # noqa: F401
                         SERVICE_UPTIME_30D, SHARE_5M, UPTIME_30D, availability, latency)

REQ = "opsstack_http_requests_total"
DUR = "opsstack_http_request_duration_seconds_bucket"
ERR = 'code=~"5.."'
IDLE = 'mode="idle"'
CACHE_HIT = 'result="hit"'
SHORT_WINDOWS = ("30m", "1h", "2h", "6h")
LONG_WINDOWS = ("1d", "3d", "30d")
AVAILABILITY_WINDOWS = ("5m", *SHORT_WINDOWS, *LONG_WINDOWS)
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}

# recording rule names the alerts and dashboards use: core/series.py


def error_ratio_expr(by: str, platform_selector: str, window: str) -> str:
    """5xx / all requests over a window from the raw counters (0 when there are no 5xx series)."""
    total = f"sum by ({by}) (rate({REQ}{selector(platform_selector)}[{window}]))"
    errors = f"sum by ({by}) (rate({REQ}{selector(platform_selector, ERR)}[{window}]))"
    return f"(\n  {errors}\nor\n  0 * {total}\n)\n/\n{total}"


def recording_groups(cfg: dict) -> list[dict]:
    p = cfg["alerts"]["selectors"]["platform"]
    by = "service, region"
    short = [
        record(REQUESTS_5M, f"sum by ({by}) (rate({REQ}{selector(p)}[5m]))"),
        # `or 0 * ...`: a service that never answered 5xx has no 5xx series; its error rate is 0
        record(ERRORS_5M, f"sum by ({by}) (rate({REQ}{selector(p, ERR)}[5m]))\n"
                          f"or\n0 * {REQUESTS_5M}"),
        record(ERROR_RATIO_5M, f"{ERRORS_5M}\n/\n{REQUESTS_5M}"),
        record(BUCKETS_5M, f"sum by ({by}, le) (rate({DUR}{selector(p)}[5m]))"),
        *[record(latency(name), f"histogram_quantile({q}, {BUCKETS_5M})") for name, q in QUANTILES.items()],
        record(SHARE_5M, f"{REQUESTS_5M}\n/ ignoring (region) group_left\nsum by (service) ({REQUESTS_5M})"),
        record(REGION_SHARE_5M, f"sum by (region) ({REQUESTS_5M})\n/ ignoring (region) group_left\n"
                                f"sum({REQUESTS_5M})"),
        record(availability("5m"), f"1 - {ERROR_RATIO_5M}"),
        *[record(availability(w), "1 - (\n" + _indent(error_ratio_expr(by, p, w)) + "\n)") for w in SHORT_WINDOWS],
    ]
    # Long windows from the 5m rates (a traffic-weighted sum), not from the raw counters:
    # a 30-day rate() over every raw series would be evaluated every interval.
    long = [
        *[record(availability(w), f"1 - (\n  sum_over_time({ERRORS_5M}[{w}])\n/\n"
                                  f"  sum_over_time({REQUESTS_5M}[{w}])\n)")
          for w in LONG_WINDOWS],
        record(UPTIME_30D, f"avg by ({by}) (avg_over_time(opsstack_probe_up[30d]))"),
        record(SERVICE_UPTIME_30D, f"avg by (service) ({UPTIME_30D})"),
    ]
    return [group("opsstack-platform-recording", short),
            group("opsstack-platform-recording-long", long, interval="1m")]


def rate_window(cfg: dict) -> str:
    """The window of the threshold alerts' rates (alerts.rate_window, default 5m)."""
    return format_duration(cfg["alerts"]["rate_window"])


def _default_window(cfg: dict) -> bool:
    # with the default window the alerts read the 5m recording rules (cheaper, same numbers)
    return cfg["alerts"]["rate_window"] == 300


def p95(cfg: dict, *matchers: str) -> str:
    if _default_window(cfg):
        return f"{latency('p95')}{selector(*matchers)}"
    p = cfg["alerts"]["selectors"]["platform"]
    return (f"histogram_quantile(0.95, sum by (service, region, le) "
            f"(rate({DUR}{selector(p, *matchers)}[{rate_window(cfg)}])))")


def latency_expr(cfg: dict, scope: str) -> str:
    lat = cfg["alerts"]["latency"]
    special = lat["p95_seconds_by_region"]
    if not special:
        return f"{p95(cfg, scope)} > {fmt(lat['p95_seconds'])}"
    others = 'region!~"' + "|".join(sorted(special)) + '"'
    parts = [f"{p95(cfg, scope, others)} > {fmt(lat['p95_seconds'])}"]
    parts += [f"{p95(cfg, scope, 'region=' + _quote(r))} > {fmt(v)}"
              for r, v in sorted(special.items())]
    return "\nor\n".join(parts)


def error_alert_expr(cfg: dict, scope: str) -> str:
    err = cfg["alerts"]["errors"]
    if _default_window(cfg):
        return (f"{ERROR_RATIO_5M}{selector(scope)} > {fmt(err['ratio'])}\n"
                f"and on (service, region)\n{REQUESTS_5M}{selector(scope)} >= {fmt(err['min_request_rate'])}")
    p = cfg["alerts"]["selectors"]["platform"]
    sel = ",".join(m for m in (p, scope) if m)
    w = rate_window(cfg)
    return (f"(\n{_indent(error_ratio_expr('service, region', sel, w))}\n) > {fmt(err['ratio'])}\n"
            f"and on (service, region)\nsum by (service, region) (rate({REQ}{selector(sel)}[{w}]))"
            f" >= {fmt(err['min_request_rate'])}")


def service_alerts(cfg: dict, team: str, scope: str) -> list[dict]:
    a = cfg["alerts"]
    p = a["selectors"]["platform"]
    svc = "{{ $labels.service }}"
    inst = "{{ $labels.service }} ({{ $labels.instance }})"
    s = a["service"]
    err = a["errors"]
    w = rate_window(cfg)
    return [
        alert(cfg, "ServiceDown", f"opsstack_probe_up{selector(scope)} == 0",
              for_seconds=a["service_down_for"], severity="critical", tier=1, service=svc, team=team,
              summary="A service instance does not answer its health check.",
              description=f"{svc} in region {{{{ $labels.region }}}} has failed every health probe "
                          f"for more than {_dur(a['service_down_for'])}."),
        alert(cfg, "ServiceLatencyHigh", latency_expr(cfg, scope),
              for_seconds=a["latency"]["for"], severity="warning", tier=1, service=svc, team=team,
              summary="API p95 latency is above its target.",
              description=f"p95 latency of {svc} in {{{{ $labels.region }}}} is "
                          f"{{{{ $value | humanizeDuration }}}} (target "
                          f"{_ms(a['latency']['p95_seconds'])}).",),
        alert(cfg, "ServiceErrorRatioHigh", error_alert_expr(cfg, scope),
              for_seconds=err["for"], severity="warning", tier=1, service=svc, team=team,
              summary="Too many requests fail with a server error.",
              description=f"{{{{ $value | humanizePercentage }}}} of the requests to {svc} in "
                          f"{{{{ $labels.region }}}} answer 5xx (threshold "
                          f"{err['ratio']:.0%})."),
        alert(cfg, "CacheHitRatioLow",
              f"sum by (service, region) (rate(opsstack_cache_requests_total{selector(p, scope, CACHE_HIT)}[{w}]))\n"
              f"/ sum by (service, region) (rate(opsstack_cache_requests_total{selector(p, scope)}[{w}]))\n"
              f"< {fmt(a['cache']['hit_ratio'])}\n"
              f"and sum by (service, region) (rate(opsstack_cache_requests_total{selector(p, scope)}[{w}]))\n"
              f">= {fmt(a['cache']['min_request_rate'])}",
              for_seconds=a["cache"]["for"], severity="warning", tier=1, service=svc, team=team,
              summary="The response cache misses most lookups.",
              description=f"Only {{{{ $value | humanizePercentage }}}} of the cache lookups of {svc} in "
                          f"{{{{ $labels.region }}}} hit (threshold {a['cache']['hit_ratio']:.0%}); "
                          f"a cache-miss storm sends every request to the backends."),
        alert(cfg, "ServiceCpuHigh",
              # a service's own CPU accounting when it exports one (the demo counts its cpu-ramp
              # fault at the duty cycle asked for, so the fault fires this on any machine), else
              # the process's CPU time
              f"sum by (service, instance) (\n"
              f"  rate(opsstack_service_cpu_seconds_total{selector(p, scope)}[{w}])\n"
              f"  or rate(process_cpu_seconds_total{selector(p, scope)}[{w}])\n"
              f")\n"
              f"/ on (service, instance)\n"
              f"max by (service, instance) (opsstack_service_cpu_limit_cores{selector(p, scope)})\n"
              f"> {fmt(s['cpu_ratio'])}",
              for_seconds=s["cpu_for"], severity="warning", tier=1, service=svc, team=team,
              summary="A service uses most of its CPU limit.",
              description=f"{inst} uses {{{{ $value | humanizePercentage }}}} of its CPU limit "
                          f"(threshold {s['cpu_ratio']:.0%})."),
        alert(cfg, "ServiceMemoryHigh",
              f"max by (service, instance) (process_resident_memory_bytes{selector(p, scope)})\n"
              f"/ on (service, instance)\n"
              f"max by (service, instance) (opsstack_service_memory_limit_bytes{selector(p, scope)})\n"
              f"> {fmt(s['memory_ratio'])}",
              for_seconds=s["memory_for"], severity="warning", tier=1, service=svc, team=team,
              summary="A service uses most of its memory limit.",
              description=f"{inst} holds {{{{ $value | humanizePercentage }}}} of its memory "
                          f"limit in resident memory (threshold {s['memory_ratio']:.0%})."),
        alert(cfg, "ServiceDiskAlmostFull",
              f"max by (service, instance, volume) (opsstack_volume_used_bytes{selector(p, scope)})\n"
              f"/ on (service, instance, volume)\n"
              f"max by (service, instance, volume) (opsstack_volume_capacity_bytes{selector(p, scope)})\n"
              f"> {fmt(s['disk_ratio'])}",
              for_seconds=s["disk_for"], severity="critical", tier=1, service=svc, team=team,
              summary="A service data volume is almost full.",
              description=f"Volume {{{{ $labels.volume }}}} of {inst} is "
                          f"{{{{ $value | humanizePercentage }}}} full (threshold {s['disk_ratio']:.0%})."),
    ]


def region_alerts(cfg: dict) -> list[dict]:
    a = cfg["alerts"]
    rd = a["region_down"]
    return [
        alert(cfg, "RegionDown",
              f"1 - avg by (region) (opsstack_probe_up) >= {fmt(rd['down_ratio'])}",
              for_seconds=rd["for"], severity="critical", tier=2, service="platform", team=a["team"],
              summary="Most services of a region fail their health checks.",
              description=f"{{{{ $value | humanizePercentage }}}} of the service probes in region "
                          f"{{{{ $labels.region }}}} fail (threshold {rd['down_ratio']:.0%}); "
                          f"traffic should be rerouted to the healthy regions."),
    ]


def host_alerts(cfg: dict) -> list[dict]:
    a = cfg["alerts"]
    n = a["selectors"]["node"]
    fs = a["selectors"]["filesystem"]
    h = a["host"]
    w = rate_window(cfg)
    host = "{{ $labels.instance }}"
    common = {"service": "host", "team": a["team"]}
    return [
        alert(cfg, "HostCpuHigh",
              f"1 - avg by (instance) (rate(node_cpu_seconds_total{selector(n, IDLE)}[{w}]))\n"
              f"> {fmt(h['cpu_ratio'])}",
              for_seconds=h["cpu_for"], severity="warning", tier=1, **common,
              summary="A host's CPUs are busy most of the time.",
              description=f"CPU of {host} is {{{{ $value | humanizePercentage }}}} busy "
                          f"(threshold {h['cpu_ratio']:.0%})."),
        alert(cfg, "HostMemoryHigh",
              f"1 - node_memory_MemAvailable_bytes{selector(n)} / node_memory_MemTotal_bytes{selector(n)}\n"
              f"> {fmt(h['memory_ratio'])}",
              for_seconds=h["memory_for"], severity="warning", tier=1, **common,
              summary="A host is running out of memory.",
              description=f"{host} uses {{{{ $value | humanizePercentage }}}} of its memory "
                          f"(threshold {h['memory_ratio']:.0%})."),
        alert(cfg, "HostDiskAlmostFull",
              f"1 - node_filesystem_avail_bytes{selector(n, fs)} / node_filesystem_size_bytes{selector(n, fs)}\n"
              f"> {fmt(h['disk_ratio'])}",
              for_seconds=h["disk_for"], severity="critical", tier=1, **common,
              summary="A host filesystem is almost full.",
              description=f"Filesystem {{{{ $labels.mountpoint }}}} on {host} is "
                          f"{{{{ $value | humanizePercentage }}}} full (threshold {h['disk_ratio']:.0%})."),
    ]


def groups(cfg: dict) -> list[dict]:
    scopes = team_scopes(cfg)
    out = recording_groups(cfg)
    for team, scope in scopes:
        suffix = "" if len(scopes) == 1 else f"-{team}"
        out.append(group(f"opsstack-platform-services{suffix}", service_alerts(cfg, team, scope)))
    out.append(group("opsstack-platform-regions", region_alerts(cfg)))
    out.append(group("opsstack-hosts", host_alerts(cfg)))
    return out


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _quote(s: str) -> str:
    return '"' + s + '"'


def _dur(seconds: float) -> str:
    return format_duration(seconds)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"
