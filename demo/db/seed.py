"""Create the demo schema and seed it (once; `platform.seed_info` remembers)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
log = logging.getLogger("opsstack.demo.db")


def schema_sql() -> str:
    return (HERE / "schema.sql").read_text()


def seed_sql(scale: float) -> str:
    return (HERE / "seed.sql").read_text().replace(":scale", repr(float(scale)))


EXTENSIONS = ("pg_stat_statements", "hypopg", "pg_qualstats")


def create_extensions(conn: psycopg.Connection) -> list[str]:
    """Best effort: the extensions the exporter and the advisor use, where installed."""
    made = []
    for ext in EXTENSIONS:
        avail = conn.execute("select 1 from pg_available_extensions where name = %s", (ext,)).fetchone()
        if not avail:
            continue
        try:
            conn.execute(f"create extension if not exists {ext}")
            made.append(ext)
        except psycopg.Error as exc:
            log.info("event=extension_not_created extension=%s error=%r", ext, str(exc).strip().splitlines()[0])
    return made


def apply_schema(conn: psycopg.Connection, partitions: bool = True) -> None:
    create_extensions(conn)
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('opsstack.demo.db.schema'))")
        conn.execute(schema_sql())
        # the partitions in the same transaction as their tables: a scrape in between would see
        # partitioned tables with no partition for the current period (a false critical alert)
        if partitions:
            conn.execute("select platform.ensure_partitions()")


def seeded(conn: psycopg.Connection) -> bool:
    if conn.execute("select to_regclass('platform.seed_info')").fetchone()[0] is None:
        return False
    return conn.execute("select exists (select 1 from platform.seed_info)").fetchone()[0]


def seed(url: str, scale: float = 1.0, force: bool = False) -> float:
    """Apply the schema and seed the data unless already seeded; returns seconds spent."""
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        apply_schema(conn)
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext('opsstack.demo.db.seed'))")
            if seeded(conn) and not force:
                return 0.0
            if force:
                conn.execute("truncate platform.participants, platform.events, platform.registrations, "
                             "platform.gate_logs, platform.seed_info")
            conn.execute(seed_sql(scale))
            secs = time.monotonic() - t0
            conn.execute("insert into platform.seed_info (scale, seconds) values (%s, %s)", (scale, secs))
    log.info("event=demo_db_seeded scale=%s seconds=%.1f", scale, secs)
    return secs
