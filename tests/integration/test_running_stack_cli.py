"""Issue 14: every command where a user looks finds the running stack, and `up` on a running
stack applies a changed config.

One light native stack for the module (external PostgreSQL, one demo service in one region,
no forecaster, no exporters), driven through the real `opsstack` CLI.
"""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import xmlrpc.client
from pathlib import Path

import pytest
import requests
import yaml

from core.config import load_data
from stack.launcher import ConfigRejected, LaunchError, Program, Stack
from tests.conftest import _create_db, _drop_db
from tests.support.servers import Prometheus
from tests.support.harness import StackHandle, fast_config
from tests.support.wait import wait_for

# (argv, what the output shows when it worked) of every command that talks to the running stack
STACK_COMMANDS = [
    (["db", "advise"], "examined"),
    (["db", "faults"], "slow-queries"),
    (["capacity", "report"], "apacity"),
    (["receiver", "migrate"], "receiver schema at version"),
    (["demo", "faults", "--active"], "user-app"),
    (["demo", "state", "--service", "user-app"], "user-app"),
    (["db", "heal"], "healed"),
    (["forecast", "run", "--no-store", "--target", "memory-user-app"], "target"),
    (["cost", "report"], "## Rightsizing"),
]


def opsstack(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`opsstack ARGS` run in ``cwd`` with no -c and no $OPSSTACK_CONFIG."""
    exe = Path(sys.executable).parent / "opsstack"
    env = {k: v for k, v in os.environ.items() if k not in ("OPSSTACK_CONFIG", "OPSSTACK_DATABASE_URL")}
    return subprocess.run([str(exe) if exe.exists() else "opsstack", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


# ---------------------------------------------------------------------------- no stack running
@pytest.mark.parametrize("argv", [a for a, _ in STACK_COMMANDS], ids=" ".join)
def test_without_a_running_stack_each_command_says_so(tmp_path, argv):
    (tmp_path / "opsstack.yaml").write_text(f"stack: {{run_dir: {tmp_path / 'run'}}}\n")
    res = opsstack(*argv, cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"opsstack {argv[0]} {argv[1]}: no running stack in {tmp_path / 'run'}" in err
    assert "`make up`" in err and "-c CONFIG" in err


def test_a_stopped_stack_left_files_behind_is_not_running(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "opsstack.resolved.yaml").write_text("database: {url: 'postgresql://127.0.0.1:1/x'}\n")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / "supervisord.pid").write_text(str(gone.pid))
    (tmp_path / "opsstack.yaml").write_text(f"stack: {{run_dir: {run}}}\n")
    res = opsstack("db", "advise", cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "no running stack" in res.stderr


def test_commands_that_need_no_stack_still_run_without_one(tmp_path):
    (tmp_path / "opsstack.yaml").write_text(f"stack: {{run_dir: {tmp_path / 'run'}}}\n")
    res = opsstack("demo", "faults", cwd=tmp_path, timeout=120)
    assert res.returncode == 0 and "memory-leak" in res.stdout
    res = opsstack("db", "advise", "--url", "postgresql://postgres@127.0.0.1:1/nothing", cwd=tmp_path, timeout=120)
    assert res.returncode == 1 and "no running stack" not in res.stderr


# ---------------------------------------------------------------------------- a running stack
@pytest.fixture(scope="module")
def stack(tmp_path_factory, pg_server_url):
    name, db_url = _create_db(pg_server_url, "opsstack_h6")
    work = tmp_path_factory.mktemp("running-stack")
    cfg = fast_config(
        work / ".run",
        database={"url": db_url},
        platform={"regions": ["seoul"], "services": [{"name": "user-app"}]},
        demo={"load": False, "home_region": "seoul", "edge": {"enabled": False}},
        forecast={"enabled": False},
        exporters__app__enabled=False, exporters__db__enabled=False,
        exporters__security__enabled=False, exporters__cdn__enabled=False,
    )
    handle = StackHandle(cfg, work)
    handle.env.pop("OPSSTACK_DATABASE_URL", None)
    handle.source = cfg
    try:
        handle.up()
        yield handle
    finally:
        handle.down()
        _drop_db(pg_server_url, name)


def pids(stack) -> dict[str, int]:
    """pid of every running program but the demo database workload (it may restart on its own
    while the tests' `db` commands change its schema; `up` reports every restart it makes, which
    the tests check in its output)."""
    rpc = xmlrpc.client.ServerProxy(stack.resolved["runtime"]["urls"]["supervisor"] + "/RPC2")
    return {i["name"]: i["pid"] for i in rpc.supervisor.getAllProcessInfo()
            if i["statename"] == "RUNNING" and i["name"] != "demo-db-workload"}


def up_with(stack, change) -> subprocess.CompletedProcess:
    """Edit the stack's opsstack.yaml with ``change(cfg)`` and run `opsstack up` again."""
    change(stack.source)
    stack.config_file.write_text(yaml.safe_dump(stack.source, sort_keys=False))
    return stack.cli("up", check=False)


def rule_queries(stack) -> list[str]:
    groups = requests.get(stack.url("prometheus") + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    return [r["query"] for g in groups for r in g["rules"]]


def test_commands_find_the_running_stack_without_c(stack):
    for argv, shows in STACK_COMMANDS:
        res = opsstack(*argv, cwd=stack.workdir)
        assert res.returncode == 0, (argv, res.stderr[-2000:])
        assert shows in res.stdout, (argv, res.stdout[-2000:])


def test_an_explicit_config_wins_over_the_running_stack(stack, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(f"stack: {{run_dir: {tmp_path / 'run'}}}\ndatabase: {{url: 'postgresql://postgres@127.0.0.1:1/x'}}\n")
    res = opsstack("-c", str(other), "db", "advise", cwd=stack.workdir)
    assert res.returncode == 1 and "no running stack" not in res.stderr and "127.0.0.1" in res.stderr


def test_up_with_the_same_config_changes_nothing(stack):
    before = pids(stack)
    res = stack.cli("up")
    assert "already running, nothing changed" in res.stdout, res.stdout
    assert pids(stack) == before, res.stdout


def test_a_new_alert_threshold_reloads_prometheus_and_restarts_nothing(stack):
    before = pids(stack)
    assert not any(re.search(r">\s*0\.37\b", q) for q in rule_queries(stack))
    res = up_with(stack, lambda c: c["alerts"].setdefault("latency", {}).update(p95_seconds=0.37))
    assert res.returncode == 0, res.stderr
    assert "reloaded prometheus; nothing else changed" in res.stdout
    assert "restarted" not in res.stdout
    wait_for(lambda: any(re.search(r">\s*0\.37\b", q) for q in rule_queries(stack)), what="the new threshold")
    assert pids(stack) == before


def test_an_invalid_rule_is_reported_and_prometheus_keeps_the_old_rules(stack):
    rules_dir = Path(stack.resolved["stack"]["run_dir"]) / "rules"
    resolved_file = Path(stack.resolved["stack"]["run_dir"]) / "opsstack.resolved.yaml"
    files_before = {p.name: p.read_text() for p in rules_dir.glob("*.yml")}
    resolved_before = resolved_file.read_text()
    before = pids(stack)
    good = copy.deepcopy(stack.source)
    res = up_with(stack, lambda c: c["alerts"].setdefault("selectors", {}).update(node='job=="node"'))
    try:
        assert res.returncode == 1
        assert "prometheus rejects the new config" in res.stderr and "keeps running with its old config" in res.stderr
        assert {p.name: p.read_text() for p in rules_dir.glob("*.yml")} == files_before
        assert resolved_file.read_text() == resolved_before
        assert any(re.search(r">\s*0\.37\b", q) for q in rule_queries(stack))
        assert pids(stack) == before
    finally:
        stack.source = good
        stack.config_file.write_text(yaml.safe_dump(good, sort_keys=False))
    assert "already running, nothing changed" in stack.cli("up").stdout


def test_a_receiver_setting_restarts_only_the_receiver(stack):
    before = pids(stack)
    res = up_with(stack, lambda c: c.setdefault("receiver", {}).update(threads=3))
    assert res.returncode == 0, res.stderr
    assert "restarted receiver; nothing else changed" in res.stdout
    # `up` returns once the new process is RUNNING and ready
    after = pids(stack)
    assert after.get("receiver") not in (None, before["receiver"]), (before, after)
    assert {n: p for n, p in after.items() if n != "receiver"} == {n: p for n, p in before.items() if n != "receiver"}
    assert requests.get(stack.url("receiver") + "/readyz", timeout=10).status_code == 200


def test_a_restarted_demo_service_keeps_its_active_faults(stack):
    res = opsstack("demo", "fault", "latency-spike", "--service", "user-app", "--duration", "10m", cwd=stack.workdir)
    assert res.returncode == 0, res.stderr
    before = pids(stack)
    try:
        res = up_with(stack, lambda c: c["demo"].update(home_latency="120ms"))
        assert res.returncode == 0, res.stderr
        assert "restarted demo-user-app; nothing else changed" in res.stdout, res.stdout
        # `up` returns once the new process is RUNNING and ready, with its faults injected again
        assert pids(stack).get("demo-user-app") not in (None, before["demo-user-app"])
        res = opsstack("demo", "faults", "--active", cwd=stack.workdir)
        assert res.returncode == 0 and '"latency-spike"' in res.stdout, res.stdout + res.stderr
    finally:
        opsstack("demo", "heal", cwd=stack.workdir)


def test_a_reload_prometheus_refuses_is_reported(tmp_path):
    """What `apply` does when Prometheus answers the reload with an error (a rule file that
    promtool would have caught, changed behind its back here)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yml").write_text("groups: [{name: a, rules: [{record: a:up, expr: up}]}]\n")
    with Prometheus({"global": {"scrape_interval": "1s"}, "rule_files": [f"{rules}/*.yml"]},
                    workdir=tmp_path / "prom") as prom:
        st = Stack(load_data({"stack": {"run_dir": str(tmp_path / "run")}}))
        r = {"stack": {"host": prom.host}, "runtime": {"ports": {"prometheus": prom.port}}}
        st._reload(r, "prometheus")
        (rules / "a.yml").write_text("groups: [{name: a, rules: [{record: a:up, expr: 'up{'}]}]\n")
        with pytest.raises(ConfigRejected, match=r"prometheus refused the new config \(HTTP 500\)"):
            st._reload(r, "prometheus")
        # the old rule is still evaluated
        assert wait_for(lambda: requests.get(prom.url + "/api/v1/rules", timeout=10).json()
                        ["data"]["groups"][0]["rules"][0]["query"] == "up")


class _MuteStack(Stack):
    """A stack of one program that runs but never answers its readiness URL."""

    def programs(self, r):
        port = r["runtime"]["ports"]["exporter_app"]  # nothing listens there: exporters.app is off
        return [Program("mute", [sys.executable, "-c", "import time; time.sleep(600)"],
                        ready_url=f"http://{r['stack']['host']}:{port}/metrics")]


def test_up_names_the_program_that_does_not_come_up(tmp_path, pg_server_url):
    name, db_url = _create_db(pg_server_url, "opsstack_h4")
    cfg = load_data({"stack": {"run_dir": str(tmp_path / "run"), "startup_timeout": "5s"},
                     "database": {"url": db_url}, "demo": {"enabled": False, "backfill": 0},
                     "exporters": {"app": {"enabled": False}}})
    st = _MuteStack(cfg)
    try:
        with pytest.raises(LaunchError) as err:
            st.up(progress=lambda _m: None)
        msg = str(err.value)
        assert msg.startswith("did not come up within 5s: mute (RUNNING, running but not answering http://"), msg
        assert "last log lines of mute" in msg
    finally:
        st.down(progress=lambda _m: None)
        _drop_db(pg_server_url, name)
