"""What every database collector shares: its shape, its queries and what a scrape tells it.

A collector reads one area of a PostgreSQL server (settings, locks, tables...) and returns
its samples as `Families`. One instance per target (server), so a collector keeps its own
caches between scrapes. It declares where it runs (`scope`):

- ``SERVER``: once per target, on the server's connection, in the order of COLLECTORS
  (a collector may read what an earlier one learned in `Scope.facts`);
- ``OWN``: once per target, on a connection of its own, next to the server-wide ones
  (pg_stat_statements, the most expensive read);
- ``DATABASE``: once per database of the target, on that database's connection.

SERVER collectors are live: they run in every scrape. OWN and DATABASE collectors are
heavy: the executor refreshes them in the background every ``interval(dbc)`` seconds and a
scrape serves their last good result (exporters/db/executor.py).

A collector reads through `Queries.rows(group, sql, params)`: a failing query is counted
(`opsstack_db_query_errors_total{query=group}`), logged, and returns None, so the collector
goes on with what it has; a query that broke the connection raises `QueryFailed`, which the
executor (exporters/db/executor.py) turns into "server down" or "database failed".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import psycopg

from exporters.db.metrics import Families

log = logging.getLogger("opsstack.exporter.db")

SERVER, OWN, DATABASE = "server", "own", "database"


class QueryFailed(Exception):
    """The connection broke under a query: the server (or this database) is down."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Queries:
    """One collector run's access to a DB-API connection (psycopg, or a fake in unit tests).

    ``failed`` counts the queries that failed during the run: the executor exports the run as
    unsuccessful (``opsstack_db_collector_success 0``) when it is not 0.
    """

    def __init__(self, conn, server: str, count_error: Callable[[str], None] | None = None, cursor=None):
        """``cursor``: a cursor of ``conn`` kept by the caller between runs (the connection is
        autocommit: a failed query leaves it usable); saves creating one per query."""
        self.conn = conn
        self.server = server
        self._count_error = count_error
        self._exec = cursor.execute if cursor is not None else conn.execute
        self.failed = 0

    def rows(self, group: str, query, params=None) -> list | None:
        """All rows of one query, or None when it failed (counted and logged)."""
        try:
            return self._exec(query, params).fetchall()
        except psycopg.Error as exc:
            if self.conn.broken or self.conn.closed:
                raise QueryFailed(first_line(exc)) from None
            self.error(group, exc)
            return None

    def try_rows(self, query, params=None) -> tuple[list | None, str | None]:
        """(rows, None), or (None, the problem) when the query failed: not counted, for reads
        whose failure is an expected state (an extension that is not installed)."""
        try:
            return self._exec(query, params).fetchall(), None
        except psycopg.Error as exc:
            if self.conn.broken:
                raise QueryFailed(first_line(exc)) from None
            return None, first_line(exc)

    def error(self, group: str, exc: BaseException, event: str = "query_failed") -> None:
        """Record a failed read of ``group`` (counted, one log line)."""
        self.failed += 1
        if self._count_error is not None:
            self._count_error(group)
        if event == "query_failed":
            log.warning("event=query_failed server=%s query=%s error=%r", self.server, group, first_line(exc))
        else:
            log.warning("event=%s server=%s error=%r", event, self.server, first_line(exc))


@dataclass
class ServerFacts:
    """What the server-wide collectors learned this scrape, for the ones after them."""

    in_recovery: bool = False
    databases: list[str] = field(default_factory=list)  # that accept connections


@dataclass
class RelationSizes:
    """Table and index sizes of one database, re-read every sizes_interval (the size
    functions stat every file of every relation: the most expensive part of a scrape)."""

    when: float | None = None  # None: never read
    tables: dict = field(default_factory=dict)   # (schema, table) -> bytes
    indexes: dict = field(default_factory=dict)  # (schema, table, index) -> bytes

    def due(self, now: float, interval: float) -> bool:
        return self.when is None or now - self.when >= interval


@dataclass
class Scope:
    """Where and when a collector runs: the target, the scrape time, the database."""

    server: str                       # the target's name (label `server`)
    spec: Any                         # the target's view (an item of view(cfg, "exporters.db").targets)
    now: float                        # Unix time the job started
    facts: ServerFacts = field(default_factory=ServerFacts)
    datname: str = ""                 # DATABASE scope: the database
    sizes: RelationSizes = field(default_factory=RelationSizes)  # DATABASE scope: its size cache
    sizes_due: bool = True            # DATABASE scope: sizes are re-read this scrape
    # DATABASE scope, filled by `indexes` for `tables` (which runs after it):
    index_sizes_read: dict | None = None                # fresh index sizes (sizes_due and read)
    index_bytes: dict = field(default_factory=dict)     # (schema, table) -> bytes of its indexes
    # DATABASE scope, partitions -> their root, for the series budget (exporters/db/budget.py):
    table_roots: dict = field(default_factory=dict)     # (schema, partition) -> (schema, root table)
    index_roots: dict = field(default_factory=dict)     # (schema, partition's index) -> root index name
    table_live: dict = field(default_factory=dict)      # (schema, table) -> estimated live rows (`tables`)


class Collector:
    """Base of a collector: set ``name`` (label `collector`), ``scope``; implement collect()."""

    name: ClassVar[str]
    scope: ClassVar[str] = SERVER

    def __init__(self, dbc):
        self.dbc = dbc  # the view of the exporters.db section (core.config.view)

    @classmethod
    def enabled(cls, spec, dbc) -> bool:
        """Whether this collector runs for the target ``spec`` (default: always)."""
        return True

    @classmethod
    def interval(cls, dbc) -> float | None:
        """How often a background collector (OWN and DATABASE scopes) is refreshed, in
        seconds (0 = in every scrape); None for a live one (SERVER scope)."""
        return None

    def collect(self, q: Queries, scope: Scope) -> Families:  # pragma: no cover - abstract
        raise NotImplementedError

    def forget(self, datname: str) -> None:
        """The database went away: drop what this collector cached about it."""
