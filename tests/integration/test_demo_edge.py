"""The demo's edge started by the launcher's own code (stack.launcher.Stack: resolve, render,
supervisord, staged start and readiness) with one demo service: nginx + ModSecurity/CRS, Varnish,
Redis, fail2ban, the fake Cloudflare and the CDN and security exporters. Every layer carries the
load generator's traffic; the edge faults (waf-attack, cert-expiry, origin-overload,
cache-miss-storm) inject through `opsstack demo fault` and heal. One started edge for the module."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from core.config import defaults, load_data
from core.resp import RedisConn, parse_info
from demo import edge
from stack import runtime
from stack.launcher import Stack, supervisord_exe
from tests.support.wait import wait_for

NEEDED = ["nginx", "varnishd", "redis-server", "fail2ban-server"]
MISSING = [b for b in NEEDED if not shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin")]
pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    bool(MISSING) or not edge.MODSEC_MODULE.exists() or not edge.CRS_RULES.exists(),
    reason=f"the edge's packages are missing ({', '.join(MISSING) or 'ModSecurity/CRS'}): scripts/install-deps.sh")]

SERVICE = "shop"
OPSSTACK = str(Path(sys.executable).parent / "opsstack")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    rd = tmp_path_factory.mktemp("edge") / "run"
    cfg = load_data({
        "stack": {"run_dir": str(rd), "startup_timeout": "180s"},
        "platform": {"services": [{"name": SERVICE}]},
        "database": {"embedded": {"backup": {"enabled": False}, "replica": {"enabled": False}}}
        if "backup" in defaults()["database"]["embedded"] else {},
        "demo": {"backfill": 0, "mailsink": False, "requests_per_second": 8.0, "edge": {"requests_share": 1.0}},
        "exporters": {"security": {"tail": {"start_at": "beginning", "poll_interval": "0.2s"}},
                      "cdn": {"cloudflare": {"offset": "2m", "window": "2m"}}},
    })
    st = Stack(cfg)
    r = runtime.resolve(cfg)
    runtime.write_resolved(r)
    wanted = {f"demo-{SERVICE}", "exporter-cdn", "exporter-security"}
    progs = [p for p in st.programs(r) if p.name.startswith("edge-") or p.name in wanted]
    assert {p.name for p in progs} >= {"edge-nginx", "edge-varnish", "edge-redis", "edge-fail2ban",
                                       "edge-cloudflare"} | wanted
    st.render(r, progs)
    res = subprocess.run([supervisord_exe(), "-c", str(st.conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    try:
        wait_for(st.running, timeout=30, what="supervisord")
        for stage in sorted({p.stage for p in progs}):
            st._start_and_wait([p for p in progs if p.stage == stage], lambda _m: None)
        yield st, r
    finally:
        st.down(lambda _m: None)


def cli(r: dict, *args: str) -> subprocess.CompletedProcess:
    f = Path(r["stack"]["run_dir"]) / runtime.RESOLVED_NAME
    return subprocess.run([OPSSTACK, "-c", str(f), "demo", *args], capture_output=True, text=True, timeout=120)


def metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


def sample(text: str, name: str, **labels) -> float | None:
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def listener(r: dict, region: str) -> dict:
    return next(x for x in edge.listeners(r) if x["region"] == region)


def varnishstat(r: dict) -> dict:
    out = subprocess.run(["varnishstat", "-j", "-n", str(edge.paths(r["stack"]["run_dir"])["varnish_work"])],
                         capture_output=True, text=True, timeout=30).stdout
    data = json.loads(out)
    counters = data.get("counters", data)
    return {k: v.get("value", 0) for k, v in counters.items() if isinstance(v, dict)}


def redis_info(r: dict) -> dict:
    with RedisConn(r["exporters"]["cdn"]["redis"]["instances"][0]["url"], timeout=5) as c:
        return parse_info(c.command("INFO", "all"))


def admin(r: dict, method: str, path: str, body: dict | None = None) -> dict:
    port = r["demo"]["ports"][SERVICE]["admin"]
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def get(r: dict, region: str, path: str) -> tuple[int, dict]:
    """One request through nginx; (status, headers)."""
    import http.client

    x = listener(r, region)
    p = edge.paths(r["stack"]["run_dir"])
    conn = (http.client.HTTPSConnection("127.0.0.1", x["port"], timeout=30, context=edge.client_context(p))
            if x["tls"] else http.client.HTTPConnection("127.0.0.1", x["port"], timeout=30))
    try:
        conn.request("GET", path, headers={"Host": x["vhost"], "User-Agent": edge.BROWSER, "Accept": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_the_resolved_config_points_the_exporters_at_the_edge(stack):
    _, r = stack
    p = edge.paths(r["stack"]["run_dir"])
    cdn, sec = r["exporters"]["cdn"], r["exporters"]["security"]
    assert cdn["varnish"]["instances"][0]["workdir"] == str(p["varnish_work"])
    assert cdn["redis"]["instances"][0]["key_prefixes"] == [edge.KEY_PREFIX]
    assert cdn["cloudflare"]["enabled"] and cdn["cloudflare"]["zones"][0]["id"] == edge.ZONE_ID
    tls = {e["name"] for e in sec["tls"]["endpoints"]}
    assert tls == {f"{SERVICE}-{reg}" for reg in edge.tls_regions(r)}
    assert sec["access"]["logs"][0]["path"] == str(p["access_log"])
    assert sec["waf"]["logs"][0]["path"] == str(p["audit_log"])
    assert sec["fail2ban"]["db_path"] == str(p["f2b_db"])
    ports = [x["port"] for x in edge.listeners(r)] + [r["demo"]["edge"]["ports"][k] for k in
                                                       ("varnish", "varnish_admin", "redis", "cloudflare")]
    assert len(set(ports)) == len(ports) == 3 + 4
    assert json.loads((Path(r["stack"]["run_dir"]) / "ports.json").read_text())["edge/redis"] == \
        r["demo"]["edge"]["ports"]["redis"]


def test_every_layer_carries_the_load(stack):
    _, r = stack
    p = edge.paths(r["stack"]["run_dir"])
    admin_port = r["demo"]["ports"][SERVICE]["admin"]

    def loaded():
        lines = p["access_log"].read_text().splitlines()
        vs = varnishstat(r)
        info = redis_info(r)
        m = metrics(f"http://127.0.0.1:{admin_port}/metrics")
        ok = sample(m, "opsstack_demo_loadgen_edge_requests_total", outcome="2xx") or 0
        return (len(lines) >= 20 and vs.get("MAIN.cache_hit", 0) > 0 and vs.get("MAIN.cache_miss", 0) > 0
                and int(info.get("keyspace_hits", 0)) > 0 and int(info.get("keyspace_misses", 0)) > 0
                and ok >= 20) and (lines, vs, info)
    lines, vs, info = wait_for(loaded, timeout=240, interval=1, what="traffic through nginx, varnish and redis")
    vhosts = {json.loads(line)["vhost"] for line in lines}
    assert vhosts <= {x["vhost"] for x in edge.listeners(r)} and len(vhosts) >= 1
    statuses = {json.loads(line)["status"] for line in lines}
    assert statuses <= {200, 404}, statuses  # ModSecurity lets the ordinary load through
    # the keys live under the exporter's prefix
    with RedisConn(r["exporters"]["cdn"]["redis"]["instances"][0]["url"], timeout=5) as c:
        cursor, keys = c.command("SCAN", "0", "COUNT", "1000")
    assert keys and all(k.decode().startswith(edge.KEY_PREFIX) for k in keys)
    # the exporters read them
    host = r["stack"]["host"]

    def exported():
        cdn = metrics(f"http://{host}:{r['stack']['ports']['exporter_cdn']}/metrics")
        sec = metrics(f"http://{host}:{r['stack']['ports']['exporter_security']}/metrics")
        return (sample(cdn, "opsstack_redis_up", instance="demo") == 1
                and sample(cdn, "opsstack_cdn_cloudflare_up") == 1
                and (sample(cdn, "opsstack_varnish_up", instance="demo") or 0) == 1
                and (sample(sec, "opsstack_access_responses_total") or 0) > 0
                and sample(sec, "opsstack_tls_probe_success") == len(edge.tls_regions(r))
                and (cdn, sec))
    cdn, sec = wait_for(exported, timeout=120, interval=1, what="the cdn and security exporters see the edge")
    hit = sample(cdn, "opsstack_cdn_cache_hit_ratio", zone="demo")
    assert hit is None or hit >= 0.9
    # a fresh edge: every certificate more than 30 days from its end, the expiring one too
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    for e in r["exporters"]["security"]["tls"]["endpoints"]:
        left = sample(sec, "opsstack_tls_leaf_not_after_timestamp_seconds", endpoint=e["name"]) - now
        assert left > 30 * 86400, e["name"]
    short = sample(sec, "opsstack_tls_leaf_not_after_timestamp_seconds", endpoint=edge.expiring_endpoint(r)) - now
    assert short < 46 * 86400


def test_waf_attack_is_blocked_and_banned(stack):
    _, r = stack
    p = edge.paths(r["stack"]["run_dir"])
    res = cli(r, "fault", "waf-attack", "--rate", "35", "--region", r["demo"]["home_region"], "--duration", "1s")
    assert res.returncode == 0, res.stderr
    assert "35 x 403" in res.stdout, res.stdout
    audit = wait_for(lambda: [json.loads(x) for x in p["audit_log"].read_text().splitlines()
                              if x.startswith("{")] or None, timeout=60, what="the audit log")
    ids = {m["details"]["ruleId"][:3] for t in audit for m in t["transaction"].get("messages", [])}
    assert {"942", "941", "913", "920"} <= ids, ids
    banned = wait_for(lambda: set(edge.fail2ban_banned(r)[edge.JAIL]) >= set(edge.ATTACKERS)
                      and edge.fail2ban_banned(r), timeout=120, interval=1, what="fail2ban bans the attackers")
    assert set(banned[edge.JAIL]) == set(edge.ATTACKERS)  # the load's own address is never banned
    host = r["stack"]["host"]
    sec = wait_for(lambda: (lambda t: (sample(t, "opsstack_waf_blocked_requests_total", **{"class": "sqli"}) or 0) >= 5
                            and (sample(t, "opsstack_fail2ban_banned", jail=edge.JAIL) or 0) >= 3 and t)(
        metrics(f"http://{host}:{r['stack']['ports']['exporter_security']}/metrics")),
        timeout=120, interval=1, what="the security exporter counts the attack")
    assert (sample(sec, "opsstack_waf_blocked_requests_total", **{"class": "xss"}) or 0) >= 5


def _leaf_days(r: dict, region: str) -> float:
    from cryptography import x509

    x = listener(r, region)
    ctx = edge.client_context(edge.paths(r["stack"]["run_dir"]))
    import socket

    with socket.create_connection(("127.0.0.1", x["port"]), timeout=30) as s, \
            ctx.wrap_socket(s, server_hostname=x["vhost"]) as t:
        der = t.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400


def test_cert_expiry_injects_and_heals(stack):
    _, r = stack
    region = edge.tls_regions(r)[0]
    before = _leaf_days(r, region)
    assert before > 300
    res = cli(r, "fault", "cert-expiry", "--service", SERVICE, "--region", region)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: _leaf_days(r, region) < 7, timeout=60, what="nginx serves the expiring certificate")
    assert get(r, region, "/api/events")[0] == 200  # still valid: clients keep working
    res = cli(r, "heal", "--kind", "cert-expiry")
    assert res.returncode == 0, res.stderr
    assert f"{SERVICE}-{region}" in res.stdout
    wait_for(lambda: _leaf_days(r, region) > 300, timeout=60, what="the good certificate back")
    assert edge.cert_faults(r) == []


def test_origin_overload_is_seen_by_varnish(stack):
    _, r = stack
    home = r["demo"]["home_region"]
    before = varnishstat(r)
    res = cli(r, "fault", "origin-overload", "--region", home, "--rate", "1", "--duration", "5m")
    assert res.returncode == 0, res.stderr
    try:
        codes = []

        def failed_fetch():  # per-user pages are never cached: each one goes to the origin
            codes.append(get(r, home, "/api/me")[0])
            return varnishstat(r).get("MAIN.fetch_failed", 0) > before.get("MAIN.fetch_failed", 0)
        # half the requests stall past Varnish's first-byte timeout (a fetch failure), half fail fast
        wait_for(failed_fetch, timeout=180, interval=0.1, what="a fetch failure in Varnish")
        assert set(codes) == {503}, codes
    finally:
        res = cli(r, "heal", "--kind", "origin-overload")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: get(r, home, "/api/me")[0] == 200, timeout=60, what="the origin healed")


def test_cache_miss_storm_and_the_tag_purge_fix(stack):
    _, r = stack
    home = r["demo"]["home_region"]
    path = "/api/events/7"
    get(r, home, path)
    wait_for(lambda: get(r, home, path)[1].get("x-cache") == "HIT", timeout=60, what="a cached page")
    res = cli(r, "fault", "cache-miss-storm", "--region", home, "--duration", "5m")
    assert res.returncode == 0, res.stderr
    assert "edge: purged tags events" in res.stdout, res.stdout
    try:
        heads = [get(r, home, path)[1] for _ in range(3)]
        assert [h.get("x-cache") for h in heads] == ["MISS"] * 3
        assert all(h.get("x-cache-class") == "none" for h in heads)
    finally:
        res = cli(r, "heal", "--kind", "cache-miss-storm")
    assert res.returncode == 0, res.stderr
    assert "edge: purged tags events" in res.stdout
    get(r, home, path)
    h = wait_for(lambda: (lambda hh: hh.get("x-cache") == "HIT" and hh)(get(r, home, path)[1]), timeout=60,
                 what="the page cached again")
    assert h.get("x-cache-class") == "api" and "event:7" in h.get("xkey", "event:7")
    # the purge function other code calls: drops the tag's objects in Varnish and its keys in Redis
    out = edge.purge_tags(r, ["event:7"])
    assert out["varnish"] >= 1
    assert get(r, home, path)[1].get("x-cache") == "MISS"
