"""Backups and the replica of the embedded database, brought up by `opsstack up` (the launcher,
stack/pgcluster.py, demo/backups.py) in a temp run folder: WAL archiving into the pgBackRest
repository, the streaming replica, the scheduled full backup read by `pgbackrest info` and the
security exporter, the scheduled restore verification, and the faults backup-stale and
replica-lag (injected and healed through `opsstack demo fault|heal`)."""
from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import psycopg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.config import RESOLVED_NAME, load
from core.exporter import registry_for
from demo import backups
from exporters.db.collector import DbCollector
from exporters.security.collector import SecurityCollector
from exporters.security.pgbackrest import read_info
from exporters.security.restore import read_results
from tests.support.harness import StackHandle, fast_config
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest not installed")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("backups-stack")
    cfg = fast_config(work / ".run", demo={"enabled": False}, forecast={"enabled": False},
                      exporters__app__enabled=False, exporters__db__enabled=False,
                      database__embedded__backup={"start_delay": "0s"})
    handle = StackHandle(cfg, work)
    handle.env.pop("OPSSTACK_DATABASE_URL", None)  # the embedded cluster
    try:
        handle.up()
        yield handle
    finally:
        handle.down()


@pytest.fixture(scope="module")
def resolved(stack) -> dict:
    return load(Path(stack.resolved["stack"]["run_dir"]) / RESOLVED_NAME)


def _url(stack, port_name: str, db: str = "postgres") -> str:
    return f"postgresql://postgres@{stack.host}:{stack.resolved['stack']['ports'][port_name]}/{db}"


def _samples(collector) -> dict:
    """{(name, labels tuple): value} of one scrape."""
    text = generate_latest(registry_for(collector)).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _db_metric(resolved, name: str, **labels) -> float | None:
    col = DbCollector.from_config(resolved)
    try:
        got = _samples(col)
    finally:
        col.close()
    for (n, lab), v in got.items():
        if n == name and all(dict(lab).get(k) == val for k, val in labels.items()):
            return v
    return None


def _conf(resolved) -> tuple[str, str]:
    b = resolved["exporters"]["security"]["backup"]
    return b["config"], b["stanzas"][0]


def _full_backup(resolved):
    conf, stanza = _conf(resolved)
    [st] = read_info(shutil.which("pgbackrest"), conf, (stanza,))
    return st if "full" in st.last else None


def test_wal_segments_arrive_in_the_repository(stack, resolved):
    p = backups.paths(resolved["stack"]["run_dir"])
    stanza = resolved["database"]["embedded"]["backup"]["stanza"]
    wait_for(lambda: (p.repo / "archive" / stanza / "archive.info").exists(), 120, what="stanza created")
    with psycopg.connect(_url(stack, "postgres"), autocommit=True) as c:
        c.execute("create table if not exists archived_t (x int); insert into archived_t values (1)")
        seg = c.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        c.execute("select pg_switch_wal()")
    wait_for(lambda: list((p.repo / "archive" / stanza).glob(f"*/{seg[:16]}/{seg}-*")), 120,
             what=f"WAL segment {seg} in the repository")
    assert _db_metric(resolved, "opsstack_db_archiver_enabled") == 1
    assert wait_for(lambda: (_db_metric(resolved, "opsstack_db_archiver_archived_total") or 0) >= 1, 60)


def test_a_row_written_on_the_primary_is_read_on_the_replica(stack, resolved):
    db = resolved["database"]["name"]
    with psycopg.connect(_url(stack, "postgres", db), autocommit=True) as c:
        c.execute("create table if not exists replicated_t (v text)")
        c.execute("insert into replicated_t values (%s)", (marker := f"row-{time.time()}",))

    def on_replica():
        with psycopg.connect(_url(stack, "postgres_replica", db), connect_timeout=3) as c:
            assert c.execute("select pg_is_in_recovery()").fetchone()[0]
            return c.execute("select 1 from replicated_t where v = %s", (marker,)).fetchone()
    wait_for(on_replica, 60, what="the row on the replica")
    assert _db_metric(resolved, "opsstack_db_replicas") == 1
    assert _db_metric(resolved, "opsstack_db_replication_lag_bytes", replica=backups.REPLICA_NAME) is not None
    assert _db_metric(resolved, "opsstack_db_replication_slot_active", slot=backups.SLOT) == 1


def test_the_full_backup_is_in_pgbackrest_info_and_the_exporters(stack, resolved):
    st = wait_for(lambda: _full_backup(resolved), 300, interval=1, what="the first full backup")
    assert st.status_code == 0 and st.last["full"].stop > time.time() - 900
    cfg = copy.deepcopy(resolved)
    cfg["exporters"]["security"]["backup"]["interval"] = 0  # `pgbackrest info` in the scrape
    col = SecurityCollector.from_config(cfg)
    try:
        got = _samples(col)
    finally:
        col.close()
    stanza = _conf(resolved)[1]
    assert got[("opsstack_backup_stanza_status_code", (("stanza", stanza),))] == 0
    full = got[("opsstack_backup_last_completion_timestamp_seconds", (("stanza", stanza), ("type", "full")))]
    assert full == pytest.approx(st.last["full"].stop)
    assert got[("opsstack_exporter_up", (("exporter", "security"), ("source", "pgbackrest")))] == 1
    # the DB exporter's base backup age comes from the repository's backup.info
    assert (_db_metric(resolved, "opsstack_db_backup_last_success_timestamp_seconds") or 0) >= full - 5


def test_the_scheduled_restore_verification_passes(stack, resolved):
    stanza = _conf(resolved)[1]
    result = resolved["exporters"]["security"]["backup"]["verify"]["result_file"]
    res = wait_for(lambda: read_results(result).get(stanza), 600, interval=1, what="a restore verification")
    assert res.success, res.error
    assert res.restore_seconds > 0 and res.backup_label


def test_replica_lag_fault_injects_and_heals(stack, resolved):
    r = stack.cli("demo", "fault", "replica-lag", "--duration", "600")
    assert "replica-lag injected" in r.stdout
    with psycopg.connect(_url(stack, "postgres_replica"), autocommit=True) as c:
        assert c.execute("select pg_is_wal_replay_paused()").fetchone()[0]
    wait_for(lambda: (_db_metric(resolved, "opsstack_db_replication_lag_bytes", replica="replica") or 0) > 0
             and (_db_metric(resolved, "opsstack_db_replication_lag_seconds", replica="replica") or 0) > 2,
             120, interval=1, what="replication lag in the DB exporter")
    assert "healed replica-lag" in stack.cli("demo", "heal", "--kind", "replica-lag").stdout
    wait_for(lambda: _db_metric(resolved, "opsstack_db_replication_lag_bytes", replica="replica") == 0,
             120, interval=1, what="the replica caught up")
    # a fault heals by itself when its duration ends (the scheduler heals it)
    stack.cli("demo", "fault", "replica-lag", "--duration", "2")

    def resumed():
        with psycopg.connect(_url(stack, "postgres_replica"), autocommit=True) as c:
            return not c.execute("select pg_is_wal_replay_paused()").fetchone()[0]
    wait_for(resumed, 60, what="replay resumed at the end of the fault")


def test_backup_stale_fault_stops_archiving_and_backups_and_heals(stack, resolved):
    wait_for(lambda: _full_backup(resolved), 300, interval=1, what="the first full backup")
    conf, stanza = _conf(resolved)
    failed0 = _db_metric(resolved, "opsstack_db_archiver_failed_total") or 0
    assert "backup-stale injected" in stack.cli("demo", "fault", "backup-stale", "--duration", "600").stdout
    pgbr = backups.PgBackRest(conf, stanza)
    r = pgbr.run("--type=incr", "backup", timeout=120)
    assert r.returncode != 0 and "stop" in (r.stdout + r.stderr).lower()  # backups are stopped
    with psycopg.connect(_url(stack, "postgres"), autocommit=True) as c:
        c.execute("create table if not exists stale_t (x int); insert into stale_t values (1)")
        c.execute("select pg_switch_wal()")
    wait_for(lambda: (_db_metric(resolved, "opsstack_db_archiver_failed_total") or 0) > failed0, 120, interval=1,
             what="archive-push failing")
    healed_at = time.time()
    assert "healed backup-stale" in stack.cli("demo", "heal", "--kind", "backup-stale").stdout
    wait_for(lambda: max(pgbr.newest().values()) >= healed_at - 1, 300, interval=1, what="a backup after heal")
    wait_for(lambda: (_db_metric(resolved, "opsstack_db_archiver_last_archived_timestamp_seconds") or 0)
             >= healed_at - 1, 180, interval=1, what="archiving again")
