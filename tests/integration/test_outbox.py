"""The shared outbox (core/outbox.py) on real PostgreSQL: a delivery that fails for
any reason fails its own row (backoff, then 'failed'); rows behind it in its key wait their turn,
every other key flows, and no row, however broken, blocks the queue."""
from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from core import outbox
from webhook_receiver.escalation import utcnow

pytestmark = pytest.mark.integration

TABLE = """
create table test_outbox (
    id bigserial primary key,
    k text not null,
    payload jsonb not null default '{}',
    status text not null default 'pending' check (status in ('pending', 'done', 'failed')),
    attempts int not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error text,
    done_at timestamptz
)"""


# every column but the payload (one of them cannot be decoded in Python at all)
COLS = "select id, k, status, attempts, next_attempt_at, last_error from test_outbox where k <> 'audit'"


class Boom(Exception):
    pass


def explode(mode: str, conn):
    if mode == "value":
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    if mode == "key":
        return {}["ticket"]
    if mode == "custom":
        raise Boom("\x00 a NUL in the error text")
    if mode == "db":  # a database error caused by this row's data
        conn.execute("select %s::int", ("not a number",))
    if mode == "permanent":
        raise outbox.Permanent("will never work")
    if mode == "recursion":
        raise RecursionError("maximum recursion depth exceeded")


@pytest.fixture
def conn(pg_db):
    with psycopg.connect(pg_db, autocommit=True, row_factory=dict_row) as c:
        c.execute(TABLE)
        yield c


def add(conn, k: str, payload) -> int:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return conn.execute("insert into test_outbox (k, payload) values (%s, %s::jsonb) returning id",
                        (k, body)).fetchone()["id"]


def test_any_failure_fails_its_row_only_and_no_queue_is_blocked(conn):
    q = outbox.Queue(name="test", table="test_outbox", key=("k",), max_attempts=3,
                     initial_backoff=1, max_backoff=2)
    ids = {}
    # the oldest rows are the bad ones: each would be claimed first, every pass
    for mode in ("value", "key", "custom", "db", "permanent", "recursion"):
        ids[mode] = add(conn, mode, {"mode": mode})
        ids[mode + "-next"] = add(conn, mode, {"mode": "ok", "n": mode + "-next"})
    # a payload that makes even loading the row explode (deeper than Python's json can decode)
    ids["deep"] = add(conn, "deep", "[" * 3000 + "]" * 3000)
    ids["deep-next"] = add(conn, "deep", {"mode": "ok", "n": "deep-next"})
    ids["good"] = add(conn, "good", {"mode": "ok", "n": "good"})
    delivered, failures = [], []

    def deliver(c, row):
        explode(row["payload"]["mode"], c)
        c.execute("insert into test_outbox (k, payload, status) values ('audit', %s, 'done')",
                  (json.dumps(row["payload"]),))
        delivered.append(row["payload"]["n"])

    def on_failed(c, row, error, attempts, final):
        failures.append((row["k"], attempts, final))

    # first pass: every bad row fails once, the good key is delivered at once (and the row behind
    # the one that failed for good)
    outbox.run_due(conn, q, deliver, on_failed=on_failed)
    assert delivered == ["permanent-next", "good"]
    rows = {r["id"]: r for r in conn.execute(COLS).fetchall()}
    assert rows[ids["permanent"]]["status"] == "failed"  # not retryable: failed at once
    for mode in ("value", "key", "custom", "db", "recursion", "deep"):
        r = rows[ids[mode]]
        assert (r["status"], r["attempts"]) == ("pending", 1), r
        assert r["next_attempt_at"] > utcnow()  # backoff
        assert rows[ids[mode + "-next"]]["status"] == "pending"  # in order: waits behind its head
    assert "ValueError" in rows[ids["value"]]["last_error"] and "\x00" not in rows[ids["custom"]]["last_error"]
    assert "Boom" in rows[ids["custom"]]["last_error"] and "KeyError" in rows[ids["key"]]["last_error"]

    # later passes: after max_attempts each head is failed for good and the row behind it goes out
    for s in (5, 10, 20, 40):
        outbox.run_due(conn, q, deliver, on_failed=on_failed, now=utcnow() + timedelta(seconds=s))
    rows = {r["id"]: r for r in conn.execute(COLS).fetchall()}
    for mode in ("value", "key", "custom", "db", "recursion", "deep"):
        assert (rows[ids[mode]]["status"], rows[ids[mode]]["attempts"]) == ("failed", 3), rows[ids[mode]]
        assert rows[ids[mode + "-next"]]["status"] == "done"
    assert rows[ids["permanent-next"]]["status"] == "done"
    assert sorted(delivered) == sorted(["good"] + [m + "-next" for m in
                                                   ("value", "key", "custom", "db", "permanent", "recursion", "deep")])
    # a failed delivery's own writes are rolled back with it; a good one's are kept
    assert conn.execute("select count(*) n from test_outbox where k = 'audit'").fetchone()["n"] == len(delivered)
    assert ("value", 3, True) in failures and ("permanent", 1, True) in failures
    assert conn.execute("select count(*) n from test_outbox where status = 'pending'").fetchone()["n"] == 0


def test_rows_of_one_key_go_out_in_order_and_a_locked_head_holds_its_key_only(conn, pg_db):
    q = outbox.Queue(name="test", table="test_outbox", key=("k",), initial_backoff=1, max_backoff=1)
    a1, a2, b1 = add(conn, "a", {"n": 1}), add(conn, "a", {"n": 2}), add(conn, "b", {"n": 3})
    got = []
    with psycopg.connect(pg_db, autocommit=True) as other:  # another worker is delivering a1 right now
        with other.transaction():
            other.execute("select 1 from test_outbox where id = %s for update", (a1,))
            outbox.run_due(conn, q, lambda c, row: got.append(row["id"]))
            assert got == [b1]  # a2 waits for a1; b is not held up
    outbox.run_due(conn, q, lambda c, row: got.append(row["id"]))
    assert got == [b1, a1, a2]


def test_backoff_is_exponential_and_capped():
    assert [outbox.backoff(10, 600, n) for n in (1, 2, 3, 7, 8, 20)] == [10, 20, 40, 600, 600, 600]
