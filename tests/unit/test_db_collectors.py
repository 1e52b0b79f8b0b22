"""The database collectors (exporters/db/collectors/) and their executor, without a server.

Each collector is fed canned rows through a fake DB-API connection (`execute(...).fetchall()`,
`broken`, `closed`): what is tested is the mapping from rows to samples, and the executor's
isolation. Reading a real PostgreSQL is tests/integration/test_db_exporter.py.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import threading

import psycopg
import pytest

from core.exporter import Scrape
from exporters.db import queries
from exporters.db.collectors import COLLECTORS, DATABASE, OWN, SERVER, Collector, Queries, QueryFailed, Scope
from exporters.db.collectors.activity import ActivityCollector
from exporters.db.collectors.archiver import ArchiverCollector
from exporters.db.collectors.backup import BackupCollector
from exporters.db.collectors.base import RelationSizes, ServerFacts
from exporters.db.collectors.bgwriter import BgwriterCollector
from exporters.db.collectors.databases import DatabasesCollector
from exporters.db.collectors.indexes import IndexesCollector
from exporters.db.collectors.locks import LocksCollector
from exporters.db.collectors.partitions import PartitionsCollector
from exporters.db.collectors.pgbouncer import PgbouncerCollector, read_pools
from exporters.db.collectors.replication import ReplicationCollector
from exporters.db.collectors.retention import RetentionCollector
from exporters.db.collectors.server import ServerCollector
from exporters.db.collectors.settings import SettingsCollector
from exporters.db.collectors.statements import StatementsCollector
from exporters.db.collectors.tables import TablesCollector
from exporters.db.executor import Executor, Target
from exporters.db.metrics import METRICS, Families
from core.config import load_data, view

UTC = dt.timezone.utc
NOW = 1_800_000_000.0


# ------------------------------------------------------------------ fakes of the DB-API
class FakeCursor:
    def __init__(self, rows):
        self._rows = rows

    def fetchall(self):
        return list(self._rows)


class FakeConn:
    """Answers by query: ``answers`` maps a query string of exporters/db/queries.py (or a
    regex over the text of a composed statement) to rows, or to an exception to raise."""

    def __init__(self, answers: dict, broken: bool = False):
        self.answers = answers
        self.broken = broken
        self.closed = False
        self.executed: list[tuple[str, object]] = []

    def execute(self, query, params=None):
        text = query if isinstance(query, str) else repr(query)
        self.executed.append((text, params))
        for key, rows in self.answers.items():
            if key == text or (not isinstance(query, str) and re.search(key, text)):
                if isinstance(rows, BaseException):
                    raise rows
                return FakeCursor(rows)
        raise AssertionError(f"unexpected query: {text[:80]!r}")


def dbc(**over):
    """The view of an exporters.db section (what collectors receive)."""
    return view(load_data({"exporters": {"db": over}}), "exporters.db")


SPEC = dbc().targets[0]  # the default target's view ("main")


def run(collector: Collector, answers: dict, scope: Scope | None = None, errors: list | None = None):
    conn = FakeConn(answers)
    q = Queries(conn, "main", (errors if errors is not None else []).append)
    fams = collector.collect(q, scope or Scope(server="main", spec=SPEC, now=NOW))
    return samples(fams), q, conn


def samples(fams: Families) -> dict:
    """name -> {tuple of label values: value}."""
    out: dict = {}
    for f in fams.families():
        for s in f.samples:
            out.setdefault(s.name, {})[tuple(s.labels.values())] = s.value
    return out


def db_row(name="app", allow=True, size=8192.0):
    # queries.DATABASES: datname, numbackends, 23 counters, stats_reset, size, xid age, connlimit, allowconn
    return (name, 3, *range(10, 33), 1_700_000_000.0, size, 1234, -1, allow)


def table_row(schema="public", rel="t", seq=5, seq_rows=500, idx=95, size=65536.0):
    # queries.TABLES: 27 columns
    return (schema, rel, seq, seq_rows, idx, 900, 10, 20, 30, 4, 1000, 7, 3,
            1.0, 2.0, 3.0, 4.0, 1, 2, 3, 4, 100, 900, None, None, size, 555)


def index_row(schema="public", rel="t", name="t_pkey", scans=95, size=16384.0, constraint=True):
    # queries.INDEXES: schema, table, index, scans, read, fetched, size, constraint, blocks read, hit
    return (schema, rel, name, scans, 100, 90, size, constraint, 5, 50)


# ------------------------------------------------------------------ the registry
def test_every_collector_has_a_unique_name_a_scope_and_its_own_module():
    names = [c.name for c in COLLECTORS]
    assert len(names) == len(set(names))
    assert {c.scope for c in COLLECTORS} == {SERVER, OWN, DATABASE}
    assert all(c.__module__ == f"exporters.db.collectors.{c.name}" for c in COLLECTORS)
    order = [c.name for c in COLLECTORS]
    # what a collector reads from an earlier one in the same job
    assert order.index("server") == 0 and order.index("databases") < order.index("activity")
    assert order.index("server") < order.index("replication") and order.index("indexes") < order.index("tables")


def test_collector_metrics_are_declared():
    assert METRICS["opsstack_db_collector_success"][2] == ["server", "collector"]
    assert METRICS["opsstack_db_collector_duration_seconds"][2] == ["server", "collector"]


# ------------------------------------------------------------------ server-wide collectors
def test_server_maps_its_row_and_tells_later_collectors_about_recovery():
    scope = Scope(server="main", spec=SPEC, now=NOW)
    row = (150004, "15.4", 1_700_000_000.0, True, 30, 120, 3, None, "always", None)
    s, _, _ = run(ServerCollector(dbc()), {queries.SERVER: [row]}, scope)
    assert s["opsstack_db_version_info"] == {("main", "15.4"): 1}
    assert s["opsstack_db_connections_used_ratio"] == {("main",): 0.25}
    assert s["opsstack_db_in_recovery"] == {("main",): 1} and s["opsstack_db_archiver_enabled"] == {("main",): 1}
    assert "opsstack_db_wal_position_bytes" not in s  # standby: no WAL position
    assert scope.facts.in_recovery is True


def test_server_query_failing_means_the_target_is_down():
    with pytest.raises(QueryFailed):
        run(ServerCollector(dbc()), {queries.SERVER: psycopg.errors.QueryCanceled("canceling statement")})


def test_settings_in_base_units():
    rows = [("shared_buffers", "16384", "8kB", "integer"), ("statement_timeout", "2000", "ms", "integer"),
            ("fsync", "on", None, "bool"), ("wal_level", "replica", None, "enum")]
    s, _, _ = run(SettingsCollector(dbc()), {queries.SETTINGS: rows})
    assert s["opsstack_db_setting_bytes"] == {("main", "shared_buffers"): 16384 * 8192.0}
    assert s["opsstack_db_setting_seconds"] == {("main", "statement_timeout"): 2.0}
    assert s["opsstack_db_setting"] == {("main", "fsync"): 1.0}


def test_databases_counters_sizes_cache_and_the_databases_found():
    c = DatabasesCollector(dbc(sizes_interval="60s"))
    scope = Scope(server="main", spec=SPEC, now=NOW)
    conflicts = [("app", 1, 2, 3, 4, 5)]
    s, _, conn = run(c, {queries.DATABASES: [db_row(), db_row("closed", allow=False)],
                         queries.CONFLICTS: conflicts}, scope)
    assert conn.executed[0][1] == {"sizes": True}
    assert scope.facts.databases == ["app"]  # datallowconn only
    assert s["opsstack_db_xact_commit_total"][("main", "app")] == 10
    assert s["opsstack_db_sessions_killed_total"][("main", "app")] == 32
    assert s["opsstack_db_cache_hit_ratio"][("main", "app")] == 13 / (12 + 13)
    assert s["opsstack_db_database_size_bytes"][("main", "app")] == 8192
    assert s["opsstack_db_recovery_conflicts_total"][("main", "app", "deadlock")] == 5
    # within sizes_interval: sizes are not re-read, the cached ones are exported
    s, _, conn = run(c, {queries.DATABASES: [db_row(size=None)], queries.CONFLICTS: []},
                     Scope(server="main", spec=SPEC, now=NOW + 10))
    assert conn.executed[0][1] == {"sizes": False}
    assert s["opsstack_db_database_size_bytes"][("main", "app")] == 8192


def test_activity_per_state_and_per_database():
    facts = ServerFacts(databases=["app", "idle_db"])
    rows = [("app", "active", 4, 30.0, 12.5, 1, 3.0, 2), ("app", "idle in transaction", 1, 90.0, 0.0, 1, 8.0, 0)]
    s, q, conn = run(ActivityCollector(dbc(statements={"slow_threshold": "5s"})), {queries.ACTIVITY: rows},
                     Scope(server="main", spec=SPEC, now=NOW, facts=facts))
    assert conn.executed[0][1] == {"slow": 5.0}
    assert s["opsstack_db_activity_connections"][("main", "app", "idle in transaction")] == 1
    assert s["opsstack_db_activity_max_query_duration_seconds"] == {("main", "app"): 12.5, ("main", "idle_db"): 0}
    assert s["opsstack_db_lock_waiting_connections"][("main", "app")] == 2
    assert s["opsstack_db_lock_wait_max_seconds"][("main", "app")] == 8.0
    assert s["opsstack_db_activity_slow_queries"][("main", "app")] == 2


def test_locks_bgwriter_archiver():
    s, _, _ = run(LocksCollector(dbc()), {queries.LOCKS: [("app", "AccessShareLock", True, 3),
                                                         ("", "ExclusiveLock", False, 1)]})
    assert s["opsstack_db_locks"] == {("main", "app", "AccessShareLock", "true"): 3,
                                      ("main", "", "ExclusiveLock", "false"): 1}
    s, _, _ = run(BgwriterCollector(dbc()), {queries.BGWRITER: [tuple(range(1, 12))]})
    assert s["opsstack_db_checkpoints_timed_total"] == {("main",): 1}
    assert s["opsstack_db_bgwriter_stats_reset_timestamp_seconds"] == {("main",): 11}
    s, _, _ = run(ArchiverCollector(dbc()), {queries.ARCHIVER: [(10, 2, 1_700_000_000.0, None)]})
    assert s["opsstack_db_archiver_archived_total"] == {("main",): 10}
    assert s["opsstack_db_archiver_last_failed_timestamp_seconds"] == {("main",): 0}


def test_replication_on_a_primary_and_on_a_standby():
    rows = [("replica-1", "streaming", 0.5, 0.1, 0.2, 4096)]
    slots = [("slot_a", "physical", True, 8192)]
    s, _, _ = run(ReplicationCollector(dbc()), {queries.REPLICATION: rows, queries.SLOTS: slots})
    assert s["opsstack_db_replicas"] == {("main",): 1}
    assert s["opsstack_db_replication_lag_seconds"] == {("main", "replica-1"): 0.5}
    assert s["opsstack_db_replication_slot_retained_bytes"] == {("main", "slot_a", "physical"): 8192}
    standby = Scope(server="main", spec=SPEC, now=NOW, facts=ServerFacts(in_recovery=True))
    s, _, conn = run(ReplicationCollector(dbc()), {queries.STANDBY: [(3.0, 100)], queries.SLOTS: []}, standby)
    assert queries.REPLICATION not in [t for t, _ in conn.executed]
    assert s["opsstack_db_replicas"] == {("main",): 0}
    assert s["opsstack_db_replication_lag_seconds"] == {("main", "self"): 3.0}


def test_backup_from_a_file_a_query_and_a_failing_query(tmp_path):
    f = tmp_path / "base-1.done"
    f.write_text("ok")
    os.utime(f, (1_700_000_000, 1_700_000_000))
    s, _, _ = run(BackupCollector(dbc(backup={"source": "file", "path": str(tmp_path / "base-*.done")})), {})
    assert s["opsstack_db_backup_last_success_timestamp_seconds"] == {("main",): 1_700_000_000}
    sql = "select max(finished) from backups"
    finished = dt.datetime(2025, 1, 2, tzinfo=UTC)
    s, _, _ = run(BackupCollector(dbc(backup={"source": "query", "query": sql})), {sql: [(finished,)]})
    assert s["opsstack_db_backup_last_success_timestamp_seconds"] == {("main",): finished.timestamp()}
    errors: list = []
    s, q, _ = run(BackupCollector(dbc(backup={"source": "query", "query": sql})),
                  {sql: psycopg.errors.UndefinedTable("relation \"backups\" does not exist")}, errors=errors)
    assert s == {"opsstack_db_backup_configured": {("main",): 1}}  # no timestamp rather than a wrong one
    assert q.failed == 1 and errors == ["backup"]
    s, _, _ = run(BackupCollector(dbc()), {})
    assert s == {"opsstack_db_backup_configured": {("main",): 0}}


def test_pgbouncer_pools_from_the_admin_console():
    class Col:
        def __init__(self, name):
            self.name = name

    class AdminCursor:
        answers = {
            "SHOW POOLS": (["database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
                            "sv_tested", "sv_login", "maxwait", "maxwait_us"],
                           [("app", "web", 7, 2, 3, 1, 0, 0, 0, 1, 500000)]),
            "SHOW DATABASES": (["name", "host", "pool_size"], [("app", "db", 20), ("pgbouncer", None, None)]),
        }

        def execute(self, q):
            cols, self._rows = self.answers[q]
            self.description = [Col(c) for c in cols]

        def fetchall(self):
            return self._rows

    fams = Families()
    read_pools(AdminCursor(), "main", fams)
    s = samples(fams)
    assert s["opsstack_db_pgbouncer_clients"] == {("main", "app", "web", "active"): 7,
                                                  ("main", "app", "web", "waiting"): 2}
    assert s["opsstack_db_pgbouncer_max_wait_seconds"] == {("main", "app", "web"): 1.5}
    assert s["opsstack_db_pgbouncer_pool_size"] == {("main", "app"): 20}
    with_pgb = dbc(targets=[{"name": "main", "pgbouncer_url": "postgresql://x@h:6432/pgbouncer"}])
    assert PgbouncerCollector.enabled(with_pgb.targets[0], with_pgb)
    assert not PgbouncerCollector.enabled(SPEC, dbc())


# ------------------------------------------------------------------ pg_stat_statements
def _pgss_answers(texts=None):
    t_row = ("t", 1, None, 100, 12.0, 0.5, 1000, 50, 5, 0, 42, 1, "app")
    q_rows = [  # the same statement twice (two users), and another one
        ("q", 1, "111", 10, 4.0, None, 10, 1, 1, 0, None, 0.9, "app"),
        ("q", 1, "111", 30, 2.0, None, 30, 1, 1, 0, None, 0.3, "app"),
        ("q", 1, "222", 60, 5.0, None, 60, 1, 1, 0, None, 0.2, "app"),
    ]
    if texts is None:
        texts = [("app", "111", "select  *\n from t where id = $1"), ("app", "222", "update t set v = $1")]
    return {queries.PGSS_SCHEMA: [("public",)], r"pg_stat_statements\(false\)": [t_row, *q_rows],
            r"pg_stat_statements\(true\)": texts}


def test_statements_totals_top_n_merged_and_texts_cached():
    c = StatementsCollector(dbc(statements={"top": 1}))
    answers = _pgss_answers()
    s, q, conn = run(c, answers)
    assert s["opsstack_db_pg_stat_statements_available"] == {("main",): 1}
    assert s["opsstack_db_statements_calls_total"] == {("main", "app"): 100}
    assert s["opsstack_db_statements_mean_exec_seconds"] == {("main", "app"): 0.12}
    # top 1 by execution time: "111" (4 + 2 s) merged over its two entries
    assert s["opsstack_db_statement_calls_total"] == {("main", "app", "111"): 40}
    assert s["opsstack_db_statement_max_exec_seconds"] == {("main", "app", "111"): 0.9}
    assert s["opsstack_db_statement_info"] == {("main", "app", "111", "select * from t where id = $1"): 1}
    assert q.failed == 0
    # the next scrape does not read the text again
    s, _, conn = run(c, _pgss_answers(texts=AssertionError("text read twice")))
    assert len(conn.executed) == 2
    assert ("main", "app", "111", "select * from t where id = $1") in s["opsstack_db_statement_info"]


def test_statements_without_the_extension():
    c = StatementsCollector(dbc())
    s, q, _ = run(c, {queries.PGSS_SCHEMA: []})
    assert s["opsstack_db_pg_stat_statements_available"] == {("main",): 0}
    assert "opsstack_db_statements_calls_total" not in s and q.failed == 0
    # created but not preloaded: the read fails, an expected state (not a query error)
    s, q, _ = run(c, {queries.PGSS_SCHEMA: [("public",)],
                      r"pg_stat_statements\(false\)": psycopg.errors.ObjectNotInPrerequisiteState(
                          "pg_stat_statements must be loaded via shared_preload_libraries")})
    assert s["opsstack_db_pg_stat_statements_available"] == {("main",): 0} and q.failed == 0


# ------------------------------------------------------------------ per-database collectors
def _db_scope(sizes: RelationSizes, now=NOW, interval=60.0) -> Scope:
    return Scope(server="main", spec=SPEC, now=now, datname="app", sizes=sizes, sizes_due=sizes.due(now, interval))


def test_indexes_then_tables_share_index_sizes_and_the_size_cache():
    sizes = RelationSizes()
    scope = _db_scope(sizes)
    idx = [index_row(), index_row(name="t_v_idx", scans=0, size=4096.0, constraint=False)]
    si, _, conn = run(IndexesCollector(dbc(max_tables=10)), {queries.INDEXES: idx}, scope)
    assert conn.executed[0][1] == {"max_indexes": 40, "sizes": True}
    assert si["opsstack_db_index_unused"] == {("main", "app", "public", "t", "t_pkey"): 0,
                                              ("main", "app", "public", "t", "t_v_idx"): 1}
    assert si["opsstack_db_unused_indexes_size_bytes"] == {("main", "app"): 4096}
    st, _, _ = run(TablesCollector(dbc(seq_scan_heavy_rows=100)), {queries.TABLES: [table_row()]}, scope)
    lab = ("main", "app", "public", "t")
    assert st["opsstack_db_table_indexes_size_bytes"] == {lab: 16384 + 4096}
    assert st["opsstack_db_table_index_usage_ratio"] == {lab: 0.95}
    assert st["opsstack_db_table_heavy_seq_scan"] == {lab: 0}
    assert st["opsstack_db_table_last_vacuum_timestamp_seconds"][lab + ("auto",)] == 2.0
    assert st["opsstack_db_table_blocks_hit_total"] == {lab + ("heap",): 900}  # no toast table: no toast series
    assert st["opsstack_db_sizes_cache_age_seconds"] == {("main", "app"): 0}
    assert sizes.when == NOW and sizes.tables == {("public", "t"): 65536}
    # 10 s later the sizes are not re-read: the cached ones are exported
    later = _db_scope(sizes, now=NOW + 10)
    si, _, conn = run(IndexesCollector(dbc()), {queries.INDEXES: [index_row(size=None)]}, later)
    assert conn.executed[0][1]["sizes"] is False
    assert si["opsstack_db_index_size_bytes"] == {("main", "app", "public", "t", "t_pkey"): 16384}
    st, _, _ = run(TablesCollector(dbc()), {queries.TABLES: [table_row(size=None)]}, later)
    assert st["opsstack_db_table_size_bytes"] == {lab: 65536}
    assert st["opsstack_db_sizes_cache_age_seconds"] == {("main", "app"): 10}


def test_tables_query_failing_keeps_the_other_facts_and_is_counted():
    errors: list = []
    s, q, _ = run(TablesCollector(dbc()), {queries.TABLES: psycopg.errors.LockNotAvailable("lock timeout")},
                  _db_scope(RelationSizes()), errors=errors)
    assert s == {} and q.failed == 1 and errors == ["tables"]


def test_partitions_health_of_the_configured_tables():
    rows = [("platform", "events", "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')"),
            ("platform", "events", "DEFAULT"),
            ("public", "p", None)]  # partitioned, no partition yet
    now = dt.datetime(2026, 11, 15, tzinfo=UTC)
    c = PartitionsCollector(dbc(lifecycle={"partitions": [{"table": "platform.events", "period": "month"}]}))
    s, _, _ = run(c, {queries.PARTITIONS: rows, queries.PARTITIONED_SIZES: [("platform", "events", 1e6, 50.0)],
                      "select now()": [(now,)]}, _db_scope(RelationSizes()))
    assert s["opsstack_db_partitions"] == {("main", "app", "platform.events"): 2, ("main", "app", "public.p"): 0}
    assert s["opsstack_db_partition_default_present"][("main", "app", "platform.events")] == 1
    assert s["opsstack_db_partition_present"] == {("main", "app", "platform.events", "current"): 1,
                                                  ("main", "app", "platform.events", "next"): 0}
    assert s["opsstack_db_partition_newest_upper_bound_timestamp_seconds"] == {
        ("main", "app", "platform.events"): dt.datetime(2026, 12, 1, tzinfo=UTC).timestamp()}
    assert s["opsstack_db_partitioned_table_size_bytes"] == {("main", "app", "platform.events"): 1e6}


def test_retention_counts_old_rows_and_caches_them():
    c = RetentionCollector(dbc(lifecycle={"retention": [{"table": "platform.events", "column": "starts_at",
                                                         "max_age": "30d"},
                                                        {"table": "other.gone", "column": "at", "max_age": "1d"}]}))
    answers = {queries.REGCLASS: [(True,)], r"count": [(42,)]}

    class OnlyEvents(FakeConn):
        def execute(self, query, params=None):
            if query == queries.REGCLASS and params == ("other.gone",):
                self.executed.append((query, params))
                return FakeCursor([(False,)])
            return super().execute(query, params)

    q = Queries(OnlyEvents(answers), "main")
    s = samples(c.collect(q, _db_scope(RelationSizes())))
    assert s["opsstack_db_rows_older_than_retention"] == {("main", "app", "platform.events"): 42}
    assert s["opsstack_db_retention_max_age_seconds"] == {("main", "app", "platform.events"): 30 * 86400}
    # within lifecycle.interval: no query, the cached count and its age
    s, _, conn = run(c, {}, _db_scope(RelationSizes(), now=NOW + 60))
    assert conn.executed == []
    assert s["opsstack_db_lifecycle_cache_age_seconds"] == {("main", "app"): 60}
    assert not RetentionCollector.enabled(SPEC, dbc(lifecycle={"retention": []}))


# ------------------------------------------------------------------ the executor
class FakeHandle:
    def __init__(self, conn, dbname="app"):
        self.conn, self.dbname, self.url = conn, dbname, f"postgresql://postgres@127.0.0.1:5/{dbname}"
        self.lock = threading.Lock()
        self.discarded = 0

    def get(self):
        return self.conn

    def discard(self):
        self.discarded += 1

    def close(self):
        pass


class Boom(Collector):
    name = "boom"

    def collect(self, q, scope):
        raise ValueError("a row the collector did not expect")


class Fails(Collector):
    name = "fails"

    def collect(self, q, scope):
        fams = Families()
        q.rows("fails", queries.LOCKS)
        fams.add("opsstack_db_backup_configured", [scope.server], 0)
        return fams


def _target(server_answers: dict, db_answers: dict, server_collectors, db_collectors) -> Target:
    cfg = load_data({"exporters": {"db": {"targets": [{"name": "main", "url": "postgresql://postgres@127.0.0.1:5/app"}],
                                          "advisor": {"enabled": False}}}})
    d = view(cfg, "exporters.db")
    t = Target(d.targets[0], d, view(cfg, "database"))
    t.server_handle = FakeHandle(FakeConn(server_answers))
    t.stats_handle = FakeHandle(FakeConn({queries.PGSS_SCHEMA: []}))
    t.handles["app"] = FakeHandle(FakeConn(db_answers))
    t.collectors = {SERVER: server_collectors, OWN: [StatementsCollector(d)],
                    DATABASE: db_collectors}
    return t


SERVER_ROW = (150004, "15.4", 1_700_000_000.0, False, 3, 100, 3, 1e9, "off", None)


def scrape_once(t) -> tuple[dict, Scrape]:
    """One scrape of target ``t`` by a fresh executor: (samples, the Scrape record)."""
    ex = Executor(workers=2)
    try:
        fams = Families()
        scrape = Scrape("db")
        ex.collect(t, fams, scrape)
    finally:
        ex.close()
    return samples(fams), scrape


def test_executor_isolates_a_failing_collector_and_records_each_run():
    d = dbc()
    t = _target({queries.SERVER: [SERVER_ROW], queries.LOCKS: psycopg.errors.QueryCanceled("statement timeout"),
                 queries.SETTINGS: [("max_connections", "100", None, "integer")]},
                {queries.TABLES: [table_row()]},
                [ServerCollector(d), Boom(d), Fails(d), SettingsCollector(d)], [TablesCollector(d)])
    s, scrape = scrape_once(t)
    assert s["opsstack_db_up"] == {("main",): 1} and scrape.sources == {"main": True}
    assert s["opsstack_db_collector_success"] == {
        ("main", "server"): 1, ("main", "boom"): 0, ("main", "fails"): 0, ("main", "settings"): 1,
        ("main", "statements"): 1, ("main", "tables"): 1}
    assert set(s["opsstack_db_collector_duration_seconds"]) == set(s["opsstack_db_collector_success"])
    assert all(v >= 0 for v in s["opsstack_db_collector_duration_seconds"].values())
    # the collectors after the failing ones ran; a failed query keeps the collector's other samples
    assert s["opsstack_db_setting"] == {("main", "max_connections"): 100}
    assert s["opsstack_db_backup_configured"] == {("main",): 0}
    assert ("main", "app", "public", "t") in s["opsstack_db_table_live_rows"]
    assert s["opsstack_db_query_errors_total"] == {("main", "fails"): 1}


def test_executor_a_lost_server_connection_is_the_target_down():
    d = dbc()
    t = _target({queries.SERVER: [SERVER_ROW]}, {queries.TABLES: [table_row()]},
                [ServerCollector(d), SettingsCollector(d)], [TablesCollector(d)])
    t.server_handle.conn.answers[queries.SETTINGS] = psycopg.OperationalError("server closed the connection")
    t.server_handle.conn.broken = True
    s, scrape = scrape_once(t)
    assert s["opsstack_db_up"] == {("main",): 0} and scrape.sources == {"main": False}
    assert t.server_handle.discarded == 1
    assert "opsstack_db_table_live_rows" not in s  # what the other connections read is dropped
    assert s["opsstack_db_collector_success"] == {("main", "server"): 1, ("main", "settings"): 0}
