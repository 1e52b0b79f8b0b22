"""What the console's authentication keeps in PostgreSQL, shared by every worker and replica.

- ``receiver_secrets``: the session-signing key when receiver.console.session_secret is not set,
  generated once (``secrets.token_hex(32)``; insert .. on conflict do nothing, so every process
  that races to create it ends up with the same value). Never derived from another secret.
- ``console_sessions``: one row per logged-in browser. The cookie carries a random session id;
  the row stores only its SHA-256, the user, and when it was created and last used. A request
  whose session has no row (logged out, expired, never existed) is anonymous.
- ``login_failures``: failed password checks per user name and per client address, with the time
  the key is locked until (exponential backoff), so all workers throttle together.

The tables are the "console" component's migrations (own versions table), applied with the
receiver's (``webhook_receiver.db.migrate``).
"""
from __future__ import annotations

import hashlib
import math
import secrets
from datetime import datetime

import psycopg

from core.migrations import apply

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
    create table if not exists receiver_secrets (
        name text primary key,
        value text not null,
        created_at timestamptz not null default now()
    );
    create table if not exists console_sessions (
        id text primary key,               -- sha256 hex of the random id the cookie carries
        user_name text not null,
        created_at timestamptz not null default now(),
        last_seen timestamptz not null default now(),
        client_addr text
    );
    create index if not exists console_sessions_user on console_sessions (user_name);
    create index if not exists console_sessions_last_seen on console_sessions (last_seen);
    create table if not exists login_failures (
        key text primary key,              -- 'user:<name>' or 'addr:<client address>'
        failures int not null default 0,
        first_failure timestamptz not null default now(),
        last_failure timestamptz not null default now(),
        locked_until timestamptz
    );
    create index if not exists login_failures_last on login_failures (last_failure);
    """),
]

MIGRATE_LOCK = "opsstack.console.migrate"
SESSION_KEY_NAME = "console_session_key"


def migrate(conn: psycopg.Connection) -> int:
    return apply(conn, MIGRATIONS, "console_schema_versions", MIGRATE_LOCK, "console")


# --- the signing key ----------------------------------------------------------------------------

def shared_secret(conn: psycopg.Connection, name: str = SESSION_KEY_NAME) -> str:
    """The secret called ``name``, created (random, 256 bits) by whichever process asks first."""
    conn.execute("insert into receiver_secrets (name, value) values (%s, %s) on conflict (name) do nothing",
                 (name, secrets.token_hex(32)))
    row = conn.execute("select value from receiver_secrets where name = %s", (name,)).fetchone()
    return row["value"] if isinstance(row, dict) else row[0]


# --- sessions -----------------------------------------------------------------------------------

def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def create_session(conn: psycopg.Connection, user: str, client_addr: str | None, idle: float,
                   lifetime: float) -> str:
    """A new session for ``user``; returns the id the cookie carries (only its hash is stored).
    Expired rows are swept on the way."""
    conn.execute("delete from console_sessions where last_seen < now() - make_interval(secs => %s) "
                 "or created_at < now() - make_interval(secs => %s)", (idle, lifetime))
    sid = secrets.token_urlsafe(32)
    conn.execute("insert into console_sessions (id, user_name, client_addr) values (%s, %s, %s)",
                 (_sid_hash(sid), user, (client_addr or "")[:100]))
    return sid


def touch_session(conn: psycopg.Connection, sid: str, idle: float, lifetime: float) -> str | None:
    """The user of a live session (and it is marked used now), or None: unknown, logged out,
    idle longer than ``idle`` seconds or older than ``lifetime`` seconds."""
    if not isinstance(sid, str) or not sid or len(sid) > 200:
        return None
    row = conn.execute(
        "update console_sessions set last_seen = now() where id = %s "
        "and last_seen > now() - make_interval(secs => %s) and created_at > now() - make_interval(secs => %s) "
        "returning user_name", (_sid_hash(sid), idle, lifetime)).fetchone()
    if row is None:
        return None
    return row["user_name"] if isinstance(row, dict) else row[0]


def end_session(conn: psycopg.Connection, sid: str | None) -> None:
    if isinstance(sid, str) and sid:
        conn.execute("delete from console_sessions where id = %s", (_sid_hash(sid),))


# --- login throttling ---------------------------------------------------------------------------

def backoff_seconds(failures: int, free: int, base: float, cap: float) -> float:
    """How long a key is locked after its ``failures``-th consecutive failure (pure): nothing for
    the first ``free`` ones, then base, 2*base, 4*base, ... up to ``cap``."""
    over = failures - free
    if over <= 0 or base <= 0:
        return 0.0
    return min(cap, base * 2 ** min(over - 1, 60))


def locked_for(conn: psycopg.Connection, keys: list[str], now: datetime | None = None) -> float:
    """Seconds until every key in ``keys`` may try again (0 = not locked)."""
    row = conn.execute(
        "select extract(epoch from max(locked_until) - now()) from login_failures "
        "where key = any(%s) and locked_until > now()", (keys,)).fetchone()
    left = (row["extract"] if isinstance(row, dict) else row[0]) if row else None
    return max(0.0, float(left)) if left is not None else 0.0


def record_failure(conn: psycopg.Connection, key: str, free: int, base: float, cap: float,
                   forget_after: float) -> float:
    """Count one more failure for ``key`` (the count restarts once the last failure is older than
    ``forget_after``); returns the seconds it is now locked for."""
    with conn.transaction():
        row = conn.execute(
            "insert into login_failures as f (key, failures) values (%s, 1) "
            "on conflict (key) do update set "
            " failures = case when f.last_failure < now() - make_interval(secs => %s) then 1 else f.failures + 1 end,"
            " first_failure = case when f.last_failure < now() - make_interval(secs => %s) then now() "
            "   else f.first_failure end,"
            " last_failure = now() "
            "returning failures", (key, forget_after, forget_after)).fetchone()
        n = row["failures"] if isinstance(row, dict) else row[0]
        wait = backoff_seconds(n, free, base, cap)
        if wait > 0:
            conn.execute("update login_failures set locked_until = greatest(coalesce(locked_until, now()), "
                         "now() + make_interval(secs => %s)) where key = %s", (wait, key))
    return wait


def clear_failures(conn: psycopg.Connection, key: str) -> None:
    conn.execute("delete from login_failures where key = %s", (key,))


def sweep_failures(conn: psycopg.Connection, forget_after: float) -> None:
    """Forget keys with no failure for ``forget_after`` that are not locked."""
    conn.execute("delete from login_failures where last_failure < now() - make_interval(secs => %s) "
                 "and (locked_until is null or locked_until < now())", (forget_after,))


def retry_after(seconds: float) -> int:
    """The Retry-After value (whole seconds, at least 1)."""
    return max(1, math.ceil(seconds))
