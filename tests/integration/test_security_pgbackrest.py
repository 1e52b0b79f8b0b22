"""pgBackRest against the real thing (Debian package): a throwaway cluster archiving to a
repository in tmp, one full and one incremental backup; `pgbackrest info --output=json`
parsed into the exporter's series; the restore verification restores the newest backup,
starts it and queries it; a missing stanza is a status, not an exception."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time

import psycopg
import pytest
from prometheus_client import generate_latest

from core.config import load_data
from core.exporter import registry_for
from core.procs import binary, free_port
from exporters.security.collector import SecurityCollector
from exporters.security.pgbackrest import read_info, wal_position
from exporters.security.restore import read_results, verify_restore, write_result
from stack.pgcluster import Cluster, socket_dir

PGBACKREST = shutil.which("pgbackrest")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(PGBACKREST is None, reason="pgbackrest not installed (scripts/install-deps.sh --test)")]


def _as_postgres():
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")

    def fn():
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return fn


def pgbr(conf, *args, timeout=120):
    r = subprocess.run([PGBACKREST, f"--config={conf}", "--stanza=demo", *args], capture_output=True, text=True,
                       preexec_fn=_as_postgres(), timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """(pgbackrest.conf, cluster) with a full and an incremental backup in the repository."""
    tmp = tmp_path_factory.mktemp("pgbr")
    os.chmod(tmp, 0o755)
    for p in tmp.parents:  # the postgres user must reach it
        if p == p.parent:
            break
        try:
            os.chmod(p, p.stat().st_mode | 0o001)
        except OSError:
            break
    for d in ("repo", "log", "lock"):
        (tmp / d).mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(tmp / d, pw.pw_uid, pw.pw_gid)
    port = free_port()
    conf = tmp / "pgbackrest.conf"
    # deep enough that `<data>.sock/.s.PGSQL.<port>` would not fit a Unix socket address (107 bytes):
    # the cluster must fall back to a short socket folder, as on a machine with a deep checkout
    data = tmp / ("a-deep-run-folder-" * 5) / "data"
    data.parent.mkdir(mode=0o755)
    conf.write_text(f"[global]\nrepo1-path={tmp}/repo\nlog-path={tmp}/log\nlock-path={tmp}/lock\nstart-fast=y\n"
                    f"log-level-file=off\nrepo1-retention-full=2\ncompress-type=none\n\n"
                    f"[demo]\npg1-path={data}\npg1-port={port}\npg1-socket-path={socket_dir(data)}\n")
    os.chmod(conf, 0o644)
    cluster = Cluster(data, port=port, preload=(), settings={
        "archive_mode": "on", "wal_level": "replica", "max_wal_senders": "3",
        "archive_command": f"{PGBACKREST} --config={conf} --stanza=demo archive-push %p"})
    cluster.start(timeout=60)
    try:
        pgbr(conf, "stanza-create")
        pgbr(conf, "--type=full", "backup")
        with psycopg.connect(cluster.url(), autocommit=True) as con:
            con.execute("create table verify_me as select g from generate_series(1, 1000) g")
        pgbr(conf, "--type=incr", "backup")
        yield conf, cluster
    finally:
        cluster.stop()


def test_info_per_stanza(repo):
    conf, _ = repo
    now = time.time()
    [st] = read_info(PGBACKREST, str(conf))
    assert (st.name, st.status_code, st.status_message) == ("demo", 0, "ok")
    assert set(st.last) == {"full", "incr"} and st.counts == {"full": 1, "incr": 1}  # no diff: no series
    full, incr = st.last["full"], st.last["incr"]
    assert now - 600 < full.stop <= incr.stop <= now + 1
    assert full.duration >= 0 and full.size > 1_000_000 and full.repo_size > 0 and not full.error
    assert incr.label.startswith(full.label) and incr.label.endswith("I")
    assert st.archive_min is not None and st.archive_max >= st.archive_min
    assert not st.backup_running


def test_missing_stanza_is_a_status(repo):
    conf, _ = repo
    [st] = read_info(PGBACKREST, str(conf), ("nope",))
    assert st.name == "nope" and st.status_code != 0 and "missing stanza" in st.status_message
    assert not st.last


def test_wal_position():
    assert wal_position("000000010000000000000003") == 3 * 16 * 1024 * 1024
    assert wal_position("0000000100000002000000FF") == (2 << 32) + 255 * 16 * 1024 * 1024
    assert wal_position("nonsense") is None


def test_verify_restore_restores_starts_and_queries(repo, tmp_path):
    conf, cluster = repo
    assert len(str(cluster.datadir) + ".sock/.s.PGSQL.65535") > 107 and len(str(cluster.sockdir)) < 60
    deep = tmp_path / ("a-deep-work-folder-" * 5)  # the scratch copy's paths are long too
    deep.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(deep, 0o777)
    res = verify_restore("demo", pgbackrest=PGBACKREST, config=str(conf), work_dir=str(deep),
                         query="select count(*) from verify_me", timeout=120)
    assert res.success, res.error
    assert res.backup_label.endswith("I")  # the newest backup
    assert res.duration_seconds >= res.restore_seconds > 0 and res.startup_seconds > 0
    out = tmp_path / "restore.json"
    write_result(out, res)
    # a failing run keeps the last success time
    bad = verify_restore("nope", pgbackrest=PGBACKREST, config=str(conf), timeout=60)
    assert not bad.success and "no backup" in bad.error
    write_result(out, bad)
    got = read_results(out)
    assert got["demo"].success and got["demo"].last_success == res.last_success
    assert not got["nope"].success and got["nope"].last_success == 0
    assert not list(deep.glob("verify-*"))  # the scratch copy is gone


def test_exporter_series_from_the_real_repository(repo, tmp_path):
    conf, _ = repo
    cfg = load_data({"stack": {"run_dir": str(tmp_path)}, "exporters": {"security": {
        "state_dir": str(tmp_path / "state"),
        "backup": {"enabled": True, "pgbackrest": PGBACKREST, "config": str(conf), "interval": "0s"}}}})
    col = SecurityCollector.from_config(cfg)
    try:
        text = generate_latest(registry_for(col)).decode()
    finally:
        col.close()
    assert 'opsstack_backup_stanza_status_code{stanza="demo"} 0.0' in text
    assert 'opsstack_backup_last_completion_timestamp_seconds{stanza="demo",type="full"}' in text
    assert 'type="diff"' not in text  # no diff backup: no series
    assert 'opsstack_backup_sets{stanza="demo",type="incr"} 1.0' in text
    assert 'opsstack_exporter_up{exporter="security",source="pgbackrest"} 1.0' in text
    assert "opsstack_backup_rpo_seconds 300.0" in text and "opsstack_backup_rto_seconds 900.0" in text
    lint = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
