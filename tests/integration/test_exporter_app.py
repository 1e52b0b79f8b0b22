"""`opsstack exporter app` against real demo instances, a hanging target, a dead one and TLS."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.procs import binary, free_port
from tests.support.demo import REGIONS, AppExporterProcess, DemoProcess
from tests.support.fakehttp import FakeHTTP

pytestmark = pytest.mark.integration
PROBE_TIMEOUT = 1.0
SCRAPE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = DemoProcess(tmp_path_factory.mktemp("demo-exp"), service="user-app", load=False)
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def hanging_port():
    """Accepts TCP connections (kernel backlog) but never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "k.pem", d / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "42", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    end = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-enddate"], check=True,
                         capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    not_after = datetime.strptime(end, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc).timestamp()

    with FakeHTTP({"GET *": (200, b"ok")}, tls=(crt, key)) as srv:
        yield srv.url, str(crt), not_after


@pytest.fixture(scope="module")
def exporter(tmp_path_factory, demo, hanging_port, tls_server):
    url, ca, _ = tls_server
    services = [
        {"name": "user-app", "endpoints": demo.endpoints},
        {"name": "gate-management", "endpoints": {"seoul": f"http://127.0.0.1:{hanging_port}",
                                                  "tokyo": f"http://127.0.0.1:{free_port()}"}},
        {"name": "event-management", "endpoints": {"seoul": url}},
    ]
    e = AppExporterProcess(tmp_path_factory.mktemp("exp"), services, probe_timeout=f"{PROBE_TIMEOUT}s",
                           scrape_timeout=f"{SCRAPE_TIMEOUT}s", tls_ca_file=ca)
    e.start()
    yield e
    e.stop()


def parse(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def v(s, name, **labels):
    return s.get((name, tuple(sorted(labels.items()))))


def test_probes_every_endpoint_and_a_hanging_one_does_not_hold_the_scrape(exporter):
    # the scrape must finish within the scrape timeout although one target never answers
    text = exporter.scrape(timeout=SCRAPE_TIMEOUT)
    s = parse(text)
    for r in REGIONS:
        assert v(s, "opsstack_probe_up", service="user-app", region=r) == 1
        assert v(s, "opsstack_probe_http_status_code", service="user-app", region=r) == 200
        for phase in ("dns", "connect", "tls", "first_byte", "total"):
            assert v(s, "opsstack_probe_duration_seconds", service="user-app", region=r, phase=phase) is not None
        assert v(s, "opsstack_probe_latency_seconds_count", service="user-app", region=r) >= 1
    assert v(s, "opsstack_probe_up", service="gate-management", region="seoul") == 0  # hangs
    assert v(s, "opsstack_probe_http_status_code", service="gate-management", region="seoul") == 0
    assert v(s, "opsstack_probe_duration_seconds", service="gate-management", region="seoul",
             phase="total") >= PROBE_TIMEOUT * 0.99
    assert v(s, "opsstack_probe_duration_seconds", service="gate-management", region="seoul",
             phase="first_byte") is None
    assert v(s, "opsstack_probe_timed_out", service="gate-management", region="seoul") == 1
    assert v(s, "opsstack_probe_up", service="gate-management", region="tokyo") == 0  # refused
    assert v(s, "opsstack_probe_timed_out", service="gate-management", region="tokyo") == 0
    assert all(v(s, "opsstack_probe_timed_out", service="user-app", region=r) == 0 for r in REGIONS)
    assert v(s, "opsstack_exporter_up", exporter="app", source="probes") == 1
    assert v(s, "opsstack_exporter_scrape_duration_seconds", exporter="app") is not None


def test_https_target_reports_tls_phase_and_certificate_expiry(exporter, tls_server):
    _, _, not_after = tls_server
    s = parse(exporter.scrape(timeout=SCRAPE_TIMEOUT))
    assert v(s, "opsstack_probe_up", service="event-management", region="seoul") == 1
    assert v(s, "opsstack_probe_tls_cert_expiry_timestamp_seconds", service="event-management",
             region="seoul") == not_after
    assert v(s, "opsstack_probe_duration_seconds", service="event-management", region="seoul", phase="tls") > 0


def test_promtool_check_metrics_passes(exporter):
    text = exporter.scrape(timeout=SCRAPE_TIMEOUT)
    res = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_demo_faults_show_in_the_probes(exporter, demo):
    assert demo.admin("POST", "/admin/faults", {"kind": "service-down", "region": "tokyo"})[0] == 201
    assert demo.admin("POST", "/admin/faults", {"kind": "region-outage", "region": "singapore"})[0] == 201
    try:
        deadline = time.monotonic() + 10
        while True:
            s = parse(exporter.scrape(timeout=SCRAPE_TIMEOUT))
            if v(s, "opsstack_probe_up", service="user-app", region="tokyo") == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert v(s, "opsstack_probe_up", service="user-app", region="tokyo") == 0
        assert v(s, "opsstack_probe_http_status_code", service="user-app", region="tokyo") == 0
        assert v(s, "opsstack_probe_up", service="user-app", region="singapore") == 0
        assert v(s, "opsstack_probe_http_status_code", service="user-app", region="singapore") == 503
        assert v(s, "opsstack_probe_up", service="user-app", region="seoul") == 1
    finally:
        demo.admin("POST", "/admin/heal", {})
    s = parse(exporter.scrape(timeout=SCRAPE_TIMEOUT))
    assert all(v(s, "opsstack_probe_up", service="user-app", region=r) == 1 for r in REGIONS)


def test_many_hanging_targets_cost_one_probe_timeout(tmp_path, demo):
    socks = []
    try:
        for _ in range(9):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            socks.append(s)
        services = [{"name": "user-app", "endpoints": demo.endpoints}]
        for i in range(3):
            services.append({"name": f"hang-{i}", "endpoints": {
                r: f"http://127.0.0.1:{socks[3 * i + j].getsockname()[1]}" for j, r in enumerate(REGIONS)}})
        with AppExporterProcess(tmp_path, services, probe_timeout=f"{PROBE_TIMEOUT}s",
                                scrape_timeout=f"{SCRAPE_TIMEOUT}s", max_concurrency=4) as e:
            # 9 hanging probes on 4 slots: the ones without a slot wait under the same scrape
            # deadline, so the scrape still answers within the scrape timeout, every one timed out
            s = parse(e.scrape(timeout=SCRAPE_TIMEOUT))
        assert all(v(s, "opsstack_probe_up", service=f"hang-{i}", region=r) == 0 for i in range(3) for r in REGIONS)
        assert all(v(s, "opsstack_probe_timed_out", service=f"hang-{i}", region=r) == 1
                   for i in range(3) for r in REGIONS)
        assert v(s, "opsstack_exporter_up", exporter="app", source="probes") == 1
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------------ many targets (issue 16)
MANY_PROBE_TIMEOUT = 4.0   # generous: 180 healthy answers from one threaded fake on a busy box
MANY_SCRAPE_TIMEOUT = 8.0


@pytest.fixture(scope="module")
def farm():
    """GET /ok/* answers 200; GET /hang/* is accepted, read, and never answered (until stop)."""
    with FakeHTTP({"GET /ok/*": (200, b"ok\n")}, backlog=512, record=False) as srv:
        srv.hang("GET", "/hang/*")
        yield srv


def many_targets(farm, n: int, hanging_every: int) -> tuple[list[dict], set[str]]:
    """n one-region services on the farm; every hanging_every-th one hangs. -> (services, hanging names)"""
    services, hanging = [], set()
    for i in range(n):
        name = f"t{i:03d}"
        hang = i % hanging_every == hanging_every - 1
        if hang:
            hanging.add(name)
        services.append({"name": name, "endpoints": {"seoul": farm.url},
                         "health_path": f"/{'hang' if hang else 'ok'}/{i}"})
    return services, hanging


def assert_every_result(s: dict, services: list[dict], hanging: set[str]) -> None:
    wrong = []
    for svc in services:
        name = svc["name"]
        got = (v(s, "opsstack_probe_up", service=name, region="seoul"),
               v(s, "opsstack_probe_timed_out", service=name, region="seoul"),
               v(s, "opsstack_probe_http_status_code", service=name, region="seoul"))
        want = (0.0, 1.0, 0.0) if name in hanging else (1.0, 0.0, 200.0)
        if got != want:
            wrong.append((name, got, want))
    assert not wrong, f"{len(wrong)} targets wrong (name, got up/timed_out/code, want): {wrong[:10]}"


@pytest.mark.parametrize("max_concurrency", [None, 30], ids=["default-slots", "fewer-slots-than-targets"])
def test_200_targets_10pct_hanging_every_result_in_one_scrape(tmp_path, farm, max_concurrency):
    # 200 targets, 20 hang; with 30 slots the 20 hanging ones hold 20 of them until the
    # deadline and the 180 healthy ones share the other 10: every one still gets its answer
    services, hanging = many_targets(farm, 200, 10)
    assert len(hanging) == 20
    extra = {} if max_concurrency is None else {"max_concurrency": max_concurrency}
    with AppExporterProcess(tmp_path, services, probe_timeout=f"{MANY_PROBE_TIMEOUT}s",
                            scrape_timeout=f"{MANY_SCRAPE_TIMEOUT}s", **extra) as e:
        s = parse(e.scrape(timeout=MANY_SCRAPE_TIMEOUT))
        assert_every_result(s, services, hanging)
        assert v(s, "opsstack_exporter_up", exporter="app", source="probes") == 1
        # the next scrape is as right: the hanging connections of the first were all closed
        assert_every_result(parse(e.scrape(timeout=MANY_SCRAPE_TIMEOUT)), services, hanging)
