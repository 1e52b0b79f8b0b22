"""The CDN exporter against the demo's fake Cloudflare API (demo/cloudflare.py, a real HTTP server
on loopback): closed offset windows exported as gauges, errors in a 200, plan limits exported as
unavailable, one API call per min_interval whatever the scrape rate, 401/403/429, and the
cloudflare purge backend."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client import generate_latest

from core.config import load_data, view
from core.exporter import registry_for
from core.procs import free_port, stop_process, wait_http
from demo.cloudflare import PROFILE, FakeCloudflare
from exporters.cdn.cli import report
from exporters.cdn.cloudflare import iso
from exporters.cdn.collector import CdnCollector
from tests.support.wait import wait_for
from webhook_receiver.remediation.backends import BackendError, make
from webhook_receiver.remediation.backends.cache import RateLimiter

pytestmark = pytest.mark.integration

TOKEN = "cf-token-SECRET-5e1"
ZONES = {"abc123": "pro", "free999": "free"}


class Clock:
    def __init__(self):
        self.t = 1_800_000_000.0
        self.m = 1000.0

    def now(self):
        return self.t

    def mono(self):
        return self.m

    def advance(self, s):
        self.t += s
        self.m += s


@pytest.fixture
def fake():
    f = FakeCloudflare({TOKEN}, ZONES, seed=42)
    port = free_port()
    f.serve("127.0.0.1", port)
    f.url = f"http://127.0.0.1:{port}/client/v4"
    yield f
    f.close()


def cfg(fake, zones=(("main", "abc123"),), token=TOKEN, **cf):
    return load_data({"exporters": {"cdn": {"cloudflare": {
        "enabled": True, "api_url": fake.url, "token": token, "zones": [{"name": n, "id": i} for n, i in zones],
        **cf}}}})


def samples(collector) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples}


def series(val, name, **labels):
    return {k: v for k, v in val.items() if k[0] == name and all((lk, lv) in k[1] for lk, lv in labels.items())}


def test_a_scrape_exports_the_closed_offset_window_as_gauges(fake):
    clock = Clock()
    fake.clock = clock.now
    c = CdnCollector(view(cfg(fake), "exporters.cdn"), clock=clock.now, monotonic=clock.mono)
    val = samples(c)
    end = val[("opsstack_cdn_window_end_timestamp_seconds", (("zone", "main"),))]
    start = val[("opsstack_cdn_window_start_timestamp_seconds", (("zone", "main"),))]
    assert end == clock.t - 180 - (clock.t - 180) % 60 and end - start == 300
    assert val[("opsstack_cdn_cloudflare_up", (("zone", "main"),))] == 1
    rps = series(val, "opsstack_cdn_requests_per_second", zone="main")
    assert {dict(k[1])["region"] for k in rps} == set(PROFILE)
    assert {dict(k[1])["class"] for k in rps} == {"static", "api", "dynamic"}
    # the same answer as the fake gives for that window, divided by its width
    q = {"query": "query { viewer { zones(filter: {zoneTag: \"abc123\"}) { httpRequestsAdaptiveGroups(limit: 10, "
                  f"filter: {{datetime_geq: \"{_iso(start)}\", datetime_lt: \"{_iso(end)}\"}}) {{ count }} }} }} }}"}
    total = requests.post(fake.url + "/graphql", json=q, headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=10).json()["data"]["viewer"]["zones"][0]["httpRequestsAdaptiveGroups"][0]["count"]
    assert sum(rps.values()) == pytest.approx(total / 300)
    hit = series(val, "opsstack_cdn_class_cache_hit_ratio", zone="main", **{"class": "all"})
    assert 0.9 < list(hit.values())[0] < 0.96  # the demo profile's ~93% (docs/demo.md "Edge profile")
    edge = {dict(k[1])["region"]: v for k, v in series(val, "opsstack_cdn_edge_response_seconds").items()}
    assert edge["asia"] < edge["north_america"] < edge["europe"] < edge["other"]
    p95 = series(val, "opsstack_cdn_edge_response_quantile_seconds", zone="main", region="asia", quantile="0.95")
    assert list(p95.values())[0] > edge["asia"]
    assert series(val, "opsstack_cdn_firewall_events_per_second", zone="main")
    assert val[("opsstack_cdn_cloudflare_available", (("field", "quantiles"), ("zone", "main")))] == 1
    for k, v in series(val, "opsstack_cdn_error_ratio").items():
        assert 0 <= v < 0.05, k
    # gauges of a window, never counters built by adding: the next window replaces them
    clock.advance(60)
    val2 = samples(c)
    assert val2[("opsstack_cdn_window_end_timestamp_seconds", (("zone", "main"),))] == end + 60
    assert sum(series(val2, "opsstack_cdn_requests_per_second").values()) == pytest.approx(sum(rps.values()), rel=0.1)


def _iso(ts):
    return iso(ts)


def test_the_api_is_asked_at_most_once_per_min_interval(fake):
    clock = Clock()
    fake.clock = clock.now
    c = CdnCollector(view(cfg(fake, min_interval="60s"), "exporters.cdn"), clock=clock.now, monotonic=clock.mono)
    for _ in range(5):
        samples(c)
        clock.advance(10)
    assert fake.graphql_requests == 1
    val = samples(c)  # 50 s after the fetch
    assert val[("opsstack_cdn_cloudflare_fetch_age_seconds", (("zone", "main"),))] == pytest.approx(50)
    clock.advance(10)
    samples(c)
    assert fake.graphql_requests == 2


def test_a_free_plan_exports_percentiles_as_unavailable_never_zero(fake):
    clock = Clock()
    fake.clock = clock.now
    c = CdnCollector(view(cfg(fake, zones=(("free", "free999"),)), "exporters.cdn"), clock=clock.now,
                     monotonic=clock.mono)
    val = samples(c)
    assert val[("opsstack_cdn_cloudflare_up", (("zone", "free"),))] == 1
    assert val[("opsstack_cdn_cloudflare_available", (("field", "quantiles"), ("zone", "free")))] == 0
    assert not series(val, "opsstack_cdn_edge_response_quantile_seconds")
    assert not series(val, "opsstack_cdn_origin_response_quantile_seconds")
    assert series(val, "opsstack_cdn_edge_response_seconds", zone="free")  # the means are there
    # the next query leaves the refused part out: no error in the answer any more
    clock.advance(61)
    val = samples(c)
    assert val[("opsstack_cdn_cloudflare_available", (("field", "quantiles"), ("zone", "free")))] == 0
    assert c.zones[0].asked(clock.mono())["quantiles"] is False


def test_errors_in_a_200_fail_the_window_and_no_stale_values_are_exported(fake):
    clock = Clock()
    fake.clock = clock.now
    c = CdnCollector(view(cfg(fake), "exporters.cdn"), clock=clock.now, monotonic=clock.mono)
    assert series(samples(c), "opsstack_cdn_requests_per_second")
    orig = fake.graphql

    def broken(token, req):
        resp = orig(token, req)
        body = json.loads(resp.body)
        body["errors"] = [{"message": "internal: query timed out", "path": ["viewer", "zones", 0, "traffic"],
                           "extensions": {"code": "timeout"}}]
        resp.body = json.dumps(body).encode()
        return resp
    fake.graphql = broken
    clock.advance(61)
    val = samples(c)
    assert val[("opsstack_cdn_cloudflare_up", (("zone", "main"),))] == 0
    assert val[("opsstack_cdn_cloudflare_error", (("reason", "graphql_error"), ("zone", "main")))] == 1
    assert val[("opsstack_exporter_up", (("exporter", "cdn"), ("source", "cloudflare:main")))] == 0
    for name in ("opsstack_cdn_requests_per_second", "opsstack_cdn_cache_hit_ratio",
                 "opsstack_cdn_window_end_timestamp_seconds", "opsstack_cdn_class_cache_hit_ratio"):
        assert not series(val, name), name


def test_bad_tokens(fake, tmp_path):
    r = requests.post(fake.url + "/graphql", json={"query": "{ viewer { zones { x } } }"}, timeout=10)
    assert r.status_code == 401 and r.json()["success"] is False and r.json()["errors"][0]["code"] == 10000
    empty = tmp_path / "empty_token"
    empty.write_text("\n")
    for c, reason in ((cfg(fake, token=None, token_file=str(empty)), "http_401"),
                      (cfg(fake, token="wrong-token"), "http_403")):
        val = samples(CdnCollector(view(c, "exporters.cdn")))
        assert val[("opsstack_cdn_cloudflare_error", (("reason", reason), ("zone", "main")))] == 1
        assert val[("opsstack_cdn_cloudflare_up", (("zone", "main"),))] == 0


def test_token_from_a_file(fake, tmp_path):
    f = tmp_path / "cf_token"
    f.write_text(TOKEN + "\n")
    clock = Clock()
    fake.clock = clock.now
    c = CdnCollector(view(cfg(fake, token=None, token_file=str(f)), "exporters.cdn"), clock=clock.now,
                     monotonic=clock.mono)
    assert samples(c)[("opsstack_cdn_cloudflare_up", (("zone", "main"),))] == 1
    f.unlink()  # read at each fetch: a missing file is a fetch error, not a crash
    clock.advance(61)
    val = samples(c)
    assert val[("opsstack_cdn_cloudflare_error", (("reason", "token_unreadable"), ("zone", "main")))] == 1
    assert TOKEN not in repr(view(cfg(fake), "exporters.cdn"))


def test_rate_limited_waits_for_retry_after(fake):
    clock = Clock()
    fake.clock = clock.now
    fake.budget = 6  # one fetch (traffic + 4 latency + firewall)
    c = CdnCollector(view(cfg(fake, min_interval="10s"), "exporters.cdn"), clock=clock.now, monotonic=clock.mono)
    assert samples(c)[("opsstack_cdn_cloudflare_up", (("zone", "main"),))] == 1
    clock.advance(11)
    val = samples(c)
    assert val[("opsstack_cdn_cloudflare_error", (("reason", "rate_limited"), ("zone", "main")))] == 1
    assert not series(val, "opsstack_cdn_requests_per_second")
    n = fake.graphql_requests
    clock.advance(60)  # Retry-After (~290 s) not over yet: no call
    samples(c)
    assert fake.graphql_requests == n
    clock.advance(300)
    assert samples(c)[("opsstack_cdn_cloudflare_up", (("zone", "main"),))] == 1


def test_report_names_the_class_below_its_target(fake):
    clock = Clock()
    fake.clock = clock.now
    c = CdnCollector(view(load_data({"exporters": {"cdn": {
        "cloudflare": {"enabled": True, "api_url": fake.url, "token": TOKEN, "zones": [{"name": "main", "id": "abc123"}]},
        "hit_target": 0.95,  # the profile serves ~93% overall
        "classes": [{"name": "static", "ttl": "7d", "content_types": ["css", "js", "png"], "hit_target": 0.9},
                    {"name": "api", "ttl": "5m", "content_types": ["json"], "hit_target": 0.95},
                    {"name": "dynamic", "ttl": "1m", "content_types": ["html"], "hit_target": 0.5}]}}}),
        "exporters.cdn"), clock=clock.now, monotonic=clock.mono)
    entries, code = report(c)
    assert code == 1
    by = {x["class"]: x for x in entries[0]["classes"]}
    assert not by["static"]["below"] and not by["dynamic"]["below"]
    assert by["api"]["below"] and by["api"]["reason"] in ("ttl_too_short", "cold_misses") and by["all"]["below"]
    val = samples(c)
    assert series(val, "opsstack_cdn_cache_policy_recommendation", zone="main", **{"class": "api"})
    assert val[("opsstack_cdn_class_below_target", (("class", "static"), ("zone", "main")))] == 0


def test_cloudflare_purge_by_tag_prefix_url(fake):
    RateLimiter.reset()
    c = cfg(fake)
    c["exporters"]["cdn"]["invalidation"]["cloudflare"]["max_calls"] = 3
    be = make("cloudflare", c)
    assert be.run("purge", {"zone": "main", "tags": "event-42"}, timeout=10).ok
    assert be.run("purge", {"zone": "main", "prefixes": ["www.example.com/events/42"]}, timeout=10).ok
    assert be.run("purge", {"zone": "main", "files": ["https://www.example.com/events/42.html"]}, timeout=10).ok
    got = requests.get(fake.url.replace("/client/v4", "") + "/_fake/purges", timeout=5).json()["purges"]
    assert [{k: v for k, v in p.items() if k != "at"} for p in got] == [
        {"zone": "abc123", "tags": ["event-42"]}, {"zone": "abc123", "prefixes": ["www.example.com/events/42"]},
        {"zone": "abc123", "files": ["https://www.example.com/events/42.html"]}]
    with pytest.raises(BackendError, match="rate limit"):
        be.run("purge", {"zone": "main", "tags": "event-43"}, timeout=10)
    RateLimiter.reset()
    with pytest.raises(BackendError, match="not allowed"):
        be.run("purge", {"zone": "main", "purge_everything": True}, timeout=10)
    with pytest.raises(BackendError, match="not a configured zone"):
        be.run("purge", {"zone": "other", "tags": "x"}, timeout=10)
    assert "refused" in be.describe("purge", {"zone": "main", "tags": "a b"})
    RateLimiter.reset()


def test_the_fake_runs_as_a_process(tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "demo.cloudflare", "--port", str(port), "--token-file", str(tok),
                          "--zone", "abc123:free"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=p)
        c = CdnCollector(view(load_data({"exporters": {"cdn": {"cloudflare": {
            "enabled": True, "api_url": f"http://127.0.0.1:{port}/client/v4", "token": TOKEN,
            "zones": [{"name": "main", "id": "abc123"}]}}}}), "exporters.cdn"))
        out = generate_latest(registry_for(c)).decode()
        assert 'opsstack_cdn_cloudflare_up{zone="main"} 1.0' in out
        assert 'opsstack_cdn_cloudflare_available{field="quantiles",zone="main"} 0.0' in out
    finally:
        stop_process(p)


def test_opsstack_cdn_report_command(fake, tmp_path):
    conf = tmp_path / "opsstack.yaml"
    conf.write_text(json.dumps({"stack": {"run_dir": str(tmp_path / ".run")}, "exporters": {"cdn": {
        "cloudflare": {"enabled": True, "api_url": fake.url, "token": TOKEN, "zones": [{"name": "main", "id": "abc123"}]},
        "hit_target": 0.99}}}))
    exe = str(Path(sys.executable).with_name("opsstack"))
    p = subprocess.run([exe, "-c", str(conf), "cdn", "report"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr  # overall 0.99 missed
    assert "zone main:" in p.stdout and "all classes:" in p.stdout and "below" in p.stdout
    p = subprocess.run([exe, "-c", str(conf), "cdn", "report", "--json"], capture_output=True, text=True, timeout=120)
    [entry] = json.loads(p.stdout)
    assert {c["class"] for c in entry["classes"]} == {"static", "api", "dynamic", "all"}
    assert TOKEN not in p.stdout + p.stderr


def test_in_the_server_fetches_run_in_the_background_and_scrapes_never_wait(fake):
    import threading

    release = threading.Event()
    orig = fake.graphql
    calls = []

    def slow(token, req):
        calls.append(1)
        if len(calls) > 1:
            release.wait(30)
        return orig(token, req)
    fake.graphql = slow
    c = CdnCollector(view(cfg(fake), "exporters.cdn"))
    c.start()
    try:
        assert samples(c)[("opsstack_cdn_cloudflare_up", (("zone", "main"),))] == 1
        c.zones[0].state.next_allowed = 0.0  # due now: the refresher calls and hangs in the fake
        wait_for(lambda: len(calls) == 2, timeout=30, what="second fetch started")
        t0 = time.monotonic()
        val = samples(c)  # served from the kept window while the fetch hangs
        assert time.monotonic() - t0 < 5
        assert val[("opsstack_cdn_cloudflare_up", (("zone", "main"),))] == 1
        assert series(val, "opsstack_cdn_requests_per_second")
    finally:
        release.set()
        c.close()


def test_before_the_first_fetch_the_zone_is_pending(fake):
    c = CdnCollector(view(cfg(fake), "exporters.cdn"))
    c._thread = object()  # as if the refresher had not finished its first fetch
    val = samples(c)
    assert val[("opsstack_cdn_cloudflare_error", (("reason", "pending"), ("zone", "main")))] == 1
    assert not series(val, "opsstack_cdn_requests_per_second")


def _post(fake, query, token=TOKEN, variables=None):
    return requests.post(fake.url + "/graphql", json={"query": query, "variables": variables or {}},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_the_fake_answers_like_cloudflare(fake):
    win = 'filter: {datetime_geq: "2027-01-15T08:00:00Z", datetime_lt: "2027-01-15T08:05:00Z"}'
    fake.clock = lambda: 1_800_000_000.0 + 86400 * 3
    q = (f'{{ viewer {{ zones(filter: {{zoneTag: "abc123"}}) {{ httpRequestsAdaptiveGroups(limit: 100, {win}) '
         '{ count dimensions { coloCode } } } } }')
    ok = _post(fake, q)
    assert ok.status_code == 200 and ok.json()["errors"] is None
    groups = ok.json()["data"]["viewer"]["zones"][0]["httpRequestsAdaptiveGroups"]
    assert {g["dimensions"]["coloCode"] for g in groups} >= {"NRT", "FRA", "SJC", "GRU"}
    assert _post(fake, q).json() == ok.json()  # deterministic from the seed and the window
    other = FakeCloudflare({TOKEN}, ZONES, seed=7, clock=fake.clock)
    assert other._node("abc123", "httpRequestsAdaptiveGroups", {"limit": 100, "filter": {
        "datetime_geq": "2027-01-15T08:00:00Z", "datetime_lt": "2027-01-15T08:05:00Z"}},
        [("count", "count", {}, None)], []) != groups  # another seed, other traffic
    bad = _post(fake, f'{{ viewer {{ zones(filter: {{zoneTag: "abc123"}}) {{ httpRequestsAdaptiveGroups(limit: 10, {win}) '
                      '{ count sum { notAField } } } } }')
    assert bad.status_code == 200 and bad.json()["data"] is None and "notAField" in bad.json()["errors"][0]["message"]
    syntax = _post(fake, "{ viewer { zones(filter: {zoneTag: \"abc123\"}) { ")
    assert syntax.status_code == 200 and syntax.json()["errors"][0]["message"].startswith("Syntax Error")
    plan = _post(fake, f'{{ viewer {{ zones(filter: {{zoneTag: "free999"}}) {{ '
                       f't: httpRequestsAdaptiveGroups(limit: 1, {win}) {{ count }} '
                       f'q: httpRequestsAdaptiveGroups(limit: 1, {win}) {{ quantiles {{ edgeTimeToFirstByteMsP95 }} }} }} }} }}')
    body = plan.json()
    assert body["data"]["viewer"]["zones"][0]["q"] is None and body["data"]["viewer"]["zones"][0]["t"]
    assert body["errors"][0]["extensions"]["code"] == "authz" and body["errors"][0]["path"][-1] == "q"
    assert _post(fake, "{ viewer { zones { x } } }", token="nope").status_code == 403


def test_a_plan_limit_that_leaves_no_data_fails_once_then_asks_without_it(fake):
    clock = Clock()
    fake.clock = clock.now
    orig = fake.graphql

    def strict(token, req):  # a zone whose plan refuses the whole query when quantiles are asked
        resp = orig(token, req)
        body = json.loads(resp.body)
        if body.get("errors"):
            body["data"] = None
        resp.body = json.dumps(body).encode()
        return resp
    fake.graphql = strict
    c = CdnCollector(view(cfg(fake, zones=(("free", "free999"),)), "exporters.cdn"), clock=clock.now,
                     monotonic=clock.mono)
    val = samples(c)
    assert val[("opsstack_cdn_cloudflare_error", (("reason", "plan_limited"), ("zone", "free")))] == 1
    assert not series(val, "opsstack_cdn_requests_per_second")
    clock.advance(61)
    val = samples(c)
    assert val[("opsstack_cdn_cloudflare_up", (("zone", "free"),))] == 1
    assert val[("opsstack_cdn_cloudflare_available", (("field", "quantiles"), ("zone", "free")))] == 0
    assert series(val, "opsstack_cdn_requests_per_second") and not series(val, "opsstack_cdn_edge_response_quantile_seconds")
