"""Schema migrations in code: one loop for every component that owns tables.

Each component keeps its ordered ``[(version, ddl), ...]`` and its own versions table;
``apply`` runs the missing ones in one transaction under an advisory lock, so replicas that
start together do not race. When everything is applied it returns without taking the lock
or needing DDL privileges.
"""
from __future__ import annotations

import logging

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)


def apply(conn: psycopg.Connection, migrations: list[tuple[int, str]], versions_table: str,
          lock: int | str, component: str) -> int:
    """Apply pending migrations; returns the schema version. ``lock``: an advisory lock id,
    or a name hashed with hashtext()."""
    latest = max(v for v, _ in migrations)
    table = sql.Identifier(versions_table)
    cur = conn.cursor(row_factory=tuple_row)
    with conn.transaction():  # fast path
        if cur.execute("select to_regclass(%s) is not null", (versions_table,)).fetchone()[0]:
            row = cur.execute(sql.SQL("select max(version) from {}").format(table)).fetchone()
            if row and row[0] is not None and row[0] >= latest:
                return row[0]
    with conn.transaction():
        if isinstance(lock, int):
            cur.execute("select pg_advisory_xact_lock(%s)", (lock,))
        else:
            cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (lock,))
        cur.execute(sql.SQL("create table if not exists {} (version int primary key, "
                            "applied_at timestamptz not null default now())").format(table))
        done = {r[0] for r in cur.execute(sql.SQL("select version from {}").format(table)).fetchall()}
        for version, ddl in migrations:
            if version in done:
                continue
            cur.execute(ddl)
            cur.execute(sql.SQL("insert into {} (version) values (%s)").format(table), (version,))
            log.info("event=migration_applied component=%s version=%s", component, version)
    return latest
