"""Redis for real: the CDN collector's INFO facts (hit/miss counters, evictions, memory against
maxmemory, clients) on a redis-server of our own with a 2 MB maxmemory (module-scoped, free
port, no persistence), the shared Redis at 127.0.0.1:6379 read only; the redis invalidation
backend's key-pattern delete (SCAN + UNLINK) on keys under a prefix of this test run, cleaned up."""
from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from core.config import load_data, view
from core.procs import free_port, port_open, stop_process
from core.resp import RedisConn, RedisError, parse_info
from exporters.cdn.collector import CdnCollector
from tests.support.wait import wait_for
from webhook_receiver.remediation.backends import BackendError, make
from webhook_receiver.remediation.backends.cache import RateLimiter

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")]

SHARED = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    p = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(d), "--maxmemory", "2mb",
                          "--maxmemory-policy", "allkeys-lru"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for(lambda: p.poll() is None and port_open("127.0.0.1", port), timeout=60, what="redis-server listening")
    yield f"redis://127.0.0.1:{port}/0"
    stop_process(p)


def samples(cfg) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in CdnCollector(view(cfg, "exporters.cdn")).collect() for s in f.samples}


def test_memory_against_maxmemory_evictions_and_hits(own_redis):
    with RedisConn(own_redis) as r:
        r.command("SET", "cache:k", "v")
        r.command("GET", "cache:k")
        r.command("GET", "cache:nope")
        for i in range(300):  # ~3 MB into 2 MB: allkeys-lru evicts
            r.command("SET", f"cache:big:{i}", "x" * 10_000)
    val = samples(load_data({"exporters": {"cdn": {"redis": {"instances": [{"name": "own", "url": own_redis}]}}}}))
    lv = (("instance", "own"),)
    assert val[("opsstack_redis_up", lv)] == 1
    assert val[("opsstack_redis_memory_max_bytes", lv)] == 2 * 1024 * 1024
    assert 0 < val[("opsstack_redis_memory_used_ratio", lv)] <= 1.2
    assert val[("opsstack_redis_evicted_keys_total", lv)] > 0
    assert val[("opsstack_redis_keyspace_hits_total", lv)] >= 1 and val[("opsstack_redis_keyspace_misses_total", lv)] >= 1
    assert val[("opsstack_redis_connected_clients", lv)] >= 1
    assert val[("opsstack_redis_maxmemory_policy_info", (("instance", "own"), ("policy", "allkeys-lru")))] == 1


def test_shared_redis_is_read_and_a_dead_one_is_down():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    val = samples(load_data({"exporters": {"cdn": {"redis": {"instances": [
        {"name": "shared", "url": SHARED}, {"name": "dead", "url": dead}]}}}}))
    assert val[("opsstack_redis_up", (("instance", "shared"),))] == 1
    assert ("opsstack_redis_keyspace_hits_total", (("instance", "shared"),)) in val
    assert val[("opsstack_redis_up", (("instance", "dead"),))] == 0
    assert ("opsstack_redis_connected_clients", (("instance", "dead"),)) not in val
    assert val[("opsstack_exporter_up", (("exporter", "cdn"), ("source", "redis:dead")))] == 0


@pytest.fixture
def keys():
    prefix = f"cache:opsstack-test-{uuid.uuid4().hex[:12]}:"
    with RedisConn(SHARED) as r:
        for ev in (1, 2):
            for part in ("page", "api", "img"):
                r.command("SET", f"{prefix}event:{ev}:{part}", "x", "EX", "600")
    yield prefix
    with RedisConn(SHARED) as r:
        cursor = b"0"
        while True:
            cursor, found = r.command("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000")
            if found:
                r.command("UNLINK", *found)
            if cursor == b"0":
                break


def test_delete_pattern_unlinks_only_the_matching_keys(keys):
    RateLimiter.reset()
    cfg = load_data({"exporters": {"cdn": {
        "redis": {"instances": [{"name": "shared", "url": SHARED, "key_prefixes": [keys]}]},
        "invalidation": {"redis": {"scan_count": 2, "max_calls": 2}}}}})
    be = make("redis", cfg)
    assert be.describe("delete_pattern", {"pattern": keys + "event:1:*"})["method"] == "SCAN MATCH + UNLINK"
    res = be.run("delete_pattern", {"pattern": keys + "event:1:*"}, timeout=10)
    assert res.ok and res.detail == {"deleted": 3}, res.output
    with RedisConn(SHARED) as r:
        assert _left(r, keys) == [f"{keys}event:2:{p}" for p in ("api", "img", "page")]
    with pytest.raises(BackendError, match="not under a key prefix"):
        be.run("delete_pattern", {"pattern": "*"}, timeout=10)
    with pytest.raises(BackendError, match="not under a key prefix"):
        be.run("delete_pattern", {"pattern": keys}, timeout=10)  # the whole prefix: refused
    with pytest.raises(BackendError, match="glob"):
        be.run("delete_pattern", {"pattern": keys + "event:[12]*"}, timeout=10)
    be.run("delete_pattern", {"pattern": keys + "event:9:*"}, timeout=10)
    with pytest.raises(BackendError, match="rate limit"):
        be.run("delete_pattern", {"pattern": keys + "event:2:*"}, timeout=10)
    RateLimiter.reset()


def _left(r, prefix) -> list[str]:
    out, cursor = [], b"0"
    while True:
        cursor, found = r.command("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000")
        out += [k.decode() for k in found]
        if cursor == b"0":
            return sorted(out)


def test_resp_client_reports_errors():
    with RedisConn(SHARED) as r:
        assert "redis_version" in parse_info(r.command("INFO", "server"))
        with pytest.raises(RedisError, match="ERR"):
            r.command("NOSUCHCOMMAND")
