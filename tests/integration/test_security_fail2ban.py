"""fail2ban (the real Debian package, 1.0) with a private config in tmp: it watches a JSON
access log with the filter we ship (exporters.security.access.FAIL2BAN_FILTER), bans with the
`dummy` action (no firewall), keeps its database in tmp; the exporter reads that database.
A fail2ban restart restores its bans without new rows: bans_total does not move."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from core.config import load_data
from core.exporter import registry_for
from core.procs import binary
from exporters.security.access import FAIL2BAN_FILTER
from exporters.security.collector import SecurityCollector
from exporters.security.fail2ban import Fail2banDb
from tests.support.wait import wait_for

SERVER, CLIENT = shutil.which("fail2ban-server"), shutil.which("fail2ban-client")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(SERVER is None, reason="fail2ban not installed (scripts/install-deps.sh --test)")]


class Fail2ban:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.conf = tmp / "conf"
        shutil.copytree("/etc/fail2ban", self.conf)
        for p in (self.conf / "jail.d").glob("*"):
            p.unlink()
        (self.conf / "fail2ban.local").write_text(
            f"[Definition]\nlogtarget = {tmp}/fail2ban.log\nsocket = {tmp}/f2b.sock\npidfile = {tmp}/f2b.pid\n"
            f"dbfile = {tmp}/f2b.sqlite3\n")
        (self.conf / "filter.d" / "opsstack-auth.conf").write_text(FAIL2BAN_FILTER)
        self.log = tmp / "access.json"
        self.log.write_text("")
        (self.conf / "jail.local").write_text(
            "[DEFAULT]\nbackend = polling\n\n[opsstack-auth]\nenabled = true\nfilter = opsstack-auth\n"
            f"logpath = {self.log}\nmaxretry = 3\nfindtime = 600\nbantime = 3600\n"
            f"action = dummy[target={tmp}/dummy]\n")
        self.db = tmp / "f2b.sqlite3"
        self.proc = None

    def client(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([CLIENT, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        out = open(self.tmp / "server.out", "ab")
        self.proc = subprocess.Popen([SERVER, "-f", "-x", "-c", str(self.conf)], stdout=out, stderr=out,
                                     start_new_session=True)
        out.close()
        wait_for(lambda: self.client("status", "opsstack-auth").returncode == 0, timeout=60, what="fail2ban up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.client("stop")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def fail(self, addr: str, times: int) -> None:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        with open(self.log, "a") as fh:
            for _ in range(times):
                fh.write(json.dumps({"time": now, "vhost": "shop", "status": 401, "method": "POST", "bytes": 0,
                                     "rt": 0.001, "ua": "curl/8", "addr": addr}, separators=(",", ":")) + "\n")

    def banned(self) -> str:
        return self.client("status", "opsstack-auth").stdout


@pytest.fixture(scope="module")
def f2b(tmp_path_factory):
    f = Fail2ban(tmp_path_factory.mktemp("f2b"))
    f.start()
    yield f
    f.stop()


def test_bans_per_jail_and_a_restart(f2b):
    reader = Fail2banDb(str(f2b.db), recent_window=600)
    wait_for(lambda: f2b.db.exists(), timeout=30, what="fail2ban's database")
    st = reader.read()
    assert st.jails == {"opsstack-auth": True} and st.bans_total == {} and st.banned == {}
    f2b.fail("192.0.2.10", 4)
    f2b.fail("192.0.2.11", 3)
    f2b.fail("192.0.2.12", 1)  # below maxretry: no ban
    wait_for(lambda: "192.0.2.11" in f2b.banned() and "192.0.2.10" in f2b.banned(), timeout=60, what="two bans")
    st = reader.read()
    assert st.banned == {"opsstack-auth": 2} and st.recent == {"opsstack-auth": 2}
    assert st.bans_total == {"opsstack-auth": 2}
    # a restart restores the bans ("Restore Ban") without new rows
    f2b.stop()
    f2b.start()
    wait_for(lambda: "192.0.2.10" in f2b.banned(), timeout=60, what="bans restored")
    assert "Restore Ban" in (f2b.tmp / "fail2ban.log").read_text()
    st = reader.read()
    assert st.bans_total == {"opsstack-auth": 2} and st.banned == {"opsstack-auth": 2}
    f2b.fail("192.0.2.13", 3)
    wait_for(lambda: "192.0.2.13" in f2b.banned(), timeout=60, what="a third ban")
    st = reader.read()
    assert st.bans_total == {"opsstack-auth": 3} and st.banned == {"opsstack-auth": 3}
    # a reader started now counts the rows present once, then only new ones
    assert Fail2banDb(str(f2b.db)).read().bans_total == {"opsstack-auth": 3}
    f2b.client("set", "opsstack-auth", "unbanip", "192.0.2.10")
    wait_for(lambda: reader.read().banned == {"opsstack-auth": 2}, timeout=30, what="an unban")
    assert reader.read().bans_total == {"opsstack-auth": 3}
    assert os.access(f2b.db, os.R_OK)


def test_exporter_series(f2b, tmp_path):
    cfg = load_data({"stack": {"run_dir": str(tmp_path)}, "exporters": {"security": {
        "state_dir": str(tmp_path / "state"), "fail2ban": {"db_path": str(f2b.db)}}}})
    col = SecurityCollector.from_config(cfg)
    try:
        text = generate_latest(registry_for(col)).decode()
    finally:
        col.close()
    assert 'opsstack_fail2ban_jail_enabled{jail="opsstack-auth"} 1.0' in text
    assert 'opsstack_fail2ban_bans_total{jail="opsstack-auth"}' in text
    assert 'opsstack_exporter_up{exporter="security",source="fail2ban"} 1.0' in text
    lint = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
