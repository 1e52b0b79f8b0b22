"""The executor: runs every enabled collector of a target, each isolated from the others.

Per target (a server) a small pool of connections, kept between scrapes (conn.py): one for
the server-wide collectors, one for pg_stat_statements, one per database for the
per-database collectors. Every statement is bounded by `statement_timeout`.

Live and background collectors. The server-wide (SERVER) collectors are live: a scrape runs
them on the server's connection (server, settings, databases, activity, locks, bgwriter,
archiver, replication, backup, pgbouncer). The others (statements; indexes, tables,
partitions, retention per database) are heavy: one background thread refreshes each every
`Collector.interval(dbc)` seconds (`statements.interval`, `tables_interval`,
`lifecycle.interval`) and a scrape serves the last good result (an `Entry`). The first
scrape of a target, and a collector whose interval is 0, run them in the scrape itself. A
refresh that fails keeps the last good result: `opsstack_db_collector_success 0` and
`opsstack_db_collector_age_seconds` (time since the last good refresh) keeps growing, so
stale data is never silent. Tables and indexes pass through the series budget
(exporters/db/budget.py) before they are kept.

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
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import psycopg

from core.exporter import Scrape
from core.pg import with_dbname
from exporters.db import budget
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
        self.dbc = dbc
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
        # background collectors: (collector, datname or "" for OWN) -> its last result
        self.entries: dict[tuple[str, str], Entry] = {}
        self.cache_lock = threading.Lock()
        self.version = 0            # bumped whenever a served result changes
        self.up = False             # the last scrape reached the server
        self.databases: list[str] = []  # the databases the last scrape found (primary first)
        self.running: set[str] = set()  # background jobs running now

    def db_handle(self, dbname: str) -> DbHandle:
        with self.cache_lock:
            h = self.handles.get(dbname)
            if h is None:
                h = self.handles[dbname] = DbHandle(with_dbname(self.url, dbname), self.connect_timeout,
                                                    self.statement_timeout)
            return h

    def forget(self, dbname: str) -> None:
        """A database that went away: close its connection, drop what was cached about it."""
        with self.cache_lock:
            h = self.handles.pop(dbname, None)
            for key in [k for k in self.entries if k[1] == dbname]:
                del self.entries[key]
            self.version += 1
        if h is not None:
            h.close()
        self.rel_sizes.pop(dbname, None)
        for c in self.collectors[DATABASE]:
            c.forget(dbname)

    def count_error(self, group: str) -> None:
        with self._err_lock:
            self.errors[group] = self.errors.get(group, 0) + 1

    def background(self, key: str) -> list[Collector]:
        """The heavy collectors of a job: OWN ones for key "", DATABASE ones for a database."""
        return self.collectors[OWN] if key == "" else self.collectors[DATABASE]

    def jobs(self) -> list[str]:
        """The background jobs: "" (server-wide, own connection) and each database."""
        return [""] + list(self.databases)

    def due(self, key: str, now: float, first_only: bool = False) -> list[Collector]:
        """The collectors of job ``key`` to run now: never run (or interval 0) with
        ``first_only``, else those whose interval has passed since their last run."""
        out = []
        with self.cache_lock:
            for c in self.background(key):
                e = self.entries.get((c.name, key))
                iv = c.interval(self.dbc) or 0.0
                if e is None or e.tried_at is None or iv <= 0 or (not first_only and now - e.tried_at >= iv):
                    out.append(c)
        names = {c.name for c in out}
        if names & PAIRED and not PAIRED <= names:  # tables and indexes are budgeted together
            out = [c for c in self.background(key) if c.name in names | PAIRED]
        return out

    def next_due(self, key: str) -> float:
        """When the next collector of job ``key`` is due (inf: none runs in the background)."""
        t = float("inf")
        with self.cache_lock:
            for c in self.background(key):
                iv = c.interval(self.dbc) or 0.0
                e = self.entries.get((c.name, key))
                if iv > 0 and e is not None and e.tried_at is not None:
                    t = min(t, e.tried_at + iv)
        return t

    def cached_parts(self) -> list[tuple[str, Families]]:
        """(collector, its last good result) for each background collector and database, in
        the order of COLLECTORS (none while the server is down)."""
        out = []
        if not self.up:
            return out
        with self.cache_lock:
            for scope in (OWN, DATABASE):
                for c in self.collectors[scope]:
                    for key in ([""] if scope == OWN else self.databases):
                        e = self.entries.get((c.name, key))
                        if e is not None and e.fams is not None:
                            out.append((c.name, e.fams))
        return out

    def cached(self) -> Families:
        """The last good results of the background collectors, merged."""
        fams = Families()
        for _, f in self.cached_parts():
            fams.merge(f)
        return fams

    def close(self) -> None:
        for h in (self.server_handle, self.stats_handle):
            if h is not None:
                h.close()
        for h in list(self.handles.values()):
            h.close()


PAIRED = {"tables", "indexes"}
FIRST_WAIT = 5.0  # seconds a scrape waits for background collectors that never ran
# families whose value is an age: computed at scrape time, not served frozen from a cache
_AGES = ("opsstack_db_sizes_cache_age_seconds", "opsstack_db_lifecycle_cache_age_seconds")


@dataclass
class Entry:
    """The last result of one background collector on one database ("" = server-wide job)."""

    fams: Families | None = None   # the last good result (after the budget); None: never good
    ok: bool = False               # the last run succeeded
    seconds: float = 0.0           # how long the last run took
    good_at: float | None = None   # when the served result was read
    tried_at: float | None = None  # when the last run started


@dataclass
class JobResult:
    """What one connection's job read, its collectors' runs, and the error that ended it."""

    fams: Families
    runs: dict = field(default_factory=dict)  # collector -> [ok, seconds]
    error: str | None = None
    by: dict = field(default_factory=dict)    # collector -> its Families


def _add_run(runs: dict, name: str, ok: bool, seconds: float) -> None:
    r = runs.get(name)
    if r is None:
        runs[name] = [ok, seconds]
    else:  # a per-database collector: ok on every database, time summed
        r[0] = r[0] and ok
        r[1] += seconds


class Executor:
    """Runs the collectors of each target; one per DbCollector (it owns the thread pool and
    the background refresher)."""

    def __init__(self, workers: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db-scrape")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._targets: list[Target] = []

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ background
    def start(self, targets: list[Target]) -> None:
        """Start the background refresher (once; the first scrape calls it)."""
        if self._thread is None and not self._stop.is_set():
            self._targets = list(targets)
            self._thread = threading.Thread(target=self._loop, name="db-refresh", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            wake = time.time() + 5.0
            for t in self._targets:
                if not t.up:
                    continue
                for key in t.jobs():
                    if self._stop.is_set():
                        return
                    at = t.next_due(key)
                    if at <= time.time():
                        self.refresh(t, key)
                        at = t.next_due(key)
                    wake = min(wake, at)
            self._stop.wait(max(0.05, wake - time.time()))

    def refresh(self, t: Target, key: str, first_only: bool = False) -> None:
        """Run the due background collectors of job ``key`` and keep their results (once at a
        time per job: a call while the job runs returns at once)."""
        with t.cache_lock:
            if key in t.running:
                return
            t.running.add(key)
        try:
            self._refresh(t, key, first_only)
        except Exception:  # a bug: logged, the job is retried at its next interval
            log.exception("event=refresh_crashed server=%s datname=%s", t.name, key)
        finally:
            with t.cache_lock:
                t.running.discard(key)

    def _refresh(self, t: Target, key: str, first_only: bool) -> None:
        now = time.time()
        due = t.due(key, now, first_only)
        if not due:
            return
        if key == "":
            handle = t.stats_handle
            scope = Scope(server=t.name, spec=t.spec, now=now)
        else:
            handle = t.db_handle(key)
            sizes = t.rel_sizes.get(key)
            if sizes is None:
                sizes = t.rel_sizes[key] = RelationSizes()
            scope = Scope(server=t.name, spec=t.spec, now=now, datname=key, sizes=sizes,
                          sizes_due=sizes.due(now, t.sizes_interval))
        res = self._job(t, handle, due, scope)
        if res.error is not None and key != "":
            t.count_error("connect")
            log.warning("event=database_failed server=%s datname=%s error=%r", t.name, key, res.error)
        good = {n: fams for n, fams in res.by.items() if res.runs.get(n, [False])[0]}
        if res.error is not None:
            good = {}
        if PAIRED & set(res.by):
            per_db = max(100, t.dbc.table_series_budget // max(1, len(t.databases)))
            idx, tab = budget.apply(good.get("indexes"), good.get("tables"), per_db, t.dbc.seq_scan_heavy_rows,
                                    scope.table_roots, scope.index_roots)
            if "indexes" in good:
                good["indexes"] = idx
            if "tables" in good:
                good["tables"] = tab
        for fams in good.values():
            for name in _AGES:
                fams.pop(name)
        with t.cache_lock:
            if key != "" and key not in t.databases:
                return  # the database went away meanwhile
            for c in due:
                e = t.entries.get((c.name, key))
                if e is None:
                    e = t.entries[(c.name, key)] = Entry()
                ok, seconds = res.runs.get(c.name, (False, 0.0))
                e.tried_at, e.ok, e.seconds = now, bool(ok and res.error is None), seconds
                if c.name in good:
                    e.fams, e.good_at = good[c.name], now
            t.version += 1

    # ------------------------------------------------------------------ scrape
    def collect(self, t: Target, fams: Families, scrape: Scrape, cached: bool = True) -> None:
        """One target into ``fams``: its live samples, `opsstack_db_up`, error counts, collector
        runs and ages, and (``cached``) the last results of its background collectors."""
        runs: dict = {}
        with t.lock:
            ok = self._collect(t, fams, scrape, runs)
        fams.add("opsstack_db_up", [t.name], 1 if ok else 0)
        for q, n in sorted(t.errors.items()):
            fams.add("opsstack_db_query_errors_total", [t.name, q], n)
        for name, (good, seconds) in runs.items():
            fams.add("opsstack_db_collector_success", [t.name, name], 1 if good else 0)
            fams.add("opsstack_db_collector_duration_seconds", [t.name, name], seconds)
            fams.add("opsstack_db_collector_age_seconds", [t.name, name], 0)
            fams.add("opsstack_db_collector_interval_seconds", [t.name, name], 0)
        if ok:
            self._export_background(t, fams)
            if cached:
                fams.merge(t.cached())

    def _export_background(self, t: Target, fams: Families) -> None:
        """Success, last duration, age and interval of each background collector, and the
        ages of the sizes and old-row counts."""
        now = time.time()
        with t.cache_lock:
            for scope in (OWN, DATABASE):
                for c in t.collectors[scope]:
                    keys = [""] if scope == OWN else t.databases
                    es = [t.entries.get((c.name, k)) for k in keys]
                    es = [e for e in es if e is not None and e.tried_at is not None]
                    if not es:
                        continue
                    lab = [t.name, c.name]
                    fams.add("opsstack_db_collector_success", lab, 1 if all(e.ok for e in es) else 0)
                    fams.add("opsstack_db_collector_duration_seconds", lab, sum(e.seconds for e in es))
                    goods = [e.good_at for e in es if e.good_at is not None]
                    if goods:
                        fams.add("opsstack_db_collector_age_seconds", lab, now - min(goods))
                    fams.add("opsstack_db_collector_interval_seconds", lab, c.interval(t.dbc) or 0.0)
            dbs = list(t.databases)
        for d in dbs:
            sizes = t.rel_sizes.get(d)
            if sizes is not None and sizes.when is not None:
                fams.add("opsstack_db_sizes_cache_age_seconds", [t.name, d], now - sizes.when)
        for c in t.collectors[DATABASE]:
            cache = getattr(c, "cache", None)
            if c.name == "retention" and cache:
                for d in dbs:
                    if d in cache:
                        fams.add("opsstack_db_lifecycle_cache_age_seconds", [t.name, d], now - cache[d][0])

    def _collect(self, t: Target, fams: Families, scrape: Scrape, runs: dict) -> bool:
        if not t.url:
            scrape.set_up(t.name, False, "no URL: set exporters.db.targets[].url or database.url")
            t.up = False
            return False
        now = time.time()
        facts = ServerFacts()
        server = self._job(t, t.server_handle, t.collectors[SERVER],
                           Scope(server=t.name, spec=t.spec, now=now, facts=facts), into=fams)
        for name, (good, seconds) in server.runs.items():
            _add_run(runs, name, good, seconds)
        if server.error is not None:
            scrape.set_up(t.name, False, f"{redact(t.server_handle.url)}: {server.error}")
            t.up = False
            return False
        scrape.set_up(t.name, True)
        wanted = [t.primary_db] + self._databases(t, facts.databases)
        for name in list(t.handles):
            if name not in wanted:
                t.forget(name)
        with t.cache_lock:
            t.databases = wanted
        t.up = True
        # the first scrape (or a new database, or an interval of 0) reads the background
        # collectors itself, at the same time on a few threads; it waits FIRST_WAIT at most
        # (a big schema): what is not read by then is served by a later scrape
        jobs = [self._pool.submit(self.refresh, t, key, True) for key in t.jobs() if t.due(key, now, True)]
        if jobs:
            wait(jobs, timeout=FIRST_WAIT)
        return True

    @staticmethod
    def _databases(t: Target, existing: list[str]) -> list[str]:
        """The databases to read besides the URL's own: the configured ones, or every one."""
        names = t.spec.databases
        if "*" in names:
            return [d for d in existing if d != t.primary_db]
        return [d for d in names if d != t.primary_db]

    def _job(self, t: Target, handle: DbHandle, collectors: list[Collector], scope: Scope,
             into: Families | None = None) -> JobResult:
        """Run ``collectors`` in order on ``handle``'s connection; a broken connection ends the job."""
        res = JobResult(into if into is not None else Families())
        if not collectors:
            return res
        with handle.lock:
            try:
                conn = handle.get()
                # one cursor for the job's queries (cheaper than one per query); fakes have none
                cur = conn.cursor() if isinstance(conn, psycopg.Connection) else None
                for c in collectors:
                    out = self._run(t, c, conn, scope, res.runs, cur)
                    res.by[c.name] = out
                    if into is not None:
                        res.fams.merge(out)
            except CONNECTION_ERRORS as exc:
                handle.discard()
                res.error = first_line(exc)
        return res

    @staticmethod
    def _run(t: Target, c: Collector, conn, scope: Scope, runs: dict, cur=None) -> Families:
        """One collector, isolated: a failure other than a lost connection is logged and recorded."""
        q = Queries(conn, t.name, t.count_error, cur)
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
