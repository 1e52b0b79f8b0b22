"""PostgreSQL access for the receiver: a connection pool and the migrations (in code).

Migrations are a list of SQL steps applied in order under an advisory lock, each recorded
in ``ticket_schema_versions``; running them twice, or from two processes at once, is safe.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core import outbox, pg
from core.migrations import apply
from webhook_receiver import console_store

log = logging.getLogger(__name__)

# pg_advisory_lock key for migrations: hashtext('opsstack.receiver.migrate') is stable,
# but a literal keeps it obvious.
MIGRATE_LOCK = 7_215_001

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
    create table if not exists ticket_payloads (
        id bigserial primary key,
        received_at timestamptz not null default now(),
        group_key text,
        receiver text,
        status text,
        alert_count int not null default 0,
        body jsonb not null,
        error text
    );
    create index if not exists ticket_payloads_received_at on ticket_payloads (received_at);

    create table if not exists ticket_groups (
        id bigserial primary key,
        group_key text not null unique,
        receiver text,
        group_labels jsonb not null default '{}',
        first_seen timestamptz not null default now(),
        last_seen timestamptz not null default now()
    );

    create table if not exists tickets (
        id bigserial primary key,
        fingerprint text not null,
        status text not null check (status in ('open', 'acknowledged', 'resolved')),
        alertname text not null,
        service text not null default '',
        severity text not null default '',
        tier int not null default 1,
        team text not null default '',
        labels jsonb not null default '{}',
        annotations jsonb not null default '{}',
        summary text not null default '',
        generator_url text not null default '',
        group_id bigint references ticket_groups (id),
        starts_at timestamptz not null,
        opened_at timestamptz not null default now(),
        acknowledged_at timestamptz,
        acknowledged_by text,
        resolved_at timestamptz,
        resolved_by text,
        reopened_count int not null default 0,
        last_reopened_at timestamptz,
        policy text not null default 'default',
        entry_level int not null default 1,
        level int not null default 1,
        level_since timestamptz not null default now(),
        repeats int not null default 0,
        next_escalation_at timestamptz,
        assignee text,
        updated_at timestamptz not null default now()
    );
    -- at most one unresolved ticket per alert fingerprint
    create unique index if not exists tickets_one_active on tickets (fingerprint)
        where status <> 'resolved';
    create index if not exists tickets_status on tickets (status, opened_at);
    create index if not exists tickets_due on tickets (next_escalation_at)
        where status = 'open' and next_escalation_at is not null;
    create index if not exists tickets_fingerprint on tickets (fingerprint, resolved_at);

    -- one row per firing episode (fingerprint + startsAt): the idempotency key
    create table if not exists ticket_alerts (
        id bigserial primary key,
        ticket_id bigint not null references tickets (id) on delete cascade,
        fingerprint text not null,
        starts_at timestamptz not null,
        ends_at timestamptz,
        status text not null,
        labels jsonb not null default '{}',
        annotations jsonb not null default '{}',
        group_id bigint references ticket_groups (id),
        first_seen timestamptz not null default now(),
        last_seen timestamptz not null default now(),
        unique (fingerprint, starts_at)
    );
    create index if not exists ticket_alerts_ticket on ticket_alerts (ticket_id);

    create table if not exists ticket_events (
        id bigserial primary key,
        ticket_id bigint not null references tickets (id) on delete cascade,
        at timestamptz not null default now(),
        kind text not null,
        actor text not null,
        details jsonb not null default '{}'
    );
    create index if not exists ticket_events_ticket on ticket_events (ticket_id, at);
    create index if not exists ticket_events_kind on ticket_events (kind, at);

    """ + outbox.table_ddl("ticket_notifications", """
        ticket_id bigint not null references tickets (id) on delete cascade,
        channel text not null,
        kind text not null,
        dedup_key text not null unique,
        recipient text,
        payload jsonb not null default '{}'""", done_status="sent", done_at="sent_at") + """

    -- per ticket and channel: the thread id (Slack ts, e-mail Message-ID) replies go to
    create table if not exists ticket_threads (
        ticket_id bigint not null references tickets (id) on delete cascade,
        channel text not null,
        thread_ref text not null,
        primary key (ticket_id, channel)
    );

    create table if not exists ticket_heartbeats (
        alertname text primary key,
        last_seen timestamptz not null,
        alarm_ticket_id bigint
    );
    """),
    (2, """
    -- queued processing: the webhook stores the payload, workers apply it (process_next)
    alter table ticket_payloads add column if not exists processed_at timestamptz;
    alter table ticket_payloads add column if not exists attempts int not null default 0;
    alter table ticket_payloads add column if not exists result jsonb;
    update ticket_payloads set processed_at = received_at where processed_at is null;  -- v1 was inline
    create index if not exists ticket_payloads_pending on ticket_payloads (group_key, id)
        where processed_at is null;
    """),
    (3, """
    -- alert storms: what the last notification of a group carried, and how many alerts
    -- Alertmanager left out of it (webhook max_alerts; payload field truncatedAlerts)
    alter table ticket_groups add column if not exists last_alert_count int not null default 0;
    alter table ticket_groups add column if not exists truncated_alerts int not null default 0;
    alter table ticket_groups add column if not exists max_truncated_alerts int not null default 0;
    -- a resolved notification that came before the firing one of the same episode: the late
    -- firing finds it here and opens nothing
    create table if not exists ticket_resolved_episodes (
        fingerprint text not null,
        starts_at timestamptz not null,
        ends_at timestamptz,
        recorded_at timestamptz not null default now(),
        primary key (fingerprint, starts_at)
    );
    create index if not exists ticket_resolved_episodes_recorded on ticket_resolved_episodes (recorded_at);
    """),
    (4, """
    -- the outbox claim looks for an older pending row of the same ticket and channel
    create index if not exists ticket_notifications_key on ticket_notifications (ticket_id, channel, id)
        where status = 'pending';
    """),
    (5, """
    -- incidents: a ticket is one incident, keyed by incident_key (receiver.incident_by: the
    -- Alertmanager groupKey, or the alert fingerprint); its alerts and their firing episodes are
    -- the ticket_alerts rows. Tickets from before were one per fingerprint: their key is it.
    alter table tickets add column if not exists incident_key text;
    update tickets set incident_key = fingerprint where incident_key is null;
    alter table tickets alter column incident_key set not null;
    -- distinct alerts (fingerprints) of the incident, and its episodes still firing
    alter table tickets add column if not exists alert_count int not null default 1;
    alter table tickets add column if not exists firing_count int not null default 0;
    update tickets t set alert_count = greatest(c.n, 1), firing_count = c.f
        from (select ticket_id, count(distinct fingerprint) n, count(*) filter (where status = 'firing') f
              from ticket_alerts group by 1) c where t.id = c.ticket_id;
    -- at most one unresolved ticket per incident (was: per alert fingerprint)
    drop index if exists tickets_one_active;
    create unique index if not exists tickets_one_active_incident on tickets (incident_key)
        where status <> 'resolved';
    create index if not exists tickets_incident on tickets (incident_key, resolved_at);
    create index if not exists ticket_alerts_ticket_status on ticket_alerts (ticket_id, status);
    """),
    (6, """
    -- the payload processor claims the oldest pending payloads (order by id): without this index
    -- the claim walks the primary key through every payload already applied (raw_retention's worth)
    create index if not exists ticket_payloads_pending_id on ticket_payloads (id) where processed_at is null;
    """),
    (7, """
    -- /metrics counts the payloads that failed to apply on every scrape: without this index that
    -- count reads every payload kept (raw_retention's worth: hundreds of thousands after a storm)
    create index if not exists ticket_payloads_failed on ticket_payloads (id) where error is not null;
    -- the uptime KPI (kpis._DOWNTIME, on every scrape) reads the episodes of the down alerts
    -- (ServiceDown) only: without this index it read every episode of every alert (197 ms a scrape
    -- after one storm bench, growing with history), in the web worker beside the intake
    create index if not exists ticket_alerts_alertname on ticket_alerts ((labels->>'alertname'), starts_at);
    """),
    (8, """
    -- MTTA and "closed by automation" (kpis._RESPONSE, _PERSON_ACTED, on every scrape) look for a
    -- person's first event in each ticket's episode: through (ticket_id, at) that walked every
    -- event of the ticket since the episode began (an incident of a flapping group gains one per
    -- alert that joins it: 100 ms a scrape after one storm bench); a person's events are few.
    -- The predicate is kpis.PERSON_KINDS and SYSTEM_ACTORS as they were written then (a test
    -- checks they still match)
    create index if not exists ticket_events_person on ticket_events (ticket_id, at)
        where kind in ('acknowledged', 'resolved', 'reassigned', 'comment')
          and actor not in ('alertmanager', 'remediation');
    """),
    (9, """
    -- the local spool (webhook_receiver/spool.py): how far each segment file was loaded into
    -- ticket_payloads, moved in the same transaction as the rows (nothing loaded twice)
    create table if not exists ticket_spool_segments (
        name text primary key,
        loaded_to bigint not null,
        updated_at timestamptz not null default now()
    );
    -- an alert's firing episodes (tickets._SUPERSEDE on every notification): a flapping alert
    -- gathers a resolved episode per re-fire, and finding the firing ones read them all
    create index if not exists ticket_alerts_firing on ticket_alerts (fingerprint, starts_at) where status = 'firing';
    """),
]


def migrate(conn: psycopg.Connection) -> int:
    """Apply pending migrations; returns the schema version. Safe to run concurrently."""
    version = apply(conn, MIGRATIONS, "ticket_schema_versions", MIGRATE_LOCK, "receiver")
    console_store.migrate(conn)  # the console's sessions, secrets, login throttle
    return version


def connect(url: str, timeout: float = 5.0, autocommit: bool = False) -> psycopg.Connection:
    """The receiver's one direct connection (dict rows), outside the pool: migrations, LISTEN,
    the automation parts and the CLI."""
    return pg.connect(url, timeout, row_factory=dict_row, autocommit=autocommit)


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def lower_backend_priority(conn: psycopg.Connection, nice: int) -> bool:
    """Best effort: raise the nice of the PostgreSQL backend process serving ``conn`` by ``nice``,
    so that its work (the background process's: applying payloads, the scheduler) yields the CPU
    to the backends serving the webhook's intake. Only for a server on this host (loopback or a
    Unix socket) and only when the process at the backend's pid is that very backend: a postgres
    process whose title names this connection's client port. Allowed when the receiver runs as
    the server's user (the embedded cluster) or as root; otherwise (another user, a server
    elsewhere) nothing happens. Returns whether it was done."""
    if nice <= 0:
        return False
    host = conn.info.host or ""
    pid = conn.info.backend_pid
    if not pid or not (host.startswith("/") or host in _LOOPBACK):
        return False
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if not title.startswith("postgres"):
            return False
        if host.startswith("/"):  # a Unix socket: the title says so
            if "[local]" not in title:
                return False
        else:  # TCP: the title carries the client's address and port
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            try:
                port = sock.getsockname()[1]
            finally:
                sock.close()
            if f"({port})" not in title:
                return False
        now = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, min(19, now + nice))
        return True
    except OSError:  # not ours to change (another user), gone, or no /proc
        return False


class Database:
    """A lazily opened pool per process (gunicorn workers fork before opening it).

    ``backend_nice``: > 0 in the background process (receiver.background_nice): each pooled
    connection's backend gets a lower CPU priority (lower_backend_priority)."""

    def __init__(self, url: str, size: int = 4, timeout: float = 5.0, backend_nice: int = 0):
        self.url = url
        self.size = size
        self.timeout = timeout
        self.backend_nice = backend_nice
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self.migrated = False

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute("set statement_timeout = %s" % int(self.timeout * 1000))
        if self.backend_nice:
            lower_backend_priority(conn, self.backend_nice)

    @property
    def pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=self.size, open=True, timeout=self.timeout,
                    kwargs={"row_factory": dict_row, "autocommit": True,
                            "connect_timeout": max(1, int(self.timeout))},
                    configure=self._configure, name="receiver")
            return self._pool

    def connection(self):
        """Context manager yielding a pooled connection (autocommit; use conn.transaction())."""
        return self.pool.connection(timeout=self.timeout)

    def run(self, fn):
        """``fn(conn)`` on a pooled connection; once more on a fresh one when the first was broken
        (e.g. the server restarted since it was pooled: the pool drops broken connections)."""
        try:
            with self.connection() as conn:
                return fn(conn)
        except psycopg.OperationalError:
            with self.connection() as conn:
                return fn(conn)

    def ensure_migrated(self) -> None:
        if self.migrated:
            return
        with connect(self.url, self.timeout) as conn:
            migrate(conn)
        self.migrated = True

    def ping(self) -> bool:
        try:
            self.run(lambda conn: conn.execute("select 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
