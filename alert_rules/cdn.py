"""CDN and cache alerts on the CDN exporter's metrics (exporters/cdn, docs/metrics.md "CDN and cache").

Cloudflare series are gauges of a closed window (a failed fetch exports none of them, so these
rules go quiet during a Cloudflare API outage: `opsstack_cdn_cloudflare_up` shows that). Labels:
zone, region (asia, europe, north_america, other), class. Varnish series carry `instance`, the
edge nginx's access-log series `vhost`.

- CdnCacheHitRatioLow: the cached share of all classes below ``exporters.cdn.hit_target``,
  judged only where the exporter judged it (``opsstack_cdn_class_below_target``: at least
  ``exporters.cdn.min_requests`` requests in the window), for ``alerts.cdn.hit_ratio_for``.
- CdnErrorRateHigh: 5xx share of a zone-region's edge requests (request-weighted over classes).
- CdnLatencyHigh: p95 edge time to first byte per region (the mean where the zone's plan has no
  percentiles) above ``alerts.cdn.latency.p95_seconds`` (the platform's serving region) or the
  region's own ``p95_seconds_by_region``.
- OriginOverloaded: Varnish cannot get answers from the origin (backend connection failures and
  fetches refused for a sick backend, per client request), or the edge nginx answers 5xx.
"""
from __future__ import annotations

from alert_rules.common import alert, fmt, group
from core.config import format_duration

SERVICE = "cdn"


def _rate(metric: str, w: str, by: str, matchers: str = "") -> str:
    sel = "{" + matchers + "}" if matchers else ""
    return f"sum by ({by}) (rate({metric}{sel}[{w}]))"


def latency_expr(cfg: dict) -> str:
    lat = cfg["alerts"]["cdn"]["latency"]
    special = lat["p95_seconds_by_region"]
    rps = f"sum by (zone, region) (opsstack_cdn_requests_per_second) >= {fmt(cfg['alerts']['cdn']['min_request_rate'])}"

    def part(region_matcher: str, threshold: float) -> str:
        return ("(\n"
                f"  max without (quantile) (opsstack_cdn_edge_response_quantile_seconds{{quantile=\"0.95\",{region_matcher}}})\n"
                f"  or opsstack_cdn_edge_response_seconds{{{region_matcher}}}\n"
                f") > {fmt(threshold)}")

    parts = []
    if special:
        parts.append(part('region!~"' + "|".join(sorted(special)) + '"', lat["p95_seconds"]))
        parts += [part(f'region="{r}"', v) for r, v in sorted(special.items())]
    else:
        parts.append(part('region=~".+"', lat["p95_seconds"]))
    return "(\n" + "\nor\n".join(parts) + "\n)\nand on (zone, region)\n" + rps


def groups(cfg: dict) -> list[dict]:
    c = cfg["exporters"]["cdn"]
    if not c["enabled"]:
        return []
    a = cfg["alerts"]["cdn"]
    team = cfg["alerts"]["team"]
    w = format_duration(cfg["alerts"]["rate_window"])
    minrate = fmt(a["min_request_rate"])
    lat = a["latency"]

    def al(name, expr, **kw):
        return alert(cfg, name, expr, service=SERVICE, team=team, **kw)

    varnish_fail = (f"(\n  {_rate('opsstack_varnish_backend_connection_failures_total', w, 'instance')}\n"
                    f"  + {_rate('opsstack_varnish_backend_unhealthy_total', w, 'instance')}\n)\n"
                    f"/ {_rate('opsstack_varnish_client_requests_total', w, 'instance')}\n"
                    f"> {fmt(a['origin_failure_ratio'])}\n"
                    f"and {_rate('opsstack_varnish_client_requests_total', w, 'instance')} >= {minrate}")
    five = 'status=~"5.."'
    nginx_5xx = (f"{_rate('opsstack_access_responses_total', w, 'vhost', five)}\n"
                 f"/ {_rate('opsstack_access_responses_total', w, 'vhost')}\n"
                 f"> {fmt(a['origin_failure_ratio'])}\n"
                 f"and {_rate('opsstack_access_responses_total', w, 'vhost')} >= {minrate}")
    rules = [
        al("CdnCacheHitRatioLow",
           f'opsstack_cdn_class_cache_hit_ratio{{class="all"}} < {fmt(c["hit_target"])}\n'
           'and on (zone, class) opsstack_cdn_class_below_target{class="all"} == 1',
           severity="warning", tier=2, for_seconds=a["hit_ratio_for"],
           summary="The CDN edge cache serves too small a share of the requests.",
           description="Only {{ $value | humanizePercentage }} of the requests of zone {{ $labels.zone }} were "
                       f"served from the edge cache over the last window (target {c['hit_target']:.0%}, judged "
                       f"above {c['min_requests']} requests); `opsstack cdn report` names the class and why."),
        al("CdnErrorRateHigh",
           'sum by (zone, region) (\n'
           '  opsstack_cdn_error_ratio{code_class="5xx"}\n'
           '  * on (zone, region, class) group_left opsstack_cdn_requests_per_second\n)\n'
           '/ sum by (zone, region) (opsstack_cdn_requests_per_second)\n'
           f'> {fmt(a["error_ratio"])}\n'
           f'and on (zone, region) sum by (zone, region) (opsstack_cdn_requests_per_second) >= {minrate}',
           severity="warning", tier=1, for_seconds=a["error_for"],
           summary="Too many CDN edge requests fail with a server error.",
           description="{{ $value | humanizePercentage }} of the edge requests of zone {{ $labels.zone }} in "
                       f"{{{{ $labels.region }}}} answered 5xx over the last window (threshold {a['error_ratio']:.0%})."),
        al("CdnLatencyHigh", latency_expr(cfg),
           severity="warning", tier=2, for_seconds=lat["for"],
           summary="The CDN edge answers slowly in a region.",
           description="p95 edge time to first byte of zone {{ $labels.zone }} in {{ $labels.region }} is "
                       "{{ $value | humanizeDuration }} (threshold "
                       f"{lat['p95_seconds'] * 1000:g} ms for the serving region; per region: alerts.cdn.latency)."),
        al("OriginOverloaded", varnish_fail,
           severity="critical", tier=1, for_seconds=a["origin_for"],
           summary="Varnish cannot get answers from the origin.",
           description="{{ $value | humanizePercentage }} of the client requests of Varnish {{ $labels.instance }} "
                       "met a backend connection failure or a sick backend over " + w +
                       f" (threshold {a['origin_failure_ratio']:.0%}).",
           labels={"source": "varnish"}),
        al("OriginOverloaded", nginx_5xx,
           severity="critical", tier=1, for_seconds=a["origin_for"],
           summary="Varnish cannot get answers from the origin.",
           description="{{ $value | humanizePercentage }} of the answers of vhost {{ $labels.vhost }} at the edge "
                       f"nginx are 5xx over {w} (threshold {a['origin_failure_ratio']:.0%}): the origin behind "
                       "Varnish fails or is overloaded.",
           labels={"source": "nginx"}),
    ]
    return [group("opsstack-cdn", rules)]
