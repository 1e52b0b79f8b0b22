"""Connections of the database exporter: one per database, kept between scrapes.

A scrape uses the database's single connection (a pool of one, guarded by a lock, so two
concurrent scrapes queue rather than open more). Every connection is opened with a
`statement_timeout` and a `lock_timeout`, so a locked catalog or a slow view can never
hang a scrape; a broken connection is dropped and reopened on the next scrape.
"""
from __future__ import annotations

import logging
import os
import threading
from urllib.parse import urlsplit

import psycopg
from psycopg import conninfo

from core.pg import connect as pg_connect

log = logging.getLogger("opsstack.exporter.db")

APPLICATION_NAME = "opsstack-exporter-db"


def target_url(target, database) -> str | None:
    """The URL of ``target`` (a view of exporters.db.targets[]): its own, else database.url
    (``database``: the view of the database section), else $OPSSTACK_DATABASE_URL."""
    return target.url or database.url or os.environ.get("OPSSTACK_DATABASE_URL")


def dbname_of(url: str) -> str:
    info = conninfo.conninfo_to_dict(url)
    return info.get("dbname") or info.get("user") or os.environ.get("PGDATABASE") or "postgres"


def redact(url: str) -> str:
    """host:port/db of a URL (no user or password) for logs."""
    try:
        info = conninfo.conninfo_to_dict(url)
        return f"{info.get('host', 'localhost')}:{info.get('port', '5432')}/{info.get('dbname', '')}"
    except psycopg.ProgrammingError:
        p = urlsplit(url)
        return f"{p.hostname}:{p.port}{p.path}"


def connect(url: str, connect_timeout: float, statement_timeout: float,
            application_name: str = APPLICATION_NAME, prepare: bool = False) -> psycopg.Connection:
    """An autocommit connection (core.pg.connect) whose every statement is bounded by
    statement_timeout, and every lock wait too. ``prepare``: every statement is prepared on
    its first run (the collectors' connections: the same queries every scrape, planned once,
    which more than halves PostgreSQL's CPU per scrape; a target must therefore be PostgreSQL
    itself, not a pgbouncer in transaction mode)."""
    st_ms = max(1, int(statement_timeout * 1000))
    conn = pg_connect(url, connect_timeout, autocommit=True, application_name=application_name,
                      keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=2,
                      prepare_threshold=0 if prepare else None)
    # SET (not startup options) so pg_settings.reset_val still shows the server's values
    try:
        conn.execute("select set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false),"
                     " set_config('idle_in_transaction_session_timeout', %s, false)",
                     (f"{st_ms}ms", f"{st_ms}ms", f"{st_ms * 5}ms"))
    except BaseException:
        conn.close()
        raise
    return conn


class DbHandle:
    """One database of a target: its URL and a lazily (re)opened connection."""

    def __init__(self, url: str, connect_timeout: float, statement_timeout: float):
        self.url = url
        self.dbname = dbname_of(url)
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.lock = threading.Lock()
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        c = self._conn
        if c is None or c.closed or c.broken:
            self.discard()
            self._conn = c = connect(self.url, self.connect_timeout, self.statement_timeout, prepare=True)
        return c

    def discard(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            try:
                c.close()
            except Exception:  # closing a dead connection can fail; it is gone either way
                pass

    def close(self) -> None:
        with self.lock:
            self.discard()
