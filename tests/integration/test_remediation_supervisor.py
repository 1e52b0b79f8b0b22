"""The supervisor backend against a real supervisord (XML-RPC on a free loopback port)."""
from __future__ import annotations

import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest

from core.config import load_data
from core.procs import free_port, tail
from webhook_receiver.remediation.backends import BackendError, make

pytestmark = pytest.mark.integration

CONF = """[supervisord]
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
nodaemon=true

[inet_http_server]
port=127.0.0.1:{port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=http://127.0.0.1:{port}

[program:demo-app]
command={python} -c "import signal, sys, time; signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7)); time.sleep(3600)"
startsecs=0
autostart=true
autorestart=false
stopwaitsecs=5
"""


@pytest.fixture(scope="module")
def supervisord(tmp_path_factory):
    d = tmp_path_factory.mktemp("supervisor")
    port = free_port()
    conf = d / "supervisord.conf"
    conf.write_text(CONF.format(d=d, port=port, python=sys.executable))
    exe = str(Path(sys.executable).parent / "supervisord")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
    deadline = time.monotonic() + 30
    while True:
        try:
            if rpc.supervisor.getProcessInfo("demo-app")["statename"] == "RUNNING":
                break
        except (OSError, xmlrpc.client.Fault):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"supervisord did not start:\n{tail(d / 'supervisord.log')}")
        time.sleep(0.1)
    yield port, rpc
    try:
        rpc.supervisor.shutdown()
    except OSError:
        pass
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def backend(supervisord):
    port, _ = supervisord
    cfg = load_data({"stack": {"ports": {"supervisor": port}}})
    return make("supervisor", cfg)


def info(rpc):
    return rpc.supervisor.getProcessInfo("demo-app")


def test_restart_gives_a_new_process(backend, supervisord):
    _, rpc = supervisord
    before = info(rpc)["pid"]
    res = backend.run("restart", {"program": "demo-app"}, timeout=20)
    assert res.ok, res.output
    after = info(rpc)
    assert after["statename"] == "RUNNING" and after["pid"] != before
    assert res.detail == {"pid_before": before, "pid_after": after["pid"], "state": "RUNNING"}
    assert "stopped; started" in res.output


def test_stop_then_start_and_start_when_running(backend, supervisord):
    _, rpc = supervisord
    assert backend.run("stop", {"program": "demo-app"}, timeout=20).ok
    assert info(rpc)["statename"] == "STOPPED"
    assert backend.run("stop", {"program": "demo-app"}, timeout=20).output.startswith("demo-app: was not running")
    res = backend.run("start", {"program": "demo-app"}, timeout=20)
    assert res.ok and info(rpc)["statename"] == "RUNNING"
    assert "already running" in backend.run("start", {"program": "demo-app"}, timeout=20).output


def test_restart_of_a_stopped_program_starts_it(backend, supervisord):
    _, rpc = supervisord
    rpc.supervisor.stopProcess("demo-app", True)
    res = backend.run("restart", {"program": "demo-app"}, timeout=20)
    assert res.ok and "was not running; started" in res.output
    assert info(rpc)["statename"] == "RUNNING"


def test_replace_rebuilds_the_process_group_from_config(backend, supervisord):
    _, rpc = supervisord
    before = info(rpc)["pid"]
    res = backend.run("replace", {"program": "demo-app"}, timeout=20)
    assert res.ok, res.output
    assert "removed and re-added" in res.output
    after = info(rpc)
    assert after["statename"] == "RUNNING" and after["pid"] != before


def test_signal_reaches_the_process(backend, supervisord):
    _, rpc = supervisord
    res = backend.run("signal", {"program": "demo-app", "signal": "USR1"}, timeout=20)
    assert res.ok
    deadline = time.monotonic() + 10
    while info(rpc)["statename"] != "EXITED" and time.monotonic() < deadline:
        time.sleep(0.05)
    # 7 from the handler, or -1 when the signal came before Python installed it (a fresh process)
    assert info(rpc)["statename"] == "EXITED" and info(rpc)["exitstatus"] in (7, -1), info(rpc)
    rpc.supervisor.startProcess("demo-app", True)


def test_unknown_program_and_unreachable_supervisor_are_errors(backend, supervisord):
    with pytest.raises(BackendError, match="no program 'nope'"):
        backend.run("restart", {"program": "nope"}, timeout=5)
    dead = make("supervisor", load_data({"remediation": {"backends": {"supervisor": {
        "url": f"http://127.0.0.1:{free_port()}/RPC2"}}}}))
    with pytest.raises(BackendError, match="unreachable"):
        dead.run("restart", {"program": "demo-app"}, timeout=2)


def test_describe_hides_credentials(supervisord):
    port, _ = supervisord
    cfg = load_data({"remediation": {"backends": {"supervisor": {
        "url": f"http://127.0.0.1:{port}/RPC2", "username": "ops", "password": "s3cret"}}}})
    d = make("supervisor", cfg).describe("restart", {"program": "demo-app"})
    assert d == {"backend": "supervisor", "operation": "restart", "program": "demo-app",
                 "rpc": f"http://127.0.0.1:{port}/RPC2"}
