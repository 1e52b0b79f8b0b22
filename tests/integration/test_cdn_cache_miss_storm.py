"""The shipped `cdn-cache-miss-storm` playbook (webhook_receiver/remediation/playbooks/demo.yaml) on
CdnCacheHitRatioLow, through the runner, against a real varnishd (the demo's VCL with xkey tags),
the shared Redis and the demo's fake Cloudflare (which checks the purge API's shape): it purges the
alert's tag from the inside out (Redis keys under cache:<tag>:, Varnish, the Cloudflare zone) and
nothing else, audits every action, plans without acting in a dry run, and stands aside inside its
cooldown."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import uuid
from datetime import datetime, timezone

import psycopg
import pytest
import requests

from core.config import defaults, load_data
from core.procs import binary, free_port, port_open, stop_process
from core.resp import RedisConn
from demo.cloudflare import FakeCloudflare
from demo.varnish_conf import render_vcl, varnishd_argv
from tests.support.fakehttp import FakeHTTP
from tests.support.wait import wait_for
from webhook_receiver.remediation import Alert, Runner, load_playbooks, store
from webhook_receiver.remediation.backends.cache import RateLimiter

VARNISHD = shutil.which("varnishd", path="/usr/sbin:/usr/bin:/sbin")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not VARNISHD, reason="varnishd not installed (scripts/install-deps.sh --test)"),
              pytest.mark.skipif(not shutil.which("redis-server"), reason="redis not installed")]

TOKEN = "cf-storm-token-1"
ZONE_ID = "zone0storm"
REDIS = "redis://127.0.0.1:6379/0"


def _origin(req):
    if req.path.startswith("/events/"):
        ev = req.path.rsplit("/", 1)[-1]
        return 200, f"<html>event {ev}</html>", {"Content-Type": "text/html", "Cache-Tag": f"event-{ev}, events"}
    return 404, "no"


@pytest.fixture(scope="module")
def varnish(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("storm-varnish")
    origin = FakeHTTP({"GET *": _origin}).start()
    host, port = origin.address.rsplit(":", 1)
    (tmp / "opsstack.vcl").write_text(render_vcl(host, int(port)))
    listen = free_port()
    log = open(tmp / "varnishd.log", "wb")
    proc = subprocess.Popen(varnishd_argv(VARNISHD, str(tmp / "work"), f"127.0.0.1:{listen}",
                                          f"127.0.0.1:{free_port()}", str(tmp / "opsstack.vcl"), "malloc,16m"),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: proc.poll() is None and port_open("127.0.0.1", listen), timeout=60, what="varnishd listening")
    yield f"http://127.0.0.1:{listen}"
    stop_process(proc)
    origin.stop()
    log.close()


@pytest.fixture(scope="module")
def cloudflare():
    fake = FakeCloudflare({TOKEN}, {ZONE_ID: "enterprise"})
    port = free_port()
    fake.serve("127.0.0.1", port)
    fake.url = f"http://127.0.0.1:{port}/client/v4"
    yield fake
    fake.close()


@pytest.fixture
def event():
    """A unique event: its Redis keys (and one of another event) and its Varnish objects."""
    ev, other = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    with RedisConn(REDIS) as r:
        for e in (ev, other):
            for part in ("page", "api"):
                r.command("SET", f"cache:event-{e}:{part}", "x", "EX", "600")
    RateLimiter.reset()
    yield ev, other
    RateLimiter.reset()
    with RedisConn(REDIS) as r:
        for e in (ev, other):
            r.command("DEL", f"cache:event-{e}:page", f"cache:event-{e}:api")


def cached(url, path) -> bool:
    return requests.get(url + path, timeout=10).headers.get("X-Cache") == "HIT"


def warm(url, *paths):
    for p in paths:
        requests.get(url + p, timeout=10)
    assert all(cached(url, p) for p in paths)


def redis_keys(ev) -> set[str]:
    with RedisConn(REDIS) as r:
        cursor, found = b"0", set()
        while True:
            cursor, keys = r.command("SCAN", cursor, "MATCH", f"cache:event-{ev}:*", "COUNT", "1000")
            found |= {k.decode() for k in keys}
            if cursor == b"0":
                return found


def purges(cloudflare) -> list[dict]:
    got = requests.get(cloudflare.url.replace("/client/v4", "") + "/_fake/purges", timeout=5).json()["purges"]
    return [{k: v for k, v in p.items() if k != "at"} for p in got]


def config(pg_db, varnish, cloudflare, **remediation):
    cfg = load_data({
        "database": {"url": pg_db},
        "remediation": {"verify_window": "0s", "cooldown": "10m", **remediation},
        "exporters": {"cdn": {
            "cloudflare": {"enabled": True, "api_url": cloudflare.url, "token": TOKEN,
                           "zones": [{"name": "main", "id": ZONE_ID}]},
            "varnish": {"varnishstat": binary("varnishstat"), "instances": [{"name": "edge", "url": varnish}]},
            "redis": {"instances": [{"name": "cache", "url": REDIS, "key_prefixes": ["cache:"]}]},
        }}})
    # the demo playbooks load once `opsstack up` resolved the demo's ports
    cfg["demo"]["ports"] = {s["name"]: {"admin": 4001} for s in defaults()["platform"]["services"][:1]}
    return cfg


def storm_playbook(cfg):
    """The shipped playbook; without a Prometheus here the last purge is not waited for."""
    [pb] = [p for p in load_playbooks(cfg) if p.name == "cdn-cache-miss-storm"]
    return dataclasses.replace(pb, actions=tuple(dataclasses.replace(a, verify_window=0.0) for a in pb.actions))


def storm_alert(ev, minute=0) -> Alert:
    return Alert(labels={"alertname": "CdnCacheHitRatioLow", "zone": "main", "class": "all", "tag": f"event-{ev}",
                         "severity": "warning", "service": "cdn"},
                 fingerprint=f"fp-storm-{ev}", starts_at=datetime(2026, 11, 29, 21, minute, tzinfo=timezone.utc))


def attempts(pg_db, target) -> list[dict]:
    with psycopg.connect(pg_db, row_factory=psycopg.rows.dict_row) as c:
        return c.execute("select step, backend, operation, status, dry_run, command, output from remediation_attempts "
                         "where target = %s order by id", (target,)).fetchall()


def test_the_storm_playbook_purges_only_the_alerts_tag_inside_out(pg_db, varnish, cloudflare, event):
    ev, other = event
    warm(varnish, f"/events/{ev}", f"/events/{other}")
    before = len(purges(cloudflare))
    cfg = config(pg_db, varnish, cloudflare)
    store.migrate_url(pg_db)
    r = Runner(cfg, pg_db, playbooks=[storm_playbook(cfg)], escalate=lambda *a: True)
    out = r.run_alert(storm_alert(ev))
    assert out.playbook == "cdn-cache-miss-storm" and out.target == "cdn-main"
    assert [(a["backend"], a["status"]) for a in out.attempts] == [
        ("redis", "ok"), ("varnish", "ok"), ("cloudflare", "ok")], out
    # only this event's tag, in every layer
    assert redis_keys(ev) == set() and redis_keys(other) == {f"cache:event-{other}:page", f"cache:event-{other}:api"}
    assert not cached(varnish, f"/events/{ev}") and cached(varnish, f"/events/{other}")
    assert purges(cloudflare)[before:] == [{"zone": ZONE_ID, "tags": [f"event-{ev}"]}]
    rows = attempts(pg_db, "cdn-main")
    assert [(a["step"], a["backend"], a["operation"], a["status"], a["dry_run"]) for a in rows] == [
        (1, "redis", "delete_pattern", "ok", False), (2, "varnish", "purge_tag", "ok", False),
        (3, "cloudflare", "purge", "ok", False)]
    assert rows[1]["command"]["headers"] == {"xkey-purge": f"event-{ev}"}
    # nothing here tells it the hit ratio came back (no Prometheus): the ladder is exhausted
    assert out.status == "exhausted" and "no action cleared" in out.reason

    # a second storm of the same zone inside the cooldown: no purge, handed to people
    warm(varnish, f"/events/{ev}")
    again = r.run_alert(storm_alert(ev, minute=5))
    assert again.status == "skipped" and "cooldown" in again.reason
    assert cached(varnish, f"/events/{ev}") and len(purges(cloudflare)) == before + 1


def test_a_dry_run_plans_and_audits_every_purge_and_touches_no_cache(pg_db, varnish, cloudflare, event):
    ev, _ = event
    warm(varnish, f"/events/{ev}")
    before = len(purges(cloudflare))
    cfg = config(pg_db, varnish, cloudflare, dry_run=True)
    store.migrate_url(pg_db)
    r = Runner(cfg, pg_db, playbooks=[storm_playbook(cfg)], escalate=lambda *a: True)
    out = r.run_alert(storm_alert(ev))
    assert out.status == "dry_run"
    assert cached(varnish, f"/events/{ev}") and len(redis_keys(ev)) == 2 and len(purges(cloudflare)) == before
    rows = attempts(pg_db, "cdn-main")
    assert [(a["backend"], a["status"], a["dry_run"]) for a in rows] == [
        ("redis", "dry_run", True), ("varnish", "dry_run", True), ("cloudflare", "dry_run", True)]
    assert rows[1]["command"]["headers"] == {"xkey-purge": f"event-{ev}"}


def test_a_tag_label_that_is_not_a_plain_name_is_refused(pg_db, varnish, cloudflare, event):
    ev, _ = event
    warm(varnish, f"/events/{ev}")
    cfg = config(pg_db, varnish, cloudflare)
    store.migrate_url(pg_db)
    r = Runner(cfg, pg_db, playbooks=[storm_playbook(cfg)], escalate=lambda *a: True)
    bad = storm_alert(ev)
    bad.labels["tag"] = "events\r\nX-Injected: 1"
    assert r.run_alert(bad).status == "refused"
    assert cached(varnish, f"/events/{ev}") and len(redis_keys(ev)) == 2
