"""A real demo service process: its API, metrics, load and every fault's real effect + heal."""
from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.demo import REGIONS, DemoProcess, afternoon_timezone, opsstack_argv
from core.procs import binary
from tests.support.wait import wait_for

MIB = 1024 * 1024
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = DemoProcess(tmp_path_factory.mktemp("demo"), service="user-app",
                    services=[{"name": "user-app", "memory_limit_bytes": 192 * MIB, "cpu_limit_cores": 1.0}],
                    requests_per_second=6.0, time_acceleration=60.0, volume_capacity_bytes=24 * MIB,
                    timezone=afternoon_timezone())  # its peak rate, whatever the hour the tests run
    d.start()
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def healed(demo):
    yield
    demo.admin("POST", "/admin/heal", {})
    demo.admin("POST", "/admin/route/restore", {})


def get(url: str, timeout: float = 10) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:  # reset or timed out while the listener is being closed (a busy machine): not yet
        return False




def samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(demo, name: str, **labels) -> float:
    return samples(demo.metrics()).get((name, tuple(sorted(labels.items())),), 0.0)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fault(demo, kind, **body):
    status, res = demo.admin("POST", "/admin/faults", {"kind": kind, **body})
    assert status == 201, res
    return res["fault"]


# ------------------------------------------------------------------ basics
def test_health_metrics_and_promtool(demo):
    assert get(demo.url("admin", "/health"))[0] == 200
    for r in REGIONS:
        status, headers, _ = get(demo.url(r, "/health"))
        assert status == 200 and headers["X-Served-By"] == f"user-app/{r}"
    text = demo.metrics()
    for name in ("opsstack_http_requests_total", "opsstack_http_request_duration_seconds",
                 "opsstack_active_sessions", "opsstack_user_requests_total", "opsstack_service_memory_limit_bytes",
                 "opsstack_service_cpu_limit_cores", "opsstack_volume_used_bytes", "opsstack_volume_capacity_bytes",
                 "opsstack_demo_fault_active", "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "opsstack_cache_requests_total"):
        assert f"# TYPE {name} " in text, name
    res = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    s = samples(text)
    assert s[("opsstack_service_memory_limit_bytes", ())] == 192 * MIB
    assert s[("opsstack_volume_capacity_bytes", (("volume", "data"),))] == 24 * MIB


def test_load_generator_sends_real_labelled_traffic(demo):
    def counted():
        s = samples(demo.metrics())
        user = {k: v for k, v in s.items() if k[0] == "opsstack_user_requests_total"}
        return user if sum(user.values()) >= 10 else None

    user = wait_for(counted, timeout=30)
    for (_, labels), _v in user.items():
        d = dict(labels)
        assert d["client"] in ("mobile", "web") and d["geo"] in ("capital", "provinces", "overseas")
        assert d["region"] in REGIONS
        assert (d["region"] == "seoul") == (d["geo"] != "overseas")
    sess = {k: v for k, v in samples(demo.metrics()).items() if k[0] == "opsstack_active_sessions"}
    assert len(sess) == 6 and all(v >= 0 for v in sess.values()) and sum(sess.values()) > 0


def test_admin_api_refuses_bad_input(demo):
    assert demo.admin("POST", "/admin/faults", {"kind": "nope"})[0] == 400
    assert demo.admin("POST", "/admin/faults", {"kind": "error-burst", "rate": 3})[0] == 400
    assert demo.admin("POST", "/admin/faults", {})[0] == 400
    assert demo.admin("POST", "/admin/route", {"healthy": []})[0] == 400
    assert demo.admin("POST", "/admin/route", {"healthy": ["mars"]})[0] == 400
    assert demo.admin("GET", "/admin/nothing")[0] == 404
    status, body = demo.admin("GET", "/admin/faults")
    assert status == 200 and body["active"] == [] and "memory-leak" in body["kinds"]


# ------------------------------------------------------------------ faults
def test_service_down_closes_the_region_sockets_and_heal_reopens(demo):
    fault(demo, "service-down")
    for r in REGIONS:
        assert wait_for(lambda r=r: refused(demo.ports[r]))
    assert get(demo.url("admin", "/health"))[0] == 200  # the control plane stays up
    assert value(demo, "opsstack_demo_fault_active", kind="service-down", region="all") == 1
    assert value(demo, "opsstack_demo_listener_up", region="seoul") == 0
    demo.admin("POST", "/admin/heal", {"kind": "service-down"})
    for r in REGIONS:
        assert get(demo.url(r, "/health"))[0] == 200


def test_service_down_of_one_region_and_replace_brings_it_back(demo):
    fault(demo, "service-down", region="tokyo")
    assert wait_for(lambda: refused(demo.ports["tokyo"]))
    assert get(demo.url("seoul", "/health"))[0] == 200
    status, body = demo.admin("POST", "/admin/replace", {"region": "tokyo"})
    assert status == 200 and body["replaced"] == ["tokyo"]
    assert get(demo.url("tokyo", "/health"))[0] == 200
    assert value(demo, "opsstack_demo_instance_replacements_total", region="tokyo") >= 1


def test_error_burst_answers_5xx_and_heal_restores(demo):
    fault(demo, "error-burst", rate=1.0)
    codes = [get(demo.url("seoul", "/api/me"))[0] for _ in range(5)]
    assert all(c in (500, 503) for c in codes), codes
    assert get(demo.url("seoul", "/health"))[0] == 200  # /health stays shallow
    s = samples(demo.metrics())
    assert sum(v for (n, lb), v in s.items() if n == "opsstack_http_requests_total"
               and dict(lb)["code"].startswith("5")) >= 5
    demo.admin("POST", "/admin/heal", {"kind": "error-burst"})
    assert get(demo.url("seoul", "/api/me"))[0] == 200


def test_error_burst_share_is_bounded_by_rate(demo):
    fault(demo, "error-burst", rate=0.5, region="singapore")
    # 40 requests, 8 at a time (each waits the region's latency; the demo serves in threads)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: get(demo.url("singapore", "/api/me"))[0], range(40)))
    assert 0 < sum(c >= 500 for c in codes) < 40
    assert get(demo.url("seoul", "/api/me"))[0] == 200  # other regions untouched


def test_latency_spike_adds_the_delay(demo):
    fault(demo, "latency-spike", rate="400ms", region="seoul")
    t0 = time.monotonic()
    assert get(demo.url("seoul", "/api/me"))[0] == 200
    assert time.monotonic() - t0 >= 0.4 + 0.095 * 0.5  # injected delay + the region's own (>= half its mean)


def test_region_outage_fails_one_region_route_away_and_restore(demo):
    fault(demo, "region-outage", region="seoul")
    assert get(demo.url("seoul", "/health"))[0] == 503
    assert get(demo.url("tokyo", "/health"))[0] == 200
    status, body = demo.admin("POST", "/admin/route", {"healthy": ["singapore", "tokyo"]})
    assert status == 200 and body["healthy"] == ["singapore", "tokyo"]
    status, headers, _ = get(demo.url("seoul", "/health"))  # probes of seoul are now served elsewhere
    assert status == 200 and headers["X-Served-By"] == "user-app/singapore"
    assert value(demo, "opsstack_demo_route_healthy", region="seoul") == 0
    demo.admin("POST", "/admin/route/restore", {})
    assert get(demo.url("seoul", "/health"))[0] == 503
    demo.admin("POST", "/admin/replace", {"region": "seoul"})  # a new instance does not have the fault
    assert get(demo.url("seoul", "/health"))[0] == 200


def test_cache_miss_storm_and_purge(demo):
    for _ in range(3):
        assert get(demo.url("tokyo", "/api/events/7"))[0] == 200
    hits0 = value(demo, "opsstack_cache_requests_total", region="tokyo", result="hit")
    assert hits0 >= 2
    status, body = demo.admin("POST", "/admin/cache/purge", {"tags": ["event:7"], "region": "tokyo"})
    assert status == 200 and body["purged"] == 1
    fault(demo, "cache-miss-storm", region="tokyo")
    miss0 = value(demo, "opsstack_cache_requests_total", region="tokyo", result="miss")
    for _ in range(4):
        get(demo.url("tokyo", "/api/events/7"))
    assert value(demo, "opsstack_cache_requests_total", region="tokyo", result="miss") >= miss0 + 4


def test_cpu_ramp_burns_real_cpu_and_heal_stops_it(demo):
    fault(demo, "cpu-ramp", rate=1.0)  # reaches the cap within a second
    c0 = cpu_seconds(demo.pid)
    wait_for(lambda: cpu_seconds(demo.pid) - c0 >= 1.5, timeout=20)
    assert value(demo, "opsstack_demo_cpu_ramp_duty_ratio") > 0.5
    demo.admin("POST", "/admin/heal", {"kind": "cpu-ramp"})
    wait_for(lambda: value(demo, "opsstack_demo_cpu_ramp_duty_ratio") == 0)


@pytest.mark.parametrize("cycle", [1, 2])  # a second leak + heal frees its memory as well
def test_memory_leak_grows_resident_memory_up_to_the_cap_and_heal_frees_it(demo, cycle):
    base = rss(demo.pid)
    fault(demo, "memory-leak", rate="128MiB")
    wait_for(lambda: value(demo, "opsstack_demo_memory_leak_bytes") >= 192 * MIB, timeout=20)
    assert rss(demo.pid) >= base + 150 * MIB
    time.sleep(0.6)
    assert value(demo, "opsstack_demo_memory_leak_bytes") == 192 * MIB  # capped by memory_limit_bytes
    assert value(demo, "process_resident_memory_bytes") >= 192 * MIB
    demo.admin("POST", "/admin/heal", {"kind": "memory-leak"})
    wait_for(lambda: rss(demo.pid) < base + 50 * MIB)


def test_disk_fill_writes_real_files_up_to_the_cap_and_heal_deletes_them(demo):
    vol = demo.workdir / "run" / "demo-volumes" / "user-app"
    fault(demo, "disk-fill", rate="32MiB")
    cap = int(24 * MIB * 0.97)
    wait_for(lambda: value(demo, "opsstack_volume_used_bytes", volume="data") >= cap, timeout=20)
    time.sleep(0.6)
    on_disk = sum(p.stat().st_size for p in vol.iterdir())
    assert on_disk == value(demo, "opsstack_volume_used_bytes", volume="data") == cap
    status, body = demo.admin("POST", "/admin/volume/cleanup", {})
    assert status == 200 and body["freed_bytes"] == cap
    assert list(vol.iterdir()) == []


def test_faults_expire_by_themselves(demo):
    fault(demo, "error-burst", rate=1.0, duration=1)
    wait_for(lambda: demo.admin("GET", "/admin/faults")[1]["active"] == [], timeout=10)
    assert get(demo.url("seoul", "/api/me"))[0] == 200


# ------------------------------------------------------------------ CLI against the running process
def cli(demo, *args):
    return subprocess.run(opsstack_argv() + ["-c", str(demo.config_file), "demo", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_fault_and_heal(demo):
    res = cli(demo, "fault", "service-down", "--service", "user-app")
    assert res.returncode == 0, res.stderr
    assert wait_for(lambda: refused(demo.ports["seoul"]))
    res = cli(demo, "faults", "--active")
    assert res.returncode == 0 and "service-down" in res.stdout
    res = cli(demo, "heal")
    assert res.returncode == 0 and "healed service-down" in res.stdout
    assert get(demo.url("seoul", "/health"))[0] == 200
    res = cli(demo, "fault", "error-burst", "--rate", "7")
    assert res.returncode == 2 and "between 0 and 1" in res.stderr


def test_cli_serve_refuses_an_unknown_service(demo):
    res = cli(demo, "serve", "--service", "nope")
    assert res.returncode == 2 and "unknown service 'nope'" in res.stderr


def test_cli_says_clearly_when_the_stack_is_not_running(tmp_path):
    cfg = tmp_path / "opsstack.yaml"
    cfg.write_text(f"stack: {{run_dir: {tmp_path / 'run'}}}\n")
    res = subprocess.run(opsstack_argv() + ["-c", str(cfg), "demo", "fault", "service-down"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1 and "not running" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run(opsstack_argv() + ["-c", str(cfg), "demo", "faults"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "memory-leak" in res.stdout


def test_time_acceleration_moves_the_diurnal_load(tmp_path):
    with DemoProcess(tmp_path, service="gate-management", load=False, time_acceleration=36000.0) as d:
        seen = set()
        for _ in range(8):  # 0.3 s apart = 3 simulated hours
            seen.add(round(value(d, "opsstack_demo_load_factor"), 3))
            time.sleep(0.3)
        assert len(seen) >= 3 and max(seen) > 1.0 > min(seen)
