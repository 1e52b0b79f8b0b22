"""Faults of the demo database: stored in platform.demo_faults, applied by the workload.

    slow-queries       rate = share of statements replaced by a > 2 s report (default 0.2)
    deadlocks          rate = deadlocks per minute (default 6)
    partition-missing  partition upkeep stops and the next day's gate_logs partition is
                       dropped (PostgresPartitionMissing); healing recreates it
"""
from __future__ import annotations

import threading

import psycopg

KINDS = {
    "slow-queries": ("a share of the workload's statements become reports slower than 2 s", 0.2),
    "deadlocks": ("pairs of transactions update two rows in opposite orders", 6.0),
    "partition-missing": ("partition upkeep stops; the next day's gate_logs partition is dropped", 0.0),
}


def inject(conn: psycopg.Connection, kind: str, rate: float | None = None, duration: float | None = None) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown fault {kind!r} (faults: {', '.join(KINDS)})")
    rate = KINDS[kind][1] if rate is None else float(rate)
    conn.execute("insert into platform.demo_faults (kind, rate, until) values "
                 "(%s, %s, case when %s::float8 is null then null else now() + make_interval(secs => %s) end) "
                 "on conflict (kind) do update set rate = excluded.rate, since = now(), until = excluded.until",
                 (kind, rate, duration, duration))


def heal(conn: psycopg.Connection, kind: str | None = None) -> int:
    cur = conn.execute("delete from platform.demo_faults where %s::text is null or kind = %s", (kind, kind))
    return cur.rowcount


def active(conn: psycopg.Connection) -> dict[str, float]:
    rows = conn.execute("select kind, rate from platform.demo_faults where until is null or until > now()").fetchall()
    return {k: float(r) for k, r in rows}


def drop_next_gate_log_partition(conn: psycopg.Connection) -> str | None:
    """Drop the (empty) partition of tomorrow, so that the next period is missing."""
    name = conn.execute("select 'gate_logs_' || to_char(date_trunc('day', now()) + interval '1 day', 'YYYY_MM_DD')"
                        ).fetchone()[0]
    if conn.execute("select to_regclass(%s)", (f"platform.{name}",)).fetchone()[0] is None:
        return None
    conn.execute(f"drop table platform.{name}")
    return name


def deadlock(url: str, row_a: int = 1, row_b: int = 2, timeout: float = 10.0) -> bool:
    """Two transactions update rows a and b in opposite orders: PostgreSQL detects the
    deadlock (after deadlock_timeout) and cancels one. True when one was detected."""
    c1 = psycopg.connect(url, application_name="opsstack-demo-deadlock")
    c2 = psycopg.connect(url, application_name="opsstack-demo-deadlock")
    detected = []
    try:
        for c in (c1, c2):
            c.execute(f"set lock_timeout = '{int(timeout * 1000)}ms'")
        q = "update platform.registrations set status = status where id = %s"
        c1.execute(q, (row_a,))
        c2.execute(q, (row_b,))

        def second(c, row):
            try:
                c.execute(q, (row,))
            except psycopg.errors.DeadlockDetected:
                detected.append(True)
                c.rollback()  # the victim releases its locks: the other one goes on
            except psycopg.Error:
                c.rollback()
            else:
                c.commit()

        t = threading.Thread(target=second, args=(c1, row_b))
        t.start()
        second(c2, row_a)
        t.join(timeout)
    finally:
        for c in (c1, c2):
            try:
                c.rollback()
                c.close()
            except psycopg.Error:
                pass
    return bool(detected)
