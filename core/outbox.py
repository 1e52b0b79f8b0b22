"""One durable outbox in PostgreSQL for every queue of work that must happen once a ticket
changed: notifications (``ticket_notifications``), JIRA/ServiceNow forwarding
(``ticket_itsm_outbox``) and the automation jobs (``automation_jobs``).

A queue is a table with at least ``id``, ``status`` ('pending', a done status, 'failed'),
``attempts``, ``next_attempt_at``, ``last_error`` and a done timestamp, plus the columns of its
ordering key. ``run_due`` takes one due row at a time with FOR UPDATE SKIP LOCKED (any number of
workers and replicas share a queue, none delivers a row twice at once), rows of one key (e.g.
ticket + channel) strictly in id order, and calls ``deliver(conn, row)`` inside a savepoint.

The property that matters: a row that fails, for ANY reason (an exception of any type from the
delivery, a payload that cannot even be decoded, a database error caused by its data), fails
that row only: it gets ``attempts + 1``, its error and an exponential, capped backoff; after
``max_attempts`` (or at once when the error says ``retryable = False``) it is ``failed`` for
good, and the rows behind it in its key move on. Other keys never wait for it. Only a lost
database connection stops a pass (then nothing can be recorded anyway; the row is taken again
later, its lock having gone with the connection).
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from psycopg import sql

from core.clock import utcnow

log = logging.getLogger(__name__)

_counts: Counter = Counter()
_counts_lock = threading.Lock()


class Permanent(Exception):
    """Raised by a delivery that will not work however often it is retried."""

    retryable = False


@dataclass(frozen=True)
class Queue:
    name: str                                # for logs and metrics ('notifications', 'itsm', 'jobs')
    table: str
    key: tuple[str, ...]                     # rows of one key value go out in id order
    info: tuple[str, ...] = ()               # more columns claimed with the row (for on_failed)
    done_status: str = "done"
    done_at: str = "done_at"
    max_attempts: int = 8
    initial_backoff: float = 10.0
    max_backoff: float = 600.0
    where: str = ""                          # extra condition on claimable rows (SQL, no user data)
    error_limit: int = 2000


def table_ddl(table: str, columns: str, done_status: str = "done", done_at: str = "done_at") -> str:
    """CREATE TABLE (and the due index) of a queue: ``columns`` are its own (ticket_id, key
    columns, dedup_key, payload...); the bookkeeping columns ``run_due`` relies on are added here,
    so every queue has the same ones. For migrations (no user data: names are the caller's)."""
    return f"""
    create table if not exists {table} (
        id bigserial primary key,
        {columns.strip()},
        status text not null default 'pending' check (status in ('pending', '{done_status}', 'failed')),
        attempts int not null default 0,
        next_attempt_at timestamptz not null default now(),
        last_error text,
        created_at timestamptz not null default now(),
        {done_at} timestamptz
    );
    create index if not exists {table}_due on {table} (next_attempt_at) where status = 'pending';
    """


def backoff(initial: float, cap: float, attempts: int) -> float:
    """Seconds before the retry after failure number ``attempts`` (1-based): doubles, capped (pure)."""
    return min(cap, initial * 2 ** max(attempts - 1, 0))


def describe(exc: BaseException, limit: int = 2000) -> str:
    """One storable line for an error (no NUL: PostgreSQL text cannot hold it)."""
    msg = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")  # first line only
    if not isinstance(exc, (RuntimeError,)) or not msg:
        msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return msg.replace("\x00", "\\0")[:limit]


def counts() -> dict:
    """Outcomes in this process: {(queue, 'done' | 'retry' | 'failed'): n}."""
    with _counts_lock:
        return dict(_counts)


def _count(queue: str, outcome: str) -> None:
    with _counts_lock:
        _counts[(queue, outcome)] += 1


def _claim_sql(q: Queue) -> sql.Composed:
    t = sql.Identifier(q.table)
    same = sql.SQL(" and ").join(sql.SQL("p.{c} = o.{c}").format(c=sql.Identifier(c)) for c in q.key)
    cols = sql.SQL(", ").join(sql.SQL("o.{}").format(sql.Identifier(c))
                              for c in ("id", "attempts", *q.key, *q.info))
    extra = sql.SQL(f" and ({q.where})") if q.where else sql.SQL("")
    return sql.SQL("""select {cols} from {t} o
        where o.status = 'pending' and o.next_attempt_at <= %(now)s and not (o.id = any(%(skip)s)){extra}
          and not exists (select 1 from {t} p where {same} and p.status = 'pending' and p.id < o.id)
        order by o.id limit 1 for update of o skip locked""").format(cols=cols, t=t, extra=extra, same=same)


def _broken(conn) -> bool:
    return bool(conn.closed or getattr(conn, "broken", False))


def _fail(conn, q: Queue, rid: int, attempts: int, error: str, final: bool) -> None:
    conn.execute(sql.SQL("""update {} set attempts = %s, last_error = %s, status = %s,
                            next_attempt_at = now() + %s where id = %s""").format(sql.Identifier(q.table)),
                 (attempts, error[:q.error_limit], "failed" if final else "pending",
                  timedelta(seconds=backoff(q.initial_backoff, q.max_backoff, attempts)), rid))


def run_due(conn, q: Queue, deliver: Callable[[object, dict], object], now: datetime | None = None,
            batch: int = 50, on_failed: Callable[[object, dict, str, int, bool], None] | None = None,
            on_outcome: Callable[[str, str, dict], None] | None = None) -> int:
    """Deliver due rows of ``q`` one per transaction; returns how many rows were handled
    (delivered, put back with a backoff, or failed). ``conn``: an autocommit connection with
    dict rows. ``on_failed(conn, row, error, attempts, final)`` runs in the failing row's
    transaction (in a savepoint: its own failure is only logged)."""
    claim = _claim_sql(q)
    get = sql.SQL("select * from {} where id = %s").format(sql.Identifier(q.table))
    done_sql = sql.SQL("update {} set status = %s, {} = now(), attempts = attempts + 1, last_error = null "
                       "where id = %s").format(sql.Identifier(q.table), sql.Identifier(q.done_at))
    skip: list[int] = []
    handled = 0
    while handled < batch:
        row = None
        outcome = "done"
        try:
            with conn.transaction():
                row = conn.execute(claim, {"now": now or utcnow(), "skip": skip}).fetchone()
                if row is None:
                    return handled
                attempts = row["attempts"] + 1
                try:
                    with conn.transaction():  # savepoint: the delivery's own writes live or die with it
                        full = conn.execute(get, (row["id"],)).fetchone()
                        deliver(conn, full)
                        conn.execute(done_sql, (q.done_status, row["id"]))
                except Exception as exc:  # noqa: BLE001 - any failure fails this row only
                    if _broken(conn):
                        raise
                    error = describe(exc, q.error_limit)
                    final = attempts >= q.max_attempts or getattr(exc, "retryable", True) is False
                    outcome = "failed" if final else "retry"
                    _fail(conn, q, row["id"], attempts, error, final)
                    log.warning("event=outbox_delivery_failed queue=%s id=%s attempt=%s final=%s error=%r",
                                q.name, row["id"], attempts, final, error[:300])
                    if on_failed is not None:
                        try:
                            with conn.transaction():
                                on_failed(conn, dict(row), error, attempts, final)
                        except Exception as exc2:  # noqa: BLE001
                            if _broken(conn):
                                raise
                            log.warning("event=outbox_on_failed_error queue=%s id=%s error=%r",
                                        q.name, row["id"], describe(exc2, 300))
        except Exception as exc:  # noqa: BLE001
            if _broken(conn) or row is None:
                raise  # the database is away (or the claim itself failed): try again next pass
            # the bookkeeping of this row failed: fail it on its own, carry on with the others
            skip.append(row["id"])
            outcome = "retry"
            error = f"outbox: {describe(exc, 500)}"
            log.warning("event=outbox_bookkeeping_failed queue=%s id=%s error=%r", q.name, row["id"], error)
            try:
                with conn.transaction():
                    attempts = row["attempts"] + 1
                    final = attempts >= q.max_attempts
                    outcome = "failed" if final else "retry"
                    _fail(conn, q, row["id"], attempts, error, final)
            except Exception:  # noqa: BLE001
                if _broken(conn):
                    raise
                log.exception("event=outbox_row_unrecordable queue=%s id=%s", q.name, row["id"])
        handled += 1
        _count(q.name, outcome)
        if on_outcome is not None:
            try:
                on_outcome(q.name, outcome, dict(row))
            except Exception:  # noqa: BLE001 - a metric must not stop the queue
                log.exception("event=outbox_metric_hook_failed queue=%s", q.name)
    return handled
