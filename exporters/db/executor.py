"""The executor: runs every enabled collector of a target, each isolated from the others.

Per target (a server) a small pool of connections, kept between scrapes (conn.py): one for
the server-wide collectors, one for pg_stat_statements, one per database for the
per-database collectors; the three kinds of job run at the same time on a few threads
(psycopg releases the GIL while PostgreSQL works). Every statement is bounded by
`statement_timeout`.

Isolation (as postgres_exporter's `execute()`): a collector whose query fails, or that
raises, is recorded as failed (`opsstack_db_collector_success{server,collector} 0`, one log
line) and the other collectors run on; its duration is
`opsstack_db_collector_duration_seconds{server,collector}` (per-database collectors: summed
over the databases, successful only when every database was). What breaks a connection
ends that connection's job: on the server's connection the target is down
(`opsstack_db_up 0`, `opsstack_exporter_up{source} 0`, one log line, never an exception; the
next scrape reconnects); on a database's connection that database's samples are dropped and
`opsstack_db_query_errors_total{query="connect"}` counts it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from core.exporter import Scrape
from core.pg import with_dbname
from exporters.db.collectors import COLLECTORS
from exporters.db.collectors.base import (DATABASE, OWN, SERVER, Collector, Queries, QueryFailed, RelationSizes,
                                          Scope, ServerFacts, first_line)
from exporters.db.conn import DbHandle, redact, target_url
from exporters.db.metrics import Families

log = logging.getLogger("opsstack.exporter.db")

# what tells that a connection is gone (rather than one query failing)
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, QueryFailed)


class Target:
    """One server: its connections, its collectors (with their caches) and error counts."""

    def __init__(self, spec, dbc, database):
        """``spec``: the target's view (an item of ``dbc.targets``); ``dbc``, ``database``: the
        views of the exporters.db and database sections (core.config.view)."""
        self.name = spec.name
        self.spec = spec
        self.url = target_url(spec, database)
        self.connect_timeout = dbc.connect_timeout
        self.statement_timeout = dbc.statement_timeout
        self.server_handle = DbHandle(self.url, self.connect_timeout, self.statement_timeout) if self.url else None
        self.primary_db = self.server_handle.dbname if self.server_handle else ""
        # pg_stat_statements is read on its own connection, next to the other server-wide facts
        self.stats_handle = DbHandle(self.url, self.connect_timeout, self.statement_timeout) if self.url else None
        self.handles: "OrderedDict[str, DbHandle]" = OrderedDict()
        self.collectors: dict[str, list[Collector]] = {SERVER: [], OWN: [], DATABASE: []}
        for cls in COLLECTORS:
            if cls.enabled(spec, dbc):
                self.collectors[cls.scope].append(cls(dbc))
        self.sizes_interval = dbc.sizes_interval
        self.rel_sizes: dict[str, RelationSizes] = {}
        self.errors: dict[str, int] = {}
        self._err_lock = threading.Lock()
        self.lock = threading.Lock()

    def db_handle(self, dbname: str) -> DbHandle:
        h = self.handles.get(dbname)
        if h is None:
            h = self.handles[dbname] = DbHandle(with_dbname(self.url, dbname), self.connect_timeout,
                                                self.statement_timeout)
        return h

    def forget(self, dbname: str) -> None:
        """A database that went away: close its connection, drop what was cached about it."""
        self.handles.pop(dbname).close()
        self.rel_sizes.pop(dbname, None)
        for c in self.collectors[DATABASE]:
            c.forget(dbname)

    def count_error(self, group: str) -> None:
        with self._err_lock:
            self.errors[group] = self.errors.get(group, 0) + 1

    def close(self) -> None:
        for h in (self.server_handle, self.stats_handle):
            if h is not None:
                h.close()
        for h in list(self.handles.values()):
            h.close()


@dataclass
class JobResult:
    """What one connection's job read, its collectors' runs, and the error that ended it."""

    fams: Families
    runs: dict = field(default_factory=dict)  # collector -> [ok, seconds]
    error: str | None = None


def _add_run(runs: dict, name: str, ok: bool, seconds: float) -> None:
    r = runs.get(name)
    if r is None:
        runs[name] = [ok, seconds]
    else:  # a per-database collector: ok on every database, time summed
        r[0] = r[0] and ok
        r[1] += seconds


class Executor:
    """Runs the collectors of each target; one per DbCollector (it owns the thread pool)."""

    def __init__(self, workers: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db-scrape")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def collect(self, t: Target, fams: Families, scrape: Scrape) -> None:
        """One target into ``fams``: its samples, `opsstack_db_up`, error counts, collector runs."""
        runs: dict = {}
        with t.lock:
            ok = self._collect(t, fams, scrape, runs)
        fams.add("opsstack_db_up", [t.name], 1 if ok else 0)
        for q, n in sorted(t.errors.items()):
            fams.add("opsstack_db_query_errors_total", [t.name, q], n)
        for name, (good, seconds) in runs.items():
            fams.add("opsstack_db_collector_success", [t.name, name], 1 if good else 0)
            fams.add("opsstack_db_collector_duration_seconds", [t.name, name], seconds)

    def _collect(self, t: Target, fams: Families, scrape: Scrape, runs: dict) -> bool:
        if not t.url:
            scrape.set_up(t.name, False, "no URL: set exporters.db.targets[].url or database.url")
            return False
        now = time.time()
        stats = self._pool.submit(self._job, t, t.stats_handle, t.collectors[OWN],
                                  Scope(server=t.name, spec=t.spec, now=now))
        first = self._pool.submit(self._db_job, t, t.primary_db, t.db_handle(t.primary_db))
        facts = ServerFacts()
        server = self._job(t, t.server_handle, t.collectors[SERVER],
                           Scope(server=t.name, spec=t.spec, now=now, facts=facts), into=fams)
        for name, (good, seconds) in server.runs.items():
            _add_run(runs, name, good, seconds)
        if server.error is not None:
            scrape.set_up(t.name, False, f"{redact(t.server_handle.url)}: {server.error}")
            stats.result()  # the server is down: what the other jobs read is dropped
            first.result()
            return False
        scrape.set_up(t.name, True)
        wanted = self._databases(t, facts.databases)
        res = stats.result()
        for name, (good, seconds) in res.runs.items():
            _add_run(runs, name, good, seconds)
        if res.error is None:
            fams.merge(res.fams)
        jobs = [(t.primary_db, first)] + [(name, self._pool.submit(self._db_job, t, name, t.db_handle(name)))
                                          for name in wanted]
        for name, j in jobs:
            res = j.result()
            for cname, (good, seconds) in res.runs.items():
                _add_run(runs, cname, good, seconds)
            if res.error is None:
                fams.merge(res.fams)
            else:
                t.count_error("connect")
                log.warning("event=database_failed server=%s datname=%s error=%r", t.name, name, res.error)
        for name in list(t.handles):
            if name != t.primary_db and name not in wanted:
                t.forget(name)
        return True

    @staticmethod
    def _databases(t: Target, existing: list[str]) -> list[str]:
        """The databases to read besides the URL's own: the configured ones, or every one."""
        names = t.spec.databases
        if "*" in names:
            return [d for d in existing if d != t.primary_db]
        return [d for d in names if d != t.primary_db]

    def _db_job(self, t: Target, name: str, handle: DbHandle) -> JobResult:
        sizes = t.rel_sizes.get(name)
        if sizes is None:
            sizes = t.rel_sizes[name] = RelationSizes()
        now = time.time()
        scope = Scope(server=t.name, spec=t.spec, now=now, datname=name, sizes=sizes,
                      sizes_due=sizes.due(now, t.sizes_interval))
        return self._job(t, handle, t.collectors[DATABASE], scope)

    def _job(self, t: Target, handle: DbHandle, collectors: list[Collector], scope: Scope,
             into: Families | None = None) -> JobResult:
        """Run ``collectors`` in order on ``handle``'s connection; a broken connection ends the job."""
        res = JobResult(into if into is not None else Families())
        if not collectors:
            return res
        with handle.lock:
            try:
                conn = handle.get()
                for c in collectors:
                    res.fams.merge(self._run(t, c, conn, scope, res.runs))
            except CONNECTION_ERRORS as exc:
                handle.discard()
                res.error = first_line(exc)
        return res

    @staticmethod
    def _run(t: Target, c: Collector, conn, scope: Scope, runs: dict) -> Families:
        """One collector, isolated: a failure other than a lost connection is logged and recorded."""
        q = Queries(conn, t.name, t.count_error)
        t0 = time.perf_counter()
        ok = False
        try:
            out = c.collect(q, scope)
            ok = q.failed == 0
            return out
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:  # a bug or an unexpected row: this collector only, never the scrape
            log.warning("event=collector_failed server=%s collector=%s datname=%s error=%r", t.name, c.name,
                        scope.datname, f"{type(exc).__name__}: {first_line(exc)}")
            return Families()
        finally:
            _add_run(runs, c.name, ok, time.perf_counter() - t0)
