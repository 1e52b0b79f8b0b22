"""CDN & Cache: the Cloudflare edge, Varnish and Redis (issue 11, scenario 3.2).

Rows: edge (Cloudflare windows: hit ratio per class against its target, edge latency per region
against its region's CdnLatencyHigh threshold, bytes saved, 4xx/5xx, origin time, the API fetch),
Varnish (hit/miss, hit ratio per class, backend health, LRU nukes, bans), Redis (hit ratio,
evictions, memory against maxmemory, clients). Variable: datasource, zone. Thresholds come
from the keys alert_rules/cdn.py uses (`exporters.cdn.hit_target` and classes, `alerts.cdn`).
Cloudflare series are gauges of a closed window (docs/metrics.md): no rate() on them.
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
)

from core.config import format_duration
from dashboards.common import bars as _bars, lines as _lines
from dashboards.common import (
    GREEN,
    RED,
    YELLOW,
    label_variable,
    new_dashboard,
    panel,
    prom,
    reduce_last,
    steps,
    to_model,
    up_down_mappings, with_rows)

UID = "opsstack-cdn-cache"
TITLE = "CDN & Cache"

# every CDN region the exporter labels (exporters/cdn/regions.py; core/schema/alerts.py CDN_REGIONS)
CDN_REGIONS = ("asia", "europe", "north_america", "other")
Z = 'zone=~"$zone"'


def _stat() -> stat.Panel:
    return (stat.Panel().reduce_options(reduce_last()).color_mode(BigValueColorMode.BACKGROUND)
            .graph_mode(BigValueGraphMode.AREA))


def _rate(metric: str, by: str, matchers: str = "") -> str:
    sel = "{" + matchers + "}" if matchers else ""
    return f"sum by ({by}) (rate({metric}{sel}[$__rate_interval]))"


def fmt(x: float) -> str:
    return f"{x:.10f}".rstrip("0").rstrip(".") or "0"


def region_thresholds(cfg: dict) -> dict[str, float]:
    lat = cfg["alerts"]["cdn"]["latency"]
    return {r: float(lat["p95_seconds_by_region"].get(r, lat["p95_seconds"])) for r in CDN_REGIONS}


def edge_latency_expr(matchers: str = Z) -> str:
    """p95 edge time to first byte per zone and region, the mean where the plan has no percentiles
    (the value CdnLatencyHigh compares)."""
    return (f'max without (quantile) (opsstack_cdn_edge_response_quantile_seconds{{quantile="0.95",{matchers}}})\n'
            f"or opsstack_cdn_edge_response_seconds{{{matchers}}}")


def threshold_vector(cfg: dict) -> str:
    """The CdnLatencyHigh threshold of every CDN region as a vector labelled by region."""
    return "\nor ".join(f'label_replace(vector({fmt(v)}), "region", "{r}", "", "")'
                        for r, v in region_thresholds(cfg).items())


def edge(cfg: dict) -> list:
    c = cfg["exporters"]["cdn"]
    a = cfg["alerts"]["cdn"]
    target = c["hit_target"]
    th = region_thresholds(cfg)
    per_region = ", ".join(f"{r} {v * 1000:g} ms" for r, v in th.items())
    return [
        panel(_lines(), "Edge cache hit ratio per class vs target",
              "Cached share of the Cloudflare window's requests per content class and over all classes "
              "(opsstack_cdn_class_cache_hit_ratio; class \"all\" is what CdnCacheHitRatioLow judges "
              f"against the {target:.0%} target when the window has at least {c['min_requests']} requests), "
              "and each class's configured target (opsstack_cdn_cache_policy_hit_target_ratio; classes and "
              "TTLs in exporters.cdn.classes). `opsstack cdn report` says why a class misses.",
              "percentunit",
              [prom(f"opsstack_cdn_class_cache_hit_ratio{{{Z}}}", "{{zone}} {{class}}"),
               prom("opsstack_cdn_cache_policy_hit_target_ratio", "target {{class}}")],
              thresholds=steps([(None, RED), (target, GREEN)]), min_value=0, max_value=1, w=12, h=8),
        panel(_stat(), "Classes below their target",
              "1 when the exporter judged a class (enough requests in the window) and its cached share is "
              "below its target (opsstack_cdn_class_below_target); the reason is "
              "opsstack_cdn_cache_policy_recommendation and `opsstack cdn report`.",
              "none", [prom(f"opsstack_cdn_class_below_target{{{Z}}}", "{{zone}} {{class}}", instant=True)],
              thresholds=steps([(None, GREEN), (1, RED)]), w=6, h=8),
        panel(_stat().graph_mode(BigValueGraphMode.NONE), "Cloudflare API",
              "Last GraphQL fetch of each zone (opsstack_cdn_cloudflare_up: DOWN = the window's series are "
              "missing, not zero) and its age (opsstack_cdn_cloudflare_fetch_age_seconds; fetched at most "
              "every exporters.cdn.cloudflare.min_interval, the window ends cloudflare.offset before now).",
              "none",
              [prom(f"opsstack_cdn_cloudflare_up{{{Z}}}", "{{zone}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=6, h=8).mappings(up_down_mappings()),
        panel(_lines(), "Edge p95 time to first byte per region",
              "p95 edge time to first byte per region over the Cloudflare window "
              "(opsstack_cdn_edge_response_quantile_seconds; the mean opsstack_cdn_edge_response_seconds "
              "where the plan has no percentiles). Dashed: the "
              f"{cfg['alerts']['cdn']['latency']['p95_seconds'] * 1000:g} ms threshold of the platform's serving "
              f"region; CdnLatencyHigh per region ({per_region}) after {format_duration(a['latency']['for'])}.",
              "s", [prom(edge_latency_expr(), "{{zone}} {{region}}")],
              thresholds=steps([(None, GREEN), (a["latency"]["p95_seconds"], RED)]), min_value=0, w=12, h=8),
        panel(_bars(), "Edge latency vs its region's threshold",
              "Edge p95 (or mean) time to first byte of each region over that region's CdnLatencyHigh "
              f"threshold (alerts.cdn.latency: {per_region}); above 1 the alert is pending.",
              "percentunit",
              [prom(f"({edge_latency_expr()})\n/ on (region) group_left () ({threshold_vector(cfg)})",
                    "{{zone}} {{region}}", instant=True)],
              thresholds=steps([(None, GREEN), (0.8, YELLOW), (1, RED)]), min_value=0, w=12, h=8),
        panel(_lines(), "Edge bytes saved",
              "Bytes per second the edge cache served without asking the origin (opsstack_cdn_saved_bytes_per_second) "
              "against all bytes sent (opsstack_cdn_response_bytes_per_second).",
              "Bps",
              [prom(f"sum by (region) (opsstack_cdn_saved_bytes_per_second{{{Z}}})", "{{region}} saved"),
               prom(f"sum(opsstack_cdn_response_bytes_per_second{{{Z}}})", "all regions sent")],
              min_value=0, w=8, h=8),
        panel(_lines(), "Edge 4xx / 5xx share by region",
              "Share of the window's edge requests answered 4xx and 5xx per region, weighted by each "
              "class's requests (opsstack_cdn_error_ratio x opsstack_cdn_requests_per_second). Dashed: "
              f"CdnErrorRateHigh's {a['error_ratio']:.0%} (5xx).",
              "percentunit",
              [prom(f"sum by (region, code_class) (\n  opsstack_cdn_error_ratio{{{Z}}}\n"
                    f"  * on (zone, region, class) group_left opsstack_cdn_requests_per_second{{{Z}}}\n)\n"
                    f"/ on (region) group_left\nsum by (region) (opsstack_cdn_requests_per_second{{{Z}}})",
                    "{{region}} {{code_class}}")],
              thresholds=steps([(None, GREEN), (a["error_ratio"], RED)]), min_value=0, w=8, h=8),
        panel(_lines(), "Origin response time by region",
              "Mean origin response duration of the requests the edge sent to the origin "
              "(opsstack_cdn_origin_response_seconds): rising with edge latency means the origin is slow.",
              "s", [prom(f"opsstack_cdn_origin_response_seconds{{{Z}}}", "{{zone}} {{region}}")],
              min_value=0, w=8, h=8),
    ]


def varnish(cfg: dict) -> list:
    a = cfg["alerts"]["cdn"]
    targets = {k["name"]: (k["hit_target"] if k["hit_target"] is not None else cfg["exporters"]["cdn"]["hit_target"])
               for k in cfg["exporters"]["cdn"]["classes"]}
    tgt = ", ".join(f"{n} {v:.0%}" for n, v in targets.items())
    return [
        panel(_lines().stacking(_stack()), "Varnish lookups: hit / miss / pass",
              "Cache lookups per second by result (opsstack_varnish_cache_lookups_total: hit, miss, hitpass, "
              "hitmiss) and grace hits (served stale while refetching, opsstack_varnish_grace_hits_total).",
              "reqps",
              [prom(_rate("opsstack_varnish_cache_lookups_total", "result"), "{{result}}"),
               prom("sum(rate(opsstack_varnish_grace_hits_total[$__rate_interval]))", "grace hits")],
              min_value=0, w=8, h=8),
        panel(_lines(), "Varnish hit ratio per class",
              "Hits over all requests per content class as varnishncsa sees them "
              "(opsstack_varnish_class_requests_total, X-Cache-Class of the demo's VCL), and over all lookups "
              f"(opsstack_varnish_cache_lookups_total). Class targets: {tgt}.",
              "percentunit",
              [prom(_rate("opsstack_varnish_class_requests_total", "class", 'handling="hit"') + "\n/ "
                    + _rate("opsstack_varnish_class_requests_total", "class"), "{{class}}"),
               prom(_rate("opsstack_varnish_cache_lookups_total", "instance", 'result="hit"') + "\n/ "
                    + _rate("opsstack_varnish_cache_lookups_total", "instance"), "{{instance}} all")],
              thresholds=steps([(None, RED), (min(targets.values()), GREEN)]), min_value=0, max_value=1,
              w=8, h=8),
        panel(_lines(), "Varnish backend health",
              "Backend connections that failed (opsstack_varnish_backend_connection_failures_total), "
              "fetches not tried because the backend was sick (opsstack_varnish_backend_unhealthy_total), "
              "failures per backend (opsstack_varnish_backend_failures_total) against backend requests "
              f"(opsstack_varnish_backend_requests_total). OriginOverloaded above {a['origin_failure_ratio']:.0%} "
              "of the client requests.",
              "reqps",
              [prom(_rate("opsstack_varnish_backend_connection_failures_total", "instance"),
                    "{{instance}} connection failures"),
               prom(_rate("opsstack_varnish_backend_unhealthy_total", "instance"), "{{instance}} sick backend"),
               prom(_rate("opsstack_varnish_backend_failures_total", "backend"), "{{backend}} failures"),
               prom(_rate("opsstack_varnish_backend_requests_total", "backend"), "{{backend}} requests")],
              min_value=0, w=8, h=8),
        panel(_stat(), "Varnish up",
              "varnishstat answered for the instance (opsstack_varnish_up).",
              "none", [prom("opsstack_varnish_up", "{{instance}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=4, h=8).mappings(up_down_mappings()),
        panel(_lines(), "LRU nukes, objects and bans",
              "Objects evicted to make room (opsstack_varnish_lru_nuked_total: the cache is too small), "
              "objects purged by bans and xkey purges (opsstack_varnish_purged_objects_total, "
              "opsstack_varnish_bans_objects_killed_total).",
              "ops",
              [prom(_rate("opsstack_varnish_lru_nuked_total", "instance"), "{{instance}} LRU nuked"),
               prom(_rate("opsstack_varnish_purged_objects_total", "instance"), "{{instance}} purged"),
               prom(_rate("opsstack_varnish_bans_objects_killed_total", "instance"), "{{instance}} killed by bans")],
              min_value=0, w=10, h=8),
        panel(_lines(), "Objects in the cache",
              "Objects Varnish holds (opsstack_varnish_objects) and bans in its ban list (opsstack_varnish_bans).",
              "short",
              [prom("opsstack_varnish_objects", "{{instance}} objects"),
               prom("opsstack_varnish_bans", "{{instance}} bans")],
              min_value=0, w=10, h=8),
    ]


def redis(cfg: dict) -> list:
    return [
        panel(_lines(), "Redis hit ratio",
              "Key lookups that found their key over all lookups (opsstack_redis_keyspace_hits_total / "
              "(hits + opsstack_redis_keyspace_misses_total)); a storm of misses sends reads to the database.",
              "percentunit",
              [prom(f"{_rate('opsstack_redis_keyspace_hits_total', 'instance')}\n/ (\n"
                    f"  {_rate('opsstack_redis_keyspace_hits_total', 'instance')}\n"
                    f"  + {_rate('opsstack_redis_keyspace_misses_total', 'instance')}\n)", "{{instance}}")],
              min_value=0, max_value=1, w=8, h=8),
        panel(_lines(), "Redis evictions and expirations",
              "Keys evicted by maxmemory (opsstack_redis_evicted_keys_total: memory too small for the working "
              "set) and keys expired by their TTL (opsstack_redis_expired_keys_total).",
              "ops",
              [prom(_rate("opsstack_redis_evicted_keys_total", "instance"), "{{instance}} evicted"),
               prom(_rate("opsstack_redis_expired_keys_total", "instance"), "{{instance}} expired")],
              min_value=0, w=8, h=8),
        panel(_lines(), "Redis memory vs maxmemory",
              "Memory used (opsstack_redis_memory_used_bytes) against maxmemory "
              "(opsstack_redis_memory_max_bytes; absent when Redis has no limit).",
              "bytes",
              [prom("opsstack_redis_memory_used_bytes", "{{instance}} used"),
               prom("opsstack_redis_memory_max_bytes", "{{instance}} maxmemory")],
              min_value=0, w=8, h=8),
        panel(_bars(), "Redis memory used",
              "used_memory / maxmemory (opsstack_redis_memory_used_ratio); with allkeys-lru evictions start "
              "at 100%.",
              "percentunit", [prom("opsstack_redis_memory_used_ratio", "{{instance}}", instant=True)],
              thresholds=steps([(None, GREEN), (0.8, YELLOW), (0.95, RED)]), min_value=0, max_value=1, w=12, h=6),
        panel(_stat(), "Redis clients",
              "Connected clients (opsstack_redis_connected_clients) and clients blocked in a blocking call "
              "(opsstack_redis_blocked_clients).",
              "short",
              [prom("opsstack_redis_connected_clients", "{{instance}} connected", instant=True),
               prom("opsstack_redis_blocked_clients", "{{instance}} blocked", instant=True)],
              thresholds=steps([(None, GREEN)]), w=12, h=6),
    ]


def _stack():
    from grafana_foundation_sdk.builders.common import StackingConfig
    from grafana_foundation_sdk.models.common import StackingMode

    return StackingConfig().mode(StackingMode.NORMAL)


ROWS = [
    ("Edge (Cloudflare)", edge),
    ("Varnish", varnish),
    ("Redis", redis),
]


def build(cfg: dict) -> dict:
    d = new_dashboard(
        UID, TITLE,
        description="Cloudflare edge, Varnish and Redis: hit ratio per content class against its target, edge "
                    "latency per region against its threshold, bytes saved, errors, origin health, evictions.",
        tags=["cdn", "cache"],
        variables=[label_variable("zone", "opsstack_cdn_cloudflare_up", title="Zone")],
        time_from="now-3h", refresh="1m")
    return to_model(with_rows(d, ROWS, cfg))
