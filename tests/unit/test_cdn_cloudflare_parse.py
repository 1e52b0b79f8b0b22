"""Cloudflare GraphQL answers -> a window (exporters/cdn/cloudflare.py): windows, errors, plan limits,
the colo table; the query is read back by the demo's fake server's GraphQL reader."""
from __future__ import annotations

import pytest

from demo.cloudflare import NODE_FIELDS, parse_query
from exporters.cdn.cloudflare import CloudflareError, build_query, check_errors, parse, window_for
from exporters.cdn.regions import REGIONS, colo_table, region_of

CLASSES = [("static", frozenset({"css", "png"})), ("api", frozenset({"json"}))]


def test_window_is_closed_offset_and_on_whole_minutes():
    start, end = window_for(1_000_000_030.0, 180, 300)
    assert end == 999_999_840.0 and end % 60 == 0 and end <= 1_000_000_030 - 180 and start == end - 300


def test_colo_table_covers_the_four_regions():
    t = colo_table()
    assert set(t.values()) == set(REGIONS) and len(t) > 150
    assert (region_of("NRT"), region_of("fra"), region_of("SJC"), region_of("GRU")) == \
        ("asia", "europe", "north_america", "other")
    assert region_of("XXX") == "other" and region_of(None) == "other"


@pytest.mark.parametrize("quantiles,firewall", [(True, True), (False, False)])
def test_the_query_asks_only_what_cloudflare_knows(quantiles, firewall):
    sel = parse_query(build_query(quantiles, firewall), {"zoneTag": "z", "start": "s", "end": "e"})
    [(_, viewer, _, vsub)] = sel
    [(_, zones, zargs, nodes)] = vsub
    assert (viewer, zones, zargs) == ("viewer", "zones", {"filter": {"zoneTag": "z"}})
    aliases = [a for a, *_ in nodes]
    assert aliases[0] == "traffic" and (("latency_asia" in aliases) == quantiles) and (("firewall" in aliases) == firewall)
    for _alias, node, args, fields in nodes:
        assert set(args["filter"]) >= {"datetime_geq", "datetime_lt"}
        for _a, f, _args, sub in fields:
            known = NODE_FIELDS[node][f]
            assert known is None or {x[1] for x in sub} <= known


def group(colo, status, code, ct, n, b=1000, edge=100.0, origin=200.0):
    return {"count": n, "sum": {"edgeResponseBytes": b}, "avg": {"edgeTimeToFirstByteMs": edge,
                                                                "originResponseDurationMs": origin},
            "dimensions": {"coloCode": colo, "cacheStatus": status, "edgeResponseStatus": code,
                           "edgeResponseContentTypeName": ct}}


def test_parse_sums_by_region_and_class():
    data = {"data": {"viewer": {"zones": [{"traffic": [
        group("NRT", "hit", 200, "css", 90, b=9000, edge=50, origin=0),
        group("NRT", "miss", 200, "css", 10, b=1000, edge=150, origin=300),
        group("ICN", "expired", 502, "json", 5, edge=400, origin=900),
        group("LHR", "hit", 404, "html", 20),
    ], "firewall": [{"count": 7, "dimensions": {"action": "block", "source": "waf"}}]}]}}, "errors": None}
    win, missing = parse(data, 0, 300, CLASSES, "dynamic", {"quantiles": False, "firewall": True})
    assert missing == {}
    s = win.traffic[("asia", "static")]
    assert (s.requests, s.cached, s.bytes, s.cached_bytes) == (100, 90, 10000, 9000)
    assert s.edge_ms == 90 * 50 + 10 * 150 and (s.origin_ms, s.origin_requests) == (3000, 10)
    a = win.traffic[("asia", "api")]
    assert (a.status_5xx, a.statuses) == (5, {"expired": 5})
    assert win.traffic[("europe", "dynamic")].status_4xx == 20
    assert win.firewall == {("block", "waf"): 7} and win.quantiles is None


def test_an_answer_without_the_asked_quantiles_marks_them_missing():
    data = {"data": {"viewer": {"zones": [{"traffic": []}]}}}
    win, missing = parse(data, 0, 300, CLASSES, "dynamic", {"quantiles": True, "firewall": False})
    assert "quantiles" in missing and win.quantiles is None


def test_errors_in_a_200_are_errors_unless_a_plan_limit_on_an_optional_part():
    limited = {"errors": [{"message": "zone 'z' does not have access to the path",
                           "path": ["viewer", "zones", 0, "latency_asia"], "extensions": {"code": "authz"}}]}
    assert set(check_errors(limited)) == {"quantiles"}
    with pytest.raises(CloudflareError) as e:
        check_errors({"errors": [{"message": "unknown field \"x\"", "path": ["viewer"]}], "data": None})
    assert e.value.reason == "graphql_error"
    with pytest.raises(CloudflareError) as e:  # a plan limit on the main node is an error too
        check_errors({"errors": [{"message": "does not have access", "path": ["viewer", "zones", 0, "traffic"],
                                  "extensions": {"code": "authz"}}]})
    assert e.value.reason == "graphql_error"
    with pytest.raises(CloudflareError) as e:
        check_errors({"errors": [{"message": "budget depleted", "extensions": {"code": "ratelimit"}}]})
    assert (e.value.reason, e.value.retry_after) == ("graphql_quota", 300.0)
    assert check_errors({"data": {}, "errors": None}) == {} and check_errors({"data": {}, "errors": []}) == {}


def test_an_answer_without_zones_is_a_bad_response():
    with pytest.raises(CloudflareError) as e:
        parse({"data": None}, 0, 300, CLASSES, "dynamic", {})
    assert e.value.reason == "bad_response"
