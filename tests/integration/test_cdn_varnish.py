"""Varnish for real: a varnishd of our own (module-scoped, its own -n workdir, a free loopback
port) with the demo's VCL (demo/varnish/opsstack.vcl: per-class TTLs, xkey tags) in front of a
tiny local origin (the one fake HTTP server). The CDN collector reads it with varnishstat; the
varnish invalidation backend purges and bans through it, also through the playbook runner
(audited): "event updated -> purge only that event's tag"."""
from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import requests
import yaml

from core.config import load_data, view
from core.procs import binary, free_port, port_open, stop_process, wait_http
from demo.cloudflare import FakeCloudflare
from demo.varnish_conf import render_vcl, varnishd_argv
from exporters.cdn.collector import CdnCollector
from tests.support.fakehttp import FakeHTTP
from tests.support.wait import wait_for
from webhook_receiver.remediation import Alert, Runner, store
from webhook_receiver.remediation.backends import BackendError, make
from webhook_receiver.remediation.backends.cache import RateLimiter

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("varnishd", path="/usr/sbin:/usr/bin:/sbin"),
                                 reason="varnishd not installed (scripts/install-deps.sh --test)")]


def _origin_reply(req):
    p = req.path
    if p.startswith("/static/"):
        name = p.rsplit("/", 1)[-1].split(".")[0]
        return 200, f"/* {name} */", {"Content-Type": "text/css", "xkey": f"static asset-{name}"}
    if p.startswith("/api/"):
        return 200, {"path": p}, {"xkey": "api"}
    if p.startswith("/events/"):
        ev = p.rsplit("/", 1)[-1]
        return 200, f"<html>event {ev}</html>", {"Content-Type": "text/html", "Cache-Tag": f"event-{ev}, events"}
    return 404, "no"


class Varnish:
    def __init__(self, tmp):
        self.origin = FakeHTTP({"GET *": _origin_reply}).start()
        self.workdir = str(tmp / "work")
        self.port, admin = free_port(), free_port()
        vcl = tmp / "opsstack.vcl"
        host, port = self.origin.address.rsplit(":", 1)
        vcl.write_text(render_vcl(host, int(port)))
        self.log = open(tmp / "varnishd.log", "wb")
        argv = varnishd_argv(shutil.which("varnishd", path="/usr/sbin:/usr/bin:/sbin"), self.workdir,
                             f"127.0.0.1:{self.port}", f"127.0.0.1:{admin}", str(vcl), "malloc,32m")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self.proc.poll() is None and port_open("127.0.0.1", self.port), timeout=60,
                 what="varnishd listening")
        wait_for(lambda: subprocess.run([binary("varnishstat"), "-j", "-n", self.workdir], capture_output=True,
                                        timeout=10).returncode == 0, timeout=60, what="varnishstat answering")

    def get(self, path):
        return requests.get(self.url + path, timeout=10)

    def stop(self):
        stop_process(self.proc)
        self.origin.stop()
        self.log.close()


@pytest.fixture(scope="module")
def varnish(tmp_path_factory):
    v = Varnish(tmp_path_factory.mktemp("varnish"))
    yield v
    v.stop()


def cdn_cfg(v, **inval):
    return load_data({"exporters": {"cdn": {
        "varnish": {"varnishstat": binary("varnishstat"),
                    "instances": [{"name": "edge", "workdir": v.workdir, "url": v.url}]},
        "invalidation": {"varnish": {"max_calls": 100, "per": "1m", **inval}}}}})


@pytest.fixture(autouse=True)
def _fresh_limits():
    RateLimiter.reset()
    yield
    RateLimiter.reset()


def cached(v, path) -> bool:
    return v.get(path).headers.get("X-Cache") == "HIT"


def warm(v, *paths):
    for p in paths:
        v.get(p)
    for p in paths:
        assert cached(v, p), p


def test_vcl_gives_each_class_its_ttl(varnish):
    for path, cls, ttl in (("/static/site.css", "static", 7 * 86400), ("/api/events", "api", 300),
                           ("/events/77", "dynamic", 60)):
        varnish.get(path)
        r = varnish.get(path)
        assert r.headers["X-Cache"] == "HIT" and r.headers["X-Cache-Class"] == cls
        assert ttl - 30 <= float(r.headers["X-Cache-TTL"]) <= ttl
        assert "x-url" not in r.headers and "x-cache-tags" not in r.headers


def test_collector_reads_the_real_varnishstat(varnish):
    warm(varnish, "/static/a.css", "/static/b.css")
    c = CdnCollector(view(cdn_cfg(varnish), "exporters.cdn"))
    fams = {f.name: f for f in c.collect()}
    val = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert val[("opsstack_varnish_up", (("instance", "edge"),))] == 1
    assert val[("opsstack_varnish_cache_lookups_total", (("instance", "edge"), ("result", "hit")))] >= 2
    assert val[("opsstack_varnish_cache_lookups_total", (("instance", "edge"), ("result", "miss")))] >= 2
    assert val[("opsstack_varnish_objects", (("instance", "edge"),))] >= 2
    assert val[("opsstack_varnish_backend_connections_total", (("instance", "edge"),))] >= 1
    assert ("opsstack_varnish_backend_requests_total", (("backend", "default"), ("instance", "edge"))) in val
    assert val[("opsstack_exporter_up", (("exporter", "cdn"), ("source", "varnish:edge")))] == 1


def test_a_missing_instance_is_down_not_an_error(varnish, tmp_path):
    cfg = load_data({"exporters": {"cdn": {"varnish": {"varnishstat": binary("varnishstat"), "timeout": "3s",
                                                       "instances": [{"name": "gone", "workdir": str(tmp_path)}]}}}})
    fams = {f.name: f for f in CdnCollector(view(cfg, "exporters.cdn")).collect()}
    assert [s.value for s in fams["opsstack_varnish_up"].samples] == [0]
    assert "opsstack_varnish_cache_lookups" not in fams or not fams["opsstack_varnish_cache_lookups"].samples


def test_xkey_purge_removes_only_that_tag(varnish):
    warm(varnish, "/events/1", "/events/2", "/static/x.css")
    be = make("varnish", cdn_cfg(varnish))
    assert be.describe("purge_tag", {"tag": "event-1"})["headers"] == {"xkey-purge": "event-1"}
    res = be.run("purge_tag", {"tag": "event-1"}, timeout=10)
    assert res.ok, res.output
    assert "Purged 1 objects" in res.output
    assert not cached(varnish, "/events/1")
    assert cached(varnish, "/events/2") and cached(varnish, "/static/x.css")


def test_ban_by_tag_and_by_prefix(varnish):
    warm(varnish, "/events/3", "/events/4", "/static/y.css", "/api/list")
    be = make("varnish", cdn_cfg(varnish))
    assert be.run("ban", {"tag": "event-3"}, timeout=10).ok
    assert not cached(varnish, "/events/3") and cached(varnish, "/events/4")
    assert be.run("ban", {"prefix": "/static/"}, timeout=10).ok
    assert not cached(varnish, "/static/y.css") and cached(varnish, "/api/list")
    with pytest.raises(BackendError, match="not a plain name"):
        be.run("purge_tag", {"tag": "x\r\nX-Evil: 1"}, timeout=10)
    with pytest.raises(BackendError, match="not a URL path"):
        be.run("ban", {"prefix": "/a/../b"}, timeout=10)


def test_invalidation_is_rate_limited_per_provider(varnish):
    be = make("varnish", cdn_cfg(varnish, max_calls=2))
    assert be.run("purge_tag", {"tag": "nothing-1"}, timeout=10).ok
    assert be.run("purge_tag", {"tag": "nothing-2"}, timeout=10).ok
    with pytest.raises(BackendError, match="rate limit"):
        be.run("purge_tag", {"tag": "nothing-3"}, timeout=10)


def test_event_updated_purges_only_its_tag_through_the_runner(varnish, pg_db):
    """A playbook action names the varnish backend; the runner renders the tag from the alert's
    label, runs it, audits it; only that event's objects leave the cache."""
    warm(varnish, "/events/10", "/events/11")
    cfg = load_data({**cdn_cfg(varnish), "database": {"url": pg_db}, "remediation": {
        "verify_window": "0s", "escalate_on_failure": False,
        "playbooks": [{"name": "event-updated", "match": {"alertname": "EventUpdated"}, "target": "event-{event}",
                       "actions": [{"name": "purge-event", "backend": "varnish", "operation": "purge_tag",
                                    "params": {"tag": "event-{event}"}}]}]}})
    store.migrate_url(pg_db)
    r = Runner(cfg, pg_db, escalate=lambda *a: True)
    alert = Alert(labels={"alertname": "EventUpdated", "event": "10", "severity": "info"}, fingerprint="fp-ev-10",
                  starts_at=datetime(2026, 11, 29, 20, 0, tzinfo=timezone.utc))
    out = r.run_alert(alert)
    assert out.attempts and out.attempts[0]["status"] == "ok", out
    assert not cached(varnish, "/events/10") and cached(varnish, "/events/11")
    with psycopg.connect(pg_db, row_factory=psycopg.rows.dict_row) as c:
        [att] = c.execute("select backend, operation, status, command, output from remediation_attempts").fetchall()
    assert (att["backend"], att["operation"], att["status"]) == ("varnish", "purge_tag", "ok")
    assert att["command"]["headers"] == {"xkey-purge": "event-10"} and "Purged 1 objects" in att["output"]
    # a label that is not a plain name never reaches the header
    bad = Alert(labels={"alertname": "EventUpdated", "event": "1 2", "severity": "info"}, fingerprint="fp-bad",
                starts_at=datetime(2026, 11, 29, 20, 1, tzinfo=timezone.utc))
    assert r.run_alert(bad).status == "refused"
    # dry run: planned and audited, nothing purged
    cfg["remediation"]["dry_run"] = True
    dry = Runner(cfg, pg_db, escalate=lambda *a: True)
    warm(varnish, "/events/12")
    out = dry.run_alert(Alert(labels={"alertname": "EventUpdated", "event": "12", "severity": "info"},
                              fingerprint="fp-ev-12", starts_at=datetime(2026, 11, 29, 20, 2, tzinfo=timezone.utc)))
    assert out.status == "dry_run" and cached(varnish, "/events/12")
    with psycopg.connect(pg_db, row_factory=psycopg.rows.dict_row) as c:
        row = c.execute("select status, dry_run, command from remediation_attempts where target = 'event-12'").fetchone()
    assert (row["status"], row["dry_run"], row["command"]["headers"]) == ("dry_run", True, {"xkey-purge": "event-12"})


def test_opsstack_exporter_cdn_serves_all_sources_and_promtool_accepts_it(varnish, tmp_path):
    """`opsstack exporter cdn` as a process: Cloudflare (the demo's fake), this varnishd, the
    shared Redis (read only); /metrics passes `promtool check metrics`."""
    fake = FakeCloudflare({"cf-SECRET-tok-77"}, {"abc123": "free"})
    cf_port, port = free_port(), free_port()
    fake.serve("127.0.0.1", cf_port)
    token = tmp_path / "cf_token"
    token.write_text("cf-SECRET-tok-77\n")
    conf = tmp_path / "opsstack.yaml"
    conf.write_text(yaml.safe_dump({"stack": {"run_dir": str(tmp_path / ".run"), "ports": {"exporter_cdn": port}},
                                    "exporters": {"cdn": {
                                        "cloudflare": {"enabled": True, "token_file": str(token),
                                                       "api_url": f"http://127.0.0.1:{cf_port}/client/v4",
                                                       "zones": [{"name": "main", "id": "abc123"}]},
                                        "varnish": {"varnishstat": binary("varnishstat"),
                                                    "instances": [{"name": "edge", "workdir": varnish.workdir}]},
                                        "redis": {"instances": [{"name": "shared", "url": "redis://127.0.0.1:6379/0"}]}}}}))
    p = subprocess.Popen([str(Path(sys.executable).with_name("opsstack")), "-c", str(conf), "exporter", "cdn"],
                         stdout=subprocess.DEVNULL, stderr=open(tmp_path / "exporter.log", "wb"))
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60, proc=p)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        for line in ('opsstack_cdn_cloudflare_up{zone="main"} 1.0', 'opsstack_varnish_up{instance="edge"} 1.0',
                     'opsstack_redis_up{instance="shared"} 1.0',
                     'opsstack_cdn_cloudflare_available{field="quantiles",zone="main"} 0.0'):
            assert line in text, line
        assert "cf-SECRET-tok-77" not in (tmp_path / "exporter.log").read_text()
        res = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        stop_process(p)
        fake.close()


def test_requests_per_class_and_handling_from_varnishncsa(varnish):
    cfg = cdn_cfg(varnish)
    cfg["exporters"]["cdn"]["varnish"]["varnishncsa"] = binary("varnishncsa")
    c = CdnCollector(view(cfg, "exporters.cdn"))
    c.start()
    try:
        wait_for(lambda: c.class_logs["edge"].running, timeout=30, what="varnishncsa running")

        def counts():
            for path in ("/static/ncsa.css", "/api/ncsa", "/events/ncsa"):
                varnish.get(path)
            val = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in c.collect() for s in f.samples}
            got = {dict(k[1])["class"] + ":" + dict(k[1])["handling"]: v for k, v in val.items()
                   if k[0] == "opsstack_varnish_class_requests_total"}
            return got if all(got.get(f"{cls}:hit", 0) >= 1 and got.get(f"{cls}:miss", 0) >= 1
                              for cls in ("static", "api", "dynamic")) else None
        got = wait_for(counts, timeout=60, what="hits and misses of every class counted")
        assert set(got) <= {f"{c_}:{h}" for c_ in ("static", "api", "dynamic")
                            for h in ("hit", "miss", "pass", "pipe", "synth", "other")}
    finally:
        c.close()
    assert not c.class_logs["edge"].running


def test_varnishncsa_dies_with_a_killed_exporter(varnish, tmp_path):
    conf = tmp_path / "opsstack.yaml"
    port = free_port()
    conf.write_text(yaml.safe_dump({"stack": {"run_dir": str(tmp_path / ".run"), "ports": {"exporter_cdn": port}},
                                    "exporters": {"cdn": {"varnish": {
                                        "varnishstat": binary("varnishstat"), "varnishncsa": binary("varnishncsa"),
                                        "instances": [{"name": "edge", "workdir": varnish.workdir}]}}}}))
    p = subprocess.Popen([str(Path(sys.executable).with_name("opsstack")), "-c", str(conf), "exporter", "cdn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60, proc=p)
        children = wait_for(lambda: _children(p.pid), timeout=30, what="varnishncsa child")
    finally:
        p.kill()
        p.wait()
    wait_for(lambda: not any(Path(f"/proc/{c}").exists() and "varnishncsa" in _cmdline(c) for c in children),
             timeout=30, what="varnishncsa gone with its exporter")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid and "varnishncsa" in _cmdline(int(d.name)):
                out.append(int(d.name))
    return out
