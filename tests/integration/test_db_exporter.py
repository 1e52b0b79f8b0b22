"""The database exporter and index advisor against a real PostgreSQL cluster of our own.

The cluster (pg_cluster fixture: initdb from the installed binaries, free port,
pg_stat_statements and hypopg preloaded) gets the demo schema at a small scale, with
its three deliberately missing indexes, and some workload.
"""
from __future__ import annotations

import json
import logging
import subprocess
import threading
import urllib.request
import uuid

import psycopg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.exporter import registry_for
from exporters.db.advisor import Advisor, advise_url
from exporters.db.collector import DbCollector
from core.config import load_data, view
from core.pg import with_dbname
from stack.pgcluster import Cluster
from core.procs import binary, free_port

pytestmark = pytest.mark.integration

SCALE = 0.2


def _create_db(admin_url: str) -> tuple[str, str]:
    name = f"opsstack_dbx_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'create database "{name}"')
    return name, with_dbname(admin_url, name)


def _drop_db(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def demo_db(pg_cluster):
    """A database with the demo schema (scale 0.2), its extensions and some workload."""
    from demo.db.seed import seed
    from demo.db.workload import Workload

    admin = pg_cluster.url()
    name, url = _create_db(admin)
    seed(url, scale=SCALE)
    Workload(url, seed=7).run_calls(600)
    yield url
    _drop_db(admin, name)


def _cfg(url: str, **db) -> dict:
    base = {"targets": [{"name": "main", "url": url}], "advisor": {"enabled": False},
            "statement_timeout": "2s"}
    base.update(db)
    return load_data({"exporters": {"db": base}})


def _scrape(collector) -> tuple[str, dict]:
    text = generate_latest(registry_for(collector)).decode()
    samples: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return text, samples


def _value(samples, metric, **labels):
    vals = [v for lab, v in samples.get(metric, []) if all(lab.get(k) == str(x) for k, x in labels.items())]
    assert vals, f"{metric}{labels} not exported"
    return vals[0]


def test_exporter_reads_every_fact_group(demo_db):
    cfg = _cfg(demo_db)
    col = DbCollector(view(cfg, "exporters.db"), view(cfg, "database"))
    try:
        _scrape(col)  # first scrape fills the statement text cache
        text, s = _scrape(col)
    finally:
        col.close()
    db = demo_db.rsplit("/", 1)[1]
    assert _value(s, "opsstack_db_up", server="main") == 1
    assert _value(s, "opsstack_exporter_up", exporter="db", source="main") == 1
    assert _value(s, "opsstack_db_pg_stat_statements_available", server="main") == 1
    assert _value(s, "opsstack_db_statements_calls_total", datname=db) >= 600
    assert _value(s, "opsstack_db_statements_mean_exec_seconds", datname=db) > 0
    info = [lab for lab, _ in s["opsstack_db_statement_info"]]
    assert info and all(len(lab["query"]) <= 160 and lab["queryid"] for lab in info)
    assert len(s["opsstack_db_statement_calls_total"]) <= 20
    # index usage, sizes, dead tuples, vacuum age
    part = dict(datname=db, schemaname="platform", relname="participants")
    assert _value(s, "opsstack_db_table_seq_scans_total", **part) > 0
    assert 0 <= _value(s, "opsstack_db_table_index_usage_ratio", **part) <= 1
    assert _value(s, "opsstack_db_table_size_bytes", **part) > 0
    assert _value(s, "opsstack_db_table_dead_rows", **part) >= 0
    assert _value(s, "opsstack_db_database_xid_age", datname=db) > 0
    assert _value(s, "opsstack_db_index_unused", datname=db, indexrelname="registrations_participant_idx") in (0, 1)
    # pool use, cache hit ratio, settings in base units
    assert 0 < _value(s, "opsstack_db_connections_used_ratio", server="main") < 1
    assert 0 < _value(s, "opsstack_db_cache_hit_ratio", datname=db) <= 1
    assert _value(s, "opsstack_db_setting_bytes", name="shared_buffers") >= 128 * 1024
    assert _value(s, "opsstack_db_setting_seconds", name="statement_timeout") == 0
    # lifecycle: partitions of this period and the next exist, old rows are counted
    for table in ("platform.events", "platform.gate_logs"):
        for period in ("current", "next"):
            assert _value(s, "opsstack_db_partition_present", datname=db, table=table, period=period) == 1
    assert _value(s, "opsstack_db_partitions", datname=db, table="platform.events") >= 40
    assert _value(s, "opsstack_db_rows_older_than_retention", datname=db, table="platform.events") > 0
    assert _value(s, "opsstack_db_rows_older_than_retention", datname=db, table="platform.gate_logs") == 5000 * SCALE
    assert _value(s, "opsstack_db_archiver_enabled", server="main") == 0
    assert _value(s, "opsstack_db_replicas", server="main") == 0
    # every collector ran and succeeded, each with its duration
    from exporters.db.collectors import COLLECTORS

    ran = {lab["collector"]: v for lab, v in s["opsstack_db_collector_success"] if lab["server"] == "main"}
    assert ran == {c.name: 1 for c in COLLECTORS if c.name != "pgbouncer"}  # no pgbouncer_url
    assert {lab["collector"] for lab, _ in s["opsstack_db_collector_duration_seconds"]} == set(ran)
    # and the whole output passes promtool's lint
    res = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_missing_partition_and_slow_statements(pg_cluster):
    from demo.db.seed import apply_schema

    name, url = _create_db(pg_cluster.url())
    try:
        with psycopg.connect(url, autocommit=True) as c:
            apply_schema(c, partitions=False)
            c.execute("select platform.ensure_partitions(0, 0, 0, 0)")  # this month/day only
            c.execute("select pg_sleep(0.25)")
            c.execute("select pg_sleep(0.25)")
        col = DbCollector.from_config(_cfg(url, statements={"slow_threshold": "200ms"}))
        try:
            _, s = _scrape(col)
        finally:
            col.close()
        assert _value(s, "opsstack_db_partition_present", datname=name, table="platform.gate_logs", period="current") == 1
        assert _value(s, "opsstack_db_partition_present", datname=name, table="platform.gate_logs", period="next") == 0
        assert _value(s, "opsstack_db_partition_present", datname=name, table="platform.events", period="next") == 0
        assert _value(s, "opsstack_db_statements_slow", datname=name) >= 1
    finally:
        _drop_db(pg_cluster.url(), name)


def test_several_databases_and_missing_pg_stat_statements(pg_cluster, demo_db, caplog):
    name, url = _create_db(pg_cluster.url())  # no extension created here
    try:
        cfg = load_data({"exporters": {"db": {
            "advisor": {"enabled": False},
            "targets": [{"name": "bare", "url": url},
                        {"name": "main", "url": demo_db, "databases": [name]}]}}})
        col = DbCollector.from_config(cfg)
        try:
            with caplog.at_level(logging.WARNING, logger="opsstack.exporter.db"):
                _, s = _scrape(col)
        finally:
            col.close()
        assert _value(s, "opsstack_db_pg_stat_statements_available", server="bare") == 0
        assert _value(s, "opsstack_db_pg_stat_statements_available", server="main") == 1
        assert any("pg_stat_statements_missing" in r.getMessage() and "shared_preload_libraries" in r.getMessage()
                   for r in caplog.records)
        dbs = {lab["datname"] for lab, _ in s["opsstack_db_tables"] if lab["server"] == "main"}
        assert dbs == {demo_db.rsplit("/", 1)[1], name}
    finally:
        _drop_db(pg_cluster.url(), name)


def test_a_locked_table_does_not_hang_the_scrape(demo_db):
    locker = psycopg.connect(demo_db)
    try:
        locker.execute("lock table platform.participants in access exclusive mode")
        col = DbCollector.from_config(_cfg(demo_db, statement_timeout="300ms"))
        try:
            _, s = _scrape(col)
        finally:
            col.close()
    finally:
        locker.rollback()
        locker.close()
    assert _value(s, "opsstack_db_up", server="main") == 1
    assert _value(s, "opsstack_db_query_errors_total", server="main", query="tables") >= 1
    # the collector whose query timed out is recorded; the others are not affected
    assert _value(s, "opsstack_db_collector_success", server="main", collector="tables") == 0
    assert _value(s, "opsstack_db_collector_success", server="main", collector="indexes") == 1
    assert _value(s, "opsstack_db_collector_success", server="main", collector="settings") == 1
    assert _value(s, "opsstack_db_index_scans_total", server="main", indexrelname="registrations_participant_idx") >= 0


def test_a_failing_collector_does_not_fail_the_others(demo_db):
    """A backup query that fails: the backup collector is down, every other one answers."""
    col = DbCollector.from_config(_cfg(demo_db, backup={"source": "query", "query": "select max(at) from no_such_backups"}))
    try:
        text, s = _scrape(col)
    finally:
        col.close()
    assert _value(s, "opsstack_db_up", server="main") == 1
    assert _value(s, "opsstack_db_collector_success", server="main", collector="backup") == 0
    assert _value(s, "opsstack_db_query_errors_total", server="main", query="backup") == 1
    assert _value(s, "opsstack_db_backup_configured", server="main") == 1
    assert "opsstack_db_backup_last_success_timestamp_seconds" not in s
    others = {lab["collector"]: v for lab, v in s["opsstack_db_collector_success"] if lab["collector"] != "backup"}
    assert others and set(others.values()) == {1}, others
    assert _value(s, "opsstack_db_tables", server="main", datname=demo_db.rsplit("/", 1)[1]) > 0
    res = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_exporter_answers_while_the_database_is_down_and_recovers(tmp_path):
    cluster = Cluster(tmp_path / "data", port=free_port(), preload=())
    cluster.start()
    col = DbCollector.from_config(_cfg(cluster.url()))
    try:
        _, s = _scrape(col)
        assert _value(s, "opsstack_db_up", server="main") == 1
        cluster.stop()
        _, s = _scrape(col)  # no exception, a complete answer
        assert _value(s, "opsstack_db_up", server="main") == 0
        assert _value(s, "opsstack_exporter_up", exporter="db", source="main") == 0
        assert "opsstack_exporter_scrape_duration_seconds" in s
        cluster.start()
        _, s = _scrape(col)
        assert _value(s, "opsstack_db_up", server="main") == 1
        assert _value(s, "opsstack_db_pg_stat_statements_available", server="main") == 0
    finally:
        col.close()
        cluster.stop()


def test_server_serves_metrics(demo_db):
    from exporters.db.server import serve

    cfg = _cfg(demo_db)
    port = free_port()
    stop = threading.Event()
    th = threading.Thread(target=serve, args=(cfg,), kwargs={"stop": stop, "port": port}, daemon=True)
    th.start()
    try:
        from core.procs import wait_http

        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=20)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'opsstack_db_up{server="main"} 1.0' in body
    finally:
        stop.set()
        th.join(10)


# ------------------------------------------------------------------------ advisor
def _indexes(url: str) -> list:
    with psycopg.connect(url) as c:
        return c.execute("select indexrelid::regclass::text from pg_index order by 1").fetchall()


def test_advisor_proves_the_missing_indexes_and_creating_one_lowers_the_cost(demo_db):
    settings = view(load_data({}), "exporters.db").advisor
    before_idx = _indexes(demo_db)
    rep = advise_url(demo_db, settings)
    assert _indexes(demo_db) == before_idx, "the advisor must never create an index"
    assert rep.hypopg and rep.problem is None and rep.examined > 0
    found = {(s.table, tuple(s.columns)): s for s in rep.suggestions}
    assert ("platform.participants", ("email",)) in found
    assert ("platform.registrations", ("event_id", "status")) in found
    assert ("platform.events", ("created_at",)) in found
    ev = found[("platform.events", ("created_at",))]
    assert ev.partitioned and ev.ddl[0].startswith("CREATE INDEX IF NOT EXISTS events_created_at_idx ON ONLY")
    assert any("ATTACH PARTITION" in d for d in ev.ddl)
    for s in rep.suggestions:
        assert all(h.cost_drop_ratio >= settings.min_cost_drop for h in s.statements)
        assert all(d.startswith(("CREATE INDEX", "ALTER INDEX")) for d in s.ddl)

    # create the suggested index for real: the statement's plan gets cheaper
    sug = found[("platform.participants", ("email",))]
    stmt = sug.statements[0]
    assert "CONCURRENTLY" in sug.ddl[0]
    with psycopg.connect(demo_db, autocommit=True) as c:
        adv = Advisor(c, settings)
        c.execute("set plan_cache_mode = force_generic_plan")
        cost_before = adv.cost(stmt.query)
        c.execute(sug.ddl[0])
        try:
            cost_after = adv.cost(stmt.query)
        finally:
            c.execute("drop index platform.participants_email_idx")
    assert cost_after < cost_before * (1 - settings.min_cost_drop)
    assert cost_after == pytest.approx(stmt.cost_after, rel=0.5)


def test_advisor_cli_json_and_metrics(demo_db, capsys, tmp_path):
    from exporters.db.advisor import AdvisorCache
    from stack.cli import main

    assert main(["db", "advise", "--url", demo_db, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["database"] == demo_db.rsplit("/", 1)[1]
    cols = {(s["table"], ",".join(s["columns"])) for s in out[0]["suggestions"]}
    assert ("platform.participants", "email") in cols

    assert main(["db", "advise", "--url", demo_db]) == 0
    human = capsys.readouterr().out
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS participants_email_idx" in human

    # the configured targets (what the exporter watches)
    import yaml

    cfg_file = tmp_path / "opsstack.yaml"
    cfg_file.write_text(yaml.safe_dump({"exporters": {"db": {"targets": [{"name": "demo", "url": demo_db}]}}}))
    assert main(["-c", str(cfg_file), "db", "advise", "--json", "--target", "demo"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["server"] for r in out] == ["demo"] and out[0]["suggestions"]

    cfg = _cfg(demo_db)
    cache = AdvisorCache(view(cfg, "exporters.db"), view(cfg, "database"))
    cache.run_once()
    col = DbCollector.from_config(cfg, advisor=cache)
    try:
        _, s = _scrape(col)
    finally:
        col.close()
    db = demo_db.rsplit("/", 1)[1]
    assert _value(s, "opsstack_db_advisor_suggestions", datname=db) >= 3
    assert _value(s, "opsstack_db_advisor_suggestion_cost_drop_ratio", datname=db,
                  table="platform.participants", columns="email") >= 0.5
    assert _value(s, "opsstack_db_advisor_available", datname=db) == 1


def test_demo_workload_program_seeds_runs_and_stops_on_sigterm(pg_cluster, tmp_path):
    """What the launcher supervises: `opsstack db workload` (seed once, then the workload)."""
    import signal
    import sys
    import time as _time

    import yaml

    name, url = _create_db(pg_cluster.url())
    try:
        cfg_file = tmp_path / "opsstack.yaml"
        cfg_file.write_text(yaml.safe_dump({"database": {"url": url}}))
        proc = subprocess.Popen([sys.executable, "-m", "stack.cli", "-c", str(cfg_file), "db", "workload",
                                 "--scale", "0.05", "--rate", "50"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = _time.monotonic() + 60
            seeded = False
            while _time.monotonic() < deadline and not seeded:
                with psycopg.connect(url) as c:
                    seeded = c.execute("select to_regclass('platform.seed_info') is not null").fetchone()[0] and \
                        c.execute("select count(*) from platform.seed_info").fetchone()[0] == 1
                _time.sleep(0.3)
            assert seeded, "the workload did not seed the demo schema"
            with psycopg.connect(url) as c:
                before = c.execute("select count(*) from platform.gate_logs").fetchone()[0]
                for _ in range(100):  # wait for the workload's inserts, no timing assert
                    if c.execute("select count(*) from platform.gate_logs").fetchone()[0] > before:
                        break
                    _time.sleep(0.2)
                assert c.execute("select count(*) from platform.gate_logs").fetchone()[0] > before
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "demo_db_workload_stopped" in out
    finally:
        _drop_db(pg_cluster.url(), name)


def test_pgbouncer_show_pools(pg_cluster, demo_db, tmp_path):
    """Pool use through pgbouncer's admin console (SHOW POOLS / SHOW DATABASES)."""
    import os
    import pwd
    import shutil
    import signal

    exe = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if not exe:
        pytest.skip("pgbouncer not installed (apt-get install pgbouncer)")
    port = free_port()
    d = tmp_path / "pgbouncer"
    d.mkdir()
    (d / "users.txt").write_text('"postgres" ""\n')
    (d / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={pg_cluster.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {d / 'users.txt'}\n"
        "admin_users = postgres\npool_mode = transaction\ndefault_pool_size = 3\n")
    demote = None
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        pw = pwd.getpwnam("postgres")
        for p in (tmp_path, d, *d.iterdir()):
            os.chown(p, pw.pw_uid, pw.pw_gid)

        def demote():  # pragma: no cover - runs in the child
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
    proc = subprocess.Popen([exe, str(d / "pgbouncer.ini")], preexec_fn=demote,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        admin = f"postgresql://postgres@127.0.0.1:{port}/pgbouncer"
        db = demo_db.rsplit("/", 1)[1]
        client = None
        for _ in range(100):
            try:
                client = psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/{db}", prepare_threshold=None)
                break
            except psycopg.OperationalError:
                import time as _time
                _time.sleep(0.1)
        assert client is not None, "pgbouncer did not start"
        client.execute("select 1").fetchall()
        cfg = load_data({"exporters": {"db": {"advisor": {"enabled": False},
                                              "targets": [{"name": "main", "url": demo_db, "pgbouncer_url": admin}]}}})
        col = DbCollector.from_config(cfg)
        try:
            text, s = _scrape(col)
        finally:
            col.close()
            client.close()
        assert _value(s, "opsstack_db_pgbouncer_up", server="main") == 1
        assert _value(s, "opsstack_db_pgbouncer_clients", database=db, user="postgres", state="active") >= 1
        assert _value(s, "opsstack_db_pgbouncer_pool_size", database=db) >= 0
        res = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_demo_faults_break_the_database_and_heal(pg_cluster):
    """`opsstack db fault partition-missing|deadlocks`: the workload applies them, the
    exporter sees them (what PostgresPartitionMissing and PostgresDeadlocks fire on)."""
    import time as _time

    from demo.db import faults
    from demo.db.seed import seed
    from demo.db.workload import Workload

    name, url = _create_db(pg_cluster.url())
    w = Workload(url, rate=20, fault_every=0.2)
    th = threading.Thread(target=w.run, daemon=True)
    try:
        seed(url, scale=0.02)
        with psycopg.connect(url, autocommit=True) as c:
            tomorrow = c.execute("select 'platform.gate_logs_' || to_char(date_trunc('day', now()) "
                                 "+ interval '1 day', 'YYYY_MM_DD')").fetchone()[0]
            faults.inject(c, "partition-missing")
            faults.inject(c, "deadlocks", rate=600)
        th.start()

        def wait_for(pred, what):
            for _ in range(300):
                if pred():
                    return
                _time.sleep(0.1)
            pytest.fail(f"workload did not {what}")

        def exists(rel):
            with psycopg.connect(url) as c:
                return c.execute("select to_regclass(%s) is not null", (rel,)).fetchone()[0]

        wait_for(lambda: not exists(tomorrow), "drop the next partition")
        wait_for(lambda: w.counts.get("deadlock", 0) >= 1, "make a deadlock")
        col = DbCollector.from_config(_cfg(url))
        try:
            _, s = _scrape(col)
        finally:
            col.close()
        assert _value(s, "opsstack_db_partition_present", datname=name, table="platform.gate_logs", period="next") == 0
        assert _value(s, "opsstack_db_partition_present", datname=name, table="platform.gate_logs",
                      period="current") == 1
        assert _value(s, "opsstack_db_deadlocks_total", datname=name) >= 1
        with psycopg.connect(url, autocommit=True) as c:
            assert faults.heal(c) == 2
        wait_for(lambda: exists(tomorrow), "recreate the partition after heal")
    finally:
        w.stop.set()
        if th.is_alive():
            th.join(15)
        _drop_db(pg_cluster.url(), name)


def test_a_missing_database_is_an_error_not_a_down_server(demo_db):
    col = DbCollector.from_config(_cfg(demo_db, targets=[{"name": "main", "url": demo_db, "databases": ["no_such_db"]}]))
    try:
        _, s = _scrape(col)
    finally:
        col.close()
    assert _value(s, "opsstack_db_up", server="main") == 1
    assert _value(s, "opsstack_db_query_errors_total", server="main", query="connect") >= 1
    assert _value(s, "opsstack_db_tables", datname=demo_db.rsplit("/", 1)[1]) > 0


def test_advisor_uses_pg_qualstats_where_available(tmp_path):
    """With pg_qualstats preloaded its index advisor adds candidates; HypoPG still proves them."""
    if not Cluster._extension_available("pg_qualstats"):
        pytest.skip("pg_qualstats not installed (apt-get install postgresql-15-pg-qualstats)")
    from demo.db.seed import seed
    from demo.db.workload import Workload

    cluster = Cluster(tmp_path / "data", port=free_port(),
                      preload=("pg_stat_statements", "hypopg", "pg_qualstats"),
                      settings={"pg_qualstats.sample_rate": "1"})
    cluster.start()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as c:
            c.execute("create database demo")
        url = cluster.url("demo")
        seed(url, scale=0.05)
        Workload(url, seed=3).run_calls(300)
        rep = advise_url(url, view(load_data({}), "exporters.db").advisor)
        assert rep.qualstats and rep.problem is None
        found = {(s.table, tuple(s.columns)) for s in rep.suggestions}
        assert ("platform.participants", ("email",)) in found
        assert ("platform.registrations", ("event_id", "status")) in found
    finally:
        cluster.stop()
