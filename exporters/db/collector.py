"""The PostgreSQL collector: reads every configured server at scrape time.

Per target (a server) a small pool of connections, kept between scrapes (conn.py): one
for the server-wide facts, one for pg_stat_statements, one per database for its tables,
indexes and partitions; they are read at the same time by a few threads (psycopg
releases the GIL while PostgreSQL works). Every statement is bounded by
`statement_timeout`; a failing query is counted (`opsstack_db_query_errors_total`) and
logged, and the scrape goes on. A server that does not answer gives `opsstack_db_up 0`
and `opsstack_exporter_up{source} 0` with one log line, never an exception; the next
scrape reconnects.

Cached because expensive, with their age exported: sizes (`sizes_interval`), old-row
counts (`lifecycle.interval`) and the index advisor's suggestions (`advisor.interval`,
computed in a background thread so that a scrape never waits for it).
"""
from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from exporters.common import ExporterCollector, Scrape
from exporters.db import logic, queries
from exporters.db.conn import DbHandle, redact, target_url, with_dbname
from exporters.db.metrics import Families, render_families
from stack.config import ConfigError

log = logging.getLogger("opsstack.exporter.db")

PGSS_HINT = ("add pg_stat_statements to shared_preload_libraries, restart PostgreSQL, "
             "then run CREATE EXTENSION pg_stat_statements in the target database")


def check_config(dbc: dict) -> None:
    b = dbc["backup"]
    if b["source"] == "file" and not b["path"]:
        raise ConfigError("exporters.db.backup.path", "is required when backup.source is file")
    if b["source"] == "query" and not b["query"]:
        raise ConfigError("exporters.db.backup.query", "is required when backup.source is query")
    for i, t in enumerate(dbc["targets"]):
        for j, d in enumerate(t["databases"]):
            if not isinstance(d, str) or not d:
                raise ConfigError(f"exporters.db.targets[{i}].databases[{j}]", "must be a database name or '*'")


class QueryFailed(Exception):
    pass


class Target:
    """One server: a connection for server-wide facts, one per database, and its caches."""

    def __init__(self, spec: dict, cfg: dict):
        dbc = cfg["exporters"]["db"]
        self.name = spec["name"]
        self.spec = spec
        self.url = target_url(spec, cfg)
        self.connect_timeout = dbc["connect_timeout"]
        self.statement_timeout = dbc["statement_timeout"]
        self.server_handle = DbHandle(self.url, self.connect_timeout, self.statement_timeout) if self.url else None
        self.primary_db = self.server_handle.dbname if self.server_handle else ""
        # pg_stat_statements is read on its own connection, next to the other server-wide facts
        self.stats_handle = DbHandle(self.url, self.connect_timeout, self.statement_timeout) if self.url else None
        self.handles: "OrderedDict[str, DbHandle]" = OrderedDict()
        self.errors: dict[str, int] = {}
        self._err_lock = threading.Lock()
        self.pgss_state: bool | None = None
        self.pgss_texts: "OrderedDict[tuple, str]" = OrderedDict()
        self.lifecycle_cache: dict[str, tuple[float, list]] = {}
        # sizes: (when read, values); refreshed every sizes_interval
        self.db_sizes: tuple[float, dict] = (0.0, {})
        self.rel_sizes: dict[str, tuple[float, dict, dict]] = {}
        self.part_sizes: dict[str, list] = {}
        self.lock = threading.Lock()

    def db_handle(self, dbname: str) -> DbHandle:
        h = self.handles.get(dbname)
        if h is None:
            h = self.handles[dbname] = DbHandle(with_dbname(self.url, dbname), self.connect_timeout,
                                                self.statement_timeout)
        return h

    def count_error(self, group: str) -> None:
        with self._err_lock:
            self.errors[group] = self.errors.get(group, 0) + 1

    def close(self) -> None:
        for h in (self.server_handle, self.stats_handle):
            if h is not None:
                h.close()
        for h in list(self.handles.values()):
            h.close()


class DbCollector(ExporterCollector):
    exporter = "db"

    def __init__(self, cfg: dict, advisor=None):
        self.cfg = cfg
        self.dbc = cfg["exporters"]["db"]
        check_config(self.dbc)
        self.targets = [Target(t, cfg) for t in self.dbc["targets"]]
        self.advisor = advisor  # exporters.db.advisor.AdvisorCache or None
        # per-database collection runs next to the server-wide one: a small pool of threads,
        # one connection each (psycopg releases the GIL while the server works)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="db-scrape")
        self._label_cache: dict = {}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for t in self.targets:
            t.close()

    # ------------------------------------------------------------------ scrape
    def collect_sources(self, scrape: Scrape):
        return self._collect(scrape).families()

    def _collect(self, scrape: Scrape) -> Families:
        fams = Families()
        for t in self.targets:
            with t.lock:
                ok = self._collect_target(t, fams, scrape)
            fams.add("opsstack_db_up", [t.name], 1 if ok else 0)
            for q, n in sorted(t.errors.items()):
                fams.add("opsstack_db_query_errors_total", [t.name, q], n)
        if self.advisor is not None:
            self.advisor.export(fams)
        return fams

    def scrape_text(self) -> str:
        """One scrape in the text format (what /metrics serves): fast path of collect()."""
        scrape = Scrape(self.exporter)
        if len(self._label_cache) > 200_000:  # tables come and go: keep it bounded
            self._label_cache.clear()
        try:
            body = self._collect(scrape).render(self._label_cache)
        except Exception as exc:  # like ExporterCollector.collect: never fail the scrape
            scrape.set_up(self.exporter, False, f"{type(exc).__name__}: {exc}")
            body = ""
        return body + render_families(scrape.metrics())

    def _collect_target(self, t: Target, fams: Families, scrape: Scrape) -> bool:
        if not t.url:
            scrape.set_up(t.name, False, "no URL: set exporters.db.targets[].url or database.url")
            return False
        stats = self._pool.submit(self._stats_job, t)
        first = self._pool.submit(self._db_job, t, t.primary_db, t.db_handle(t.primary_db))
        srv = t.server_handle
        with srv.lock:
            try:
                dbnames = self._server(t, srv.get(), fams)
            except (psycopg.OperationalError, psycopg.InterfaceError, QueryFailed) as exc:
                srv.discard()
                scrape.set_up(t.name, False, f"{redact(srv.url)}: {_first_line(exc)}")
                stats.result()  # the server is down: what the other jobs read is dropped
                first.result()
                return False
        scrape.set_up(t.name, True)
        wanted = self._databases(t, t.primary_db, dbnames)
        fams.merge(stats.result())
        jobs = [(t.primary_db, first)] + [(name, self._pool.submit(self._db_job, t, name, t.db_handle(name)))
                                          for name in wanted]
        for name, j in jobs:
            local, error = j.result()
            fams.merge(local)
            if error:
                t.count_error("connect")
                log.warning("event=database_failed server=%s datname=%s error=%r", t.name, name, error)
        # forget databases that went away
        for name in list(t.handles):
            if name != t.primary_db and name not in wanted:
                t.handles.pop(name).close()
        return True

    def _stats_job(self, t: Target) -> Families:
        local = Families()
        h = t.stats_handle
        with h.lock:
            try:
                self._statements(t, h.get(), local)
            except (psycopg.OperationalError, psycopg.InterfaceError, QueryFailed):
                h.discard()  # the server-wide part reports the server down
                return Families()
        return local

    def _db_job(self, t: Target, name: str, h: DbHandle) -> tuple[Families, str | None]:
        """(what one database's connection read, or the error that stopped it)."""
        local = Families()
        with h.lock:
            try:
                self._database(t, name, h.get(), local)
            except (psycopg.OperationalError, psycopg.InterfaceError, QueryFailed) as exc:
                h.discard()
                return Families(), _first_line(exc)
        return local, None

    def _databases(self, t: Target, primary: str, existing: list[str]) -> list[str]:
        names = t.spec["databases"]
        if "*" in names:
            return [d for d in existing if d != primary]
        return [d for d in names if d != primary]

    # ------------------------------------------------------------------ helpers
    def _q(self, t: Target, conn, group: str, query, params=None) -> list | None:
        """Run one query; on failure count it, log it and return None (the scrape goes on).

        A failure that broke the connection raises QueryFailed: the server is down.
        """
        try:
            return conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise QueryFailed(_first_line(exc)) from None
            t.count_error(group)
            log.warning("event=query_failed server=%s query=%s error=%r", t.name, group, _first_line(exc))
            return None

    # ------------------------------------------------------------------ server-wide
    def _server(self, t: Target, conn, fams: Families) -> list[str]:
        s = t.name
        rows = self._q(t, conn, "server", queries.SERVER)
        if rows is None:
            raise QueryFailed("cannot read the server's state")
        (vnum, version, start, recovery, backends, max_conn, _reserved, wal, archive_mode, now) = rows[0]
        add = fams.add
        add("opsstack_db_version_info", [s, version], 1)
        add("opsstack_db_server_version_num", [s], vnum)
        add("opsstack_db_start_time_seconds", [s], start)
        add("opsstack_db_in_recovery", [s], 1 if recovery else 0)
        add("opsstack_db_connections", [s], backends)
        add("opsstack_db_max_connections", [s], max_conn)
        add("opsstack_db_connections_used_ratio", [s], logic.ratio(backends, max_conn))
        add("opsstack_db_wal_position_bytes", [s], wal)
        add("opsstack_db_archiver_enabled", [s], 1 if archive_mode in ("on", "always") else 0)

        for name, setting, unit, vartype in self._q(t, conn, "settings", queries.SETTINGS) or []:
            v = logic.setting_value(setting, unit, vartype)
            if v is not None:
                kind, value = v
                metric = {"": "opsstack_db_setting", "seconds": "opsstack_db_setting_seconds",
                          "bytes": "opsstack_db_setting_bytes"}[kind]
                add(metric, [s, name], value)

        now = time.time()
        sizes = now - t.db_sizes[0] >= self.dbc["sizes_interval"]
        dbnames = []
        rows = self._q(t, conn, "databases", queries.DATABASES, {"sizes": sizes}) or []
        if sizes and rows:
            t.db_sizes = (now, {r[0]: r[26] for r in rows})
        for r in rows:
            d = r[0]
            if r[29]:
                dbnames.append(d)
            lab = [s, d]
            add("opsstack_db_backends", lab, r[1])
            for i, m in ((2, "xact_commit"), (3, "xact_rollback"), (4, "blocks_read"), (5, "blocks_hit"),
                         (6, "tuples_returned"), (7, "tuples_fetched"), (8, "tuples_inserted"),
                         (9, "tuples_updated"), (10, "tuples_deleted"), (11, "conflicts"),
                         (12, "temp_files"), (13, "temp_bytes"), (14, "deadlocks"), (15, "checksum_failures"),
                         (16, "block_read_seconds"), (17, "block_write_seconds"), (18, "session_seconds"),
                         (19, "active_seconds"), (20, "idle_in_transaction_seconds"), (21, "sessions"),
                         (22, "sessions_abandoned"), (23, "sessions_fatal"), (24, "sessions_killed")):
                add(f"opsstack_db_{m}_total", lab, r[i])
            add("opsstack_db_cache_hit_ratio", lab, logic.ratio(r[5] or 0, (r[4] or 0) + (r[5] or 0)))
            add("opsstack_db_stats_reset_timestamp_seconds", lab, r[25])
            add("opsstack_db_database_size_bytes", lab, r[26] if sizes else t.db_sizes[1].get(d))
            add("opsstack_db_database_xid_age", lab, r[27])
            add("opsstack_db_database_connection_limit", lab, r[28])

        for r in self._q(t, conn, "conflicts", queries.CONFLICTS) or []:
            for i, reason in enumerate(("tablespace", "lock", "snapshot", "bufferpin", "deadlock"), start=1):
                add("opsstack_db_recovery_conflicts_total", [s, r[0], reason], r[i])

        slow = self.dbc["statements"]["slow_threshold"]
        act: dict[str, list] = {}
        for d, state, n, max_tx, max_q, lock_n, lock_max, slow_n in \
                self._q(t, conn, "activity", queries.ACTIVITY, {"slow": slow}) or []:
            add("opsstack_db_activity_connections", [s, d, state], n)
            add("opsstack_db_activity_max_tx_duration_seconds", [s, d, state], max_tx)
            a = act.setdefault(d, [0.0, 0, 0.0, 0])
            a[0] = max(a[0], max_q)
            a[1] += lock_n
            a[2] = max(a[2], lock_max)
            a[3] += slow_n
        for d in dbnames:
            a = act.get(d, [0.0, 0, 0.0, 0])
            add("opsstack_db_activity_max_query_duration_seconds", [s, d], a[0])
            add("opsstack_db_lock_waiting_connections", [s, d], a[1])
            add("opsstack_db_lock_wait_max_seconds", [s, d], a[2])
            add("opsstack_db_activity_slow_queries", [s, d], a[3])

        for d, mode, granted, n in self._q(t, conn, "locks", queries.LOCKS) or []:
            add("opsstack_db_locks", [s, d, mode, "true" if granted else "false"], n)

        bg = self._q(t, conn, "bgwriter", queries.BGWRITER)
        if bg:
            r = bg[0]
            for i, m in enumerate(("checkpoints_timed_total", "checkpoints_requested_total",
                                   "checkpoint_write_seconds_total", "checkpoint_sync_seconds_total",
                                   "buffers_checkpoint_total", "buffers_clean_total",
                                   "bgwriter_maxwritten_clean_total", "buffers_backend_total",
                                   "buffers_backend_fsync_total", "buffers_alloc_total",
                                   "bgwriter_stats_reset_timestamp_seconds")):
                add(f"opsstack_db_{m}", [s], r[i])

        ar = self._q(t, conn, "archiver", queries.ARCHIVER)
        if ar:
            archived, failed, last_ok, last_fail = ar[0]
            add("opsstack_db_archiver_archived_total", [s], archived)
            add("opsstack_db_archiver_failed_total", [s], failed)
            add("opsstack_db_archiver_last_archived_timestamp_seconds", [s], last_ok or 0)
            add("opsstack_db_archiver_last_failed_timestamp_seconds", [s], last_fail or 0)

        reps = self._q(t, conn, "replication", queries.REPLICATION) or [] if not recovery else []
        add("opsstack_db_replicas", [s], len(reps))
        for replica, _state, replay, write, flush, lag_bytes in reps:
            add("opsstack_db_replication_lag_seconds", [s, replica], replay or 0.0)
            add("opsstack_db_replication_write_lag_seconds", [s, replica], write or 0.0)
            add("opsstack_db_replication_flush_lag_seconds", [s, replica], flush or 0.0)
            add("opsstack_db_replication_lag_bytes", [s, replica], lag_bytes)
        if recovery:
            sb = self._q(t, conn, "standby", queries.STANDBY)
            if sb:
                add("opsstack_db_replication_lag_seconds", [s, "self"], sb[0][0])
                add("opsstack_db_replication_lag_bytes", [s, "self"], sb[0][1])
        for slot, stype, active, retained in self._q(t, conn, "slots", queries.SLOTS) or []:
            add("opsstack_db_replication_slot_active", [s, slot, stype], 1 if active else 0)
            add("opsstack_db_replication_slot_retained_bytes", [s, slot, stype], retained)

        self._backup(t, conn, fams)
        if t.spec.get("pgbouncer_url"):
            self._pgbouncer(t, fams)
        return dbnames

    def _statements(self, t: Target, conn, fams: Families) -> None:
        s = t.name
        st = self.dbc["statements"]
        fams.add("opsstack_db_statements_slow_threshold_seconds", [s], st["slow_threshold"])
        rows = self._q(t, conn, "pg_stat_statements", queries.PGSS_SCHEMA)
        available = False
        problem = "extension not created in the database"
        if rows:
            ns = sql.Identifier(rows[0][0])
            try:
                result = conn.execute(sql.SQL(queries.PGSS).format(ns=ns),
                                      {"slow_ms": st["slow_threshold"] * 1000, "top": st["top"] * 3}).fetchall()
                available = True
            except psycopg.Error as exc:
                if conn.broken:
                    raise QueryFailed(_first_line(exc)) from None
                problem = _first_line(exc)
        if available != t.pgss_state:
            if available:
                log.info("event=pg_stat_statements_available server=%s", t.name)
            else:
                log.warning("event=pg_stat_statements_missing server=%s problem=%r hint=%r", t.name, problem,
                            PGSS_HINT)
            t.pgss_state = available
        fams.add("opsstack_db_pg_stat_statements_available", [s], 1 if available else 0)
        if not available:
            return
        top = []
        for kind, _dbid, qid, calls, exec_s, plan_s, nrows, hit, read, temp, n, x, d in result:
            if kind == "q":
                top.append((d, qid, calls, exec_s, nrows, hit, read, temp, x))
                continue
            lab = [s, d]
            fams.add("opsstack_db_statements_calls_total", lab, calls)
            fams.add("opsstack_db_statements_exec_seconds_total", lab, exec_s)
            fams.add("opsstack_db_statements_plan_seconds_total", lab, plan_s)
            fams.add("opsstack_db_statements_rows_total", lab, nrows)
            fams.add("opsstack_db_statements_shared_blocks_hit_total", lab, hit)
            fams.add("opsstack_db_statements_shared_blocks_read_total", lab, read)
            fams.add("opsstack_db_statements_temp_blocks_written_total", lab, temp)
            fams.add("opsstack_db_statements_mean_exec_seconds", lab, logic.weighted_mean(exec_s or 0, calls or 0))
            fams.add("opsstack_db_statements_tracked", lab, n)
            fams.add("opsstack_db_statements_slow", lab, x)
        # the query returns the top rows per (user, database, query, toplevel) entry: merge
        # the entries of one statement, then keep the top N
        merged: dict[tuple, list] = {}
        for d, qid, calls, exec_s, nrows, hit, read, temp, mx in top:
            m = merged.get((d, qid))
            if m is None:
                merged[(d, qid)] = [d, qid, calls, exec_s, nrows, hit, read, temp, mx]
            else:
                for i, v in ((2, calls), (3, exec_s), (4, nrows), (5, hit), (6, read), (7, temp)):
                    m[i] = (m[i] or 0) + (v or 0)
                m[8] = max(m[8] or 0, mx or 0)
        top = sorted(merged.values(), key=lambda r: -(r[3] or 0))[: st["top"]]
        missing = [qid for d, qid, *_ in top if (d, qid) not in t.pgss_texts]
        if missing:
            for d, qid, text in self._q(t, conn, "pg_stat_statements_text",
                                        sql.SQL(queries.PGSS_TEXT).format(ns=ns), {"ids": missing}) or []:
                t.pgss_texts[(d, qid)] = logic.truncate(text or "", st["text_max_length"])
            while len(t.pgss_texts) > max(200, 4 * st["top"]):
                t.pgss_texts.popitem(last=False)
        for d, qid, calls, exec_s, nrows, hit, read, temp, max_s in top:
            lab = [s, d, qid]
            fams.add("opsstack_db_statement_calls_total", lab, calls)
            fams.add("opsstack_db_statement_exec_seconds_total", lab, exec_s)
            fams.add("opsstack_db_statement_mean_exec_seconds", lab, logic.weighted_mean(exec_s or 0, calls or 0))
            fams.add("opsstack_db_statement_max_exec_seconds", lab, max_s)
            fams.add("opsstack_db_statement_rows_total", lab, nrows)
            fams.add("opsstack_db_statement_shared_blocks_hit_total", lab, hit)
            fams.add("opsstack_db_statement_shared_blocks_read_total", lab, read)
            fams.add("opsstack_db_statement_temp_blocks_written_total", lab, temp)
            text = t.pgss_texts.get((d, qid))
            if text is not None:
                fams.add("opsstack_db_statement_info", lab + [text], 1)

    def _backup(self, t: Target, conn, fams: Families) -> None:
        b = self.dbc["backup"]
        fams.add("opsstack_db_backup_configured", [t.name], 0 if b["source"] == "none" else 1)
        if b["source"] == "none":
            return
        ts = None
        if b["source"] == "file":
            paths = glob.glob(os.path.expanduser(b["path"]))
            mtimes = []
            for p in paths:
                try:
                    mtimes.append(os.stat(p).st_mtime)
                except OSError:
                    pass
            ts = max(mtimes) if mtimes else 0.0
        else:
            rows = self._q(t, conn, "backup", b["query"])
            if rows is not None:
                v = rows[0][0] if rows and rows[0] else None
                ts = v.timestamp() if isinstance(v, dt.datetime) else float(v or 0)
        fams.add("opsstack_db_backup_last_success_timestamp_seconds", [t.name], ts)

    def _pgbouncer(self, t: Target, fams: Families) -> None:
        s = t.name
        ok = 0
        try:
            with psycopg.connect(t.spec["pgbouncer_url"], autocommit=True,
                                 connect_timeout=max(1, int(round(t.connect_timeout))),
                                 cursor_factory=psycopg.ClientCursor, prepare_threshold=None) as pc:
                cur = pc.cursor()
                cur.execute("SHOW POOLS")
                cols = [c.name for c in cur.description]
                for row in cur.fetchall():
                    r = dict(zip(cols, row))
                    lab = [s, r.get("database"), r.get("user")]
                    for st in ("active", "waiting"):
                        fams.add("opsstack_db_pgbouncer_clients", lab + [st], r.get(f"cl_{st}"))
                    for st in ("active", "idle", "used", "tested", "login"):
                        fams.add("opsstack_db_pgbouncer_servers", lab + [st], r.get(f"sv_{st}"))
                    wait = float(r.get("maxwait") or 0) + float(r.get("maxwait_us") or 0) / 1e6
                    fams.add("opsstack_db_pgbouncer_max_wait_seconds", lab, wait)
                cur.execute("SHOW DATABASES")
                cols = [c.name for c in cur.description]
                for row in cur.fetchall():
                    r = dict(zip(cols, row))
                    if r.get("pool_size") is not None:
                        fams.add("opsstack_db_pgbouncer_pool_size", [s, r.get("name")], r["pool_size"])
            ok = 1
        except (psycopg.Error, OSError, ValueError, TypeError) as exc:
            t.count_error("pgbouncer")
            log.warning("event=pgbouncer_failed server=%s error=%r", s, _first_line(exc))
        fams.add("opsstack_db_pgbouncer_up", [s], ok)

    # ------------------------------------------------------------------ per database
    def _database(self, t: Target, dbname: str, conn, fams: Families) -> None:
        s = t.name
        add = fams.add
        heavy_min = self.dbc["seq_scan_heavy_rows"]
        now = time.time()
        cached = t.rel_sizes.get(dbname)
        sizes = cached is None or now - cached[0] >= self.dbc["sizes_interval"]
        idx = self._q(t, conn, "indexes", queries.INDEXES,
                      {"max_indexes": self.dbc["max_tables"] * 4, "sizes": sizes})
        tables = self._q(t, conn, "tables", queries.TABLES, {"max_tables": self.dbc["max_tables"], "sizes": sizes})
        if sizes and idx is not None and tables is not None:
            cached = (now, {(r[0], r[1]): r[25] for r in tables}, {(r[0], r[1], r[2]): r[6] for r in idx})
            t.rel_sizes[dbname] = cached
        tsize = cached[1] if cached else {}
        isize = cached[2] if cached else {}
        if cached:
            add("opsstack_db_sizes_cache_age_seconds", [s, dbname], now - cached[0])
        idx_size: dict[tuple, float] = {}
        if idx is not None:
            unused = 0
            unused_size = 0
            for schema, rel, name, scans, tup_read, tup_fetch, size, constraint, blk_read, blk_hit in idx:
                lab = [s, dbname, schema, rel, name]
                if size is None:
                    size = isize.get((schema, rel, name))
                add("opsstack_db_index_scans_total", lab, scans)
                add("opsstack_db_index_rows_read_total", lab, tup_read)
                add("opsstack_db_index_rows_fetched_total", lab, tup_fetch)
                add("opsstack_db_index_size_bytes", lab, size)
                add("opsstack_db_index_blocks_read_total", lab, blk_read)
                add("opsstack_db_index_blocks_hit_total", lab, blk_hit)
                key = (schema, rel)
                idx_size[key] = idx_size.get(key, 0) + (size or 0)
                is_unused = not scans and not constraint
                add("opsstack_db_index_unused", lab, 1 if is_unused else 0)
                if is_unused:
                    unused += 1
                    unused_size += size or 0
            add("opsstack_db_unused_indexes", [s, dbname], unused)
            add("opsstack_db_unused_indexes_size_bytes", [s, dbname], unused_size)

        if tables is not None:
            heavy = 0
            add("opsstack_db_tables", [s, dbname], len(tables))
            for r in tables:
                lab = [s, dbname, r[0], r[1]]
                add("opsstack_db_table_seq_scans_total", lab, r[2])
                add("opsstack_db_table_seq_rows_read_total", lab, r[3])
                add("opsstack_db_table_index_scans_total", lab, r[4])
                add("opsstack_db_table_index_rows_fetched_total", lab, r[5])
                add("opsstack_db_table_index_usage_ratio", lab, logic.index_usage_ratio(r[2], r[4]))
                h = logic.heavy_seq_scan(r[2], r[3], r[4], heavy_min)
                heavy += h
                add("opsstack_db_table_heavy_seq_scan", lab, 1 if h else 0)
                add("opsstack_db_table_rows_inserted_total", lab, r[6])
                add("opsstack_db_table_rows_updated_total", lab, r[7])
                add("opsstack_db_table_rows_deleted_total", lab, r[8])
                add("opsstack_db_table_rows_hot_updated_total", lab, r[9])
                add("opsstack_db_table_live_rows", lab, r[10])
                add("opsstack_db_table_dead_rows", lab, r[11])
                add("opsstack_db_table_modified_since_analyze_rows", lab, r[12])
                add("opsstack_db_table_last_vacuum_timestamp_seconds", lab + ["manual"], r[13])
                add("opsstack_db_table_last_vacuum_timestamp_seconds", lab + ["auto"], r[14])
                add("opsstack_db_table_last_analyze_timestamp_seconds", lab + ["manual"], r[15])
                add("opsstack_db_table_last_analyze_timestamp_seconds", lab + ["auto"], r[16])
                add("opsstack_db_table_vacuums_total", lab + ["manual"], r[17])
                add("opsstack_db_table_vacuums_total", lab + ["auto"], r[18])
                add("opsstack_db_table_analyzes_total", lab + ["manual"], r[19])
                add("opsstack_db_table_analyzes_total", lab + ["auto"], r[20])
                add("opsstack_db_table_blocks_read_total", lab + ["heap"], r[21])
                add("opsstack_db_table_blocks_hit_total", lab + ["heap"], r[22])
                add("opsstack_db_table_blocks_read_total", lab + ["toast"], r[23])
                add("opsstack_db_table_blocks_hit_total", lab + ["toast"], r[24])
                add("opsstack_db_table_size_bytes", lab, r[25] if r[25] is not None else tsize.get((r[0], r[1])))
                add("opsstack_db_table_indexes_size_bytes", lab, idx_size.get((r[0], r[1]), 0))
                add("opsstack_db_table_xid_age", lab, r[26])
            add("opsstack_db_heavy_seq_scan_tables", [s, dbname], heavy)

        self._partitions(t, dbname, conn, fams, sizes)
        self._retention(t, dbname, conn, fams)

    def _partitions(self, t: Target, dbname: str, conn, fams: Families, sizes: bool = True) -> None:
        s = t.name
        rows = self._q(t, conn, "partitions", queries.PARTITIONS)
        if rows is None:
            return
        parts: dict[str, list] = {}
        defaults: dict[str, bool] = {}
        for schema, rel, bound in rows:
            key = f"{schema}.{rel}"
            lst = parts.setdefault(key, [])
            defaults.setdefault(key, False)
            if bound is None:
                continue
            if bound == "DEFAULT":
                defaults[key] = True
                lst.append(None)
                continue
            b = logic.parse_range_bound(bound)
            lst.append(b if b is not None else ("?", "?"))
        for key, lst in parts.items():
            lab = [s, dbname, key]
            fams.add("opsstack_db_partitions", lab, sum(1 for x in lst if x is not None) + defaults[key])
            fams.add("opsstack_db_partition_default_present", lab, 1 if defaults[key] else 0)
        psizes = t.part_sizes.get(dbname)
        if sizes or psizes is None:
            psizes = self._q(t, conn, "partition_sizes", queries.PARTITIONED_SIZES) or []
            t.part_sizes[dbname] = psizes
        for r in psizes:
            fams.add("opsstack_db_partitioned_table_size_bytes", [s, dbname, f"{r[0]}.{r[1]}"], r[2])
            fams.add("opsstack_db_partitioned_table_live_rows", [s, dbname, f"{r[0]}.{r[1]}"], r[3])
        wanted = self.dbc["lifecycle"]["partitions"]
        if not wanted:
            return
        rows = self._q(t, conn, "partitions", "select now()")
        if not rows:
            return
        now = rows[0][0]
        for w in wanted:
            schema, rel = logic.split_table(w["table"])
            key = f"{schema}.{rel}"
            if key not in parts:
                continue  # the table lives in another database (or not yet)
            bounds = []
            for b in parts[key]:
                if not b or b == ("?", "?"):
                    continue
                lo, hi = (_to_dt(x, now.tzinfo) for x in b)
                if (b[0] is not None and lo is None) or (b[1] is not None and hi is None):
                    continue
                bounds.append((lo, hi))
            health = logic.partition_health(bounds, now, w["period"])
            for period, ok in health.items():
                fams.add("opsstack_db_partition_present", [s, dbname, key, period], 1 if ok else 0)
            uppers = [hi for _, hi in bounds if hi is not None]
            if uppers:
                fams.add("opsstack_db_partition_newest_upper_bound_timestamp_seconds", [s, dbname, key],
                         max(uppers).timestamp())

    def _retention(self, t: Target, dbname: str, conn, fams: Families) -> None:
        lc = self.dbc["lifecycle"]
        if not lc["retention"]:
            return
        cached = t.lifecycle_cache.get(dbname)
        now = time.time()
        if cached is None or now - cached[0] >= lc["interval"]:
            counts = []
            for r in lc["retention"]:
                schema, rel = logic.split_table(r["table"])
                exists = self._q(t, conn, "retention", queries.REGCLASS, (f"{schema}.{rel}",))
                if not exists or not exists[0][0]:
                    continue
                q = sql.SQL("select count(*) from {}.{} where {} < now() - make_interval(secs => %s)").format(
                    sql.Identifier(schema), sql.Identifier(rel), sql.Identifier(r["column"]))
                res = self._q(t, conn, "retention", q, (r["max_age"],))
                if res is not None:
                    counts.append((f"{schema}.{rel}", res[0][0], r["max_age"]))
            cached = (now, counts)
            t.lifecycle_cache[dbname] = cached
        ts, counts = cached
        for table, n, max_age in counts:
            fams.add("opsstack_db_rows_older_than_retention", [t.name, dbname, table], n)
            fams.add("opsstack_db_retention_max_age_seconds", [t.name, dbname, table], max_age)
        fams.add("opsstack_db_lifecycle_cache_age_seconds", [t.name, dbname], now - ts)


def _to_dt(v: str | None, tz) -> dt.datetime | None:
    if v is None:
        return None
    try:
        d = dt.datetime.fromisoformat(v)
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=tz)
    return d


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
