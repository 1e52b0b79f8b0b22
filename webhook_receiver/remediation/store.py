"""PostgreSQL tables of the automation parts, migrations in code.

remediation_runs      one row per (playbook, target, alert episode): the idempotency key
                      that makes two receiver replicas (or two deliveries) run a playbook once
remediation_attempts  one audit row per action: what ran, output, duration, verified outcome
remediation_settings  run-time switches shared by every replica (the kill switch)
ticket_attachments    enrichment (graph PNG, current values, related alerts, log excerpt)
ticket_itsm_links     ticket -> JIRA issue / ServiceNow incident
ticket_itsm_outbox    changes waiting to be forwarded (retried with backoff, failures kept)
automation_jobs       enrichment / remediation / restore work queued durably (jobs.py)
automation_rate       start times of rate-limited jobs (enrichment.max_per_minute, jobs.py)

Applied after the receiver's own migrations (the tables reference ``tickets``), under an
advisory lock, each step recorded in ``remediation_schema_versions``.
"""
from __future__ import annotations

import json
import logging

import psycopg

from core import outbox
from core.migrations import apply
from webhook_receiver import db as receiver_db
from webhook_receiver.db import connect  # noqa: F401 - the receiver's one connect, also as store.connect

log = logging.getLogger(__name__)

MIGRATE_LOCK = 7_215_061
# pg_try_advisory_lock(RUN_LOCK_CLASS, hashtext(playbook || '|' || target))
RUN_LOCK_CLASS = 7_215_062

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
    create table if not exists remediation_runs (
        id bigserial primary key,
        ticket_id bigint references tickets (id) on delete set null,
        playbook text not null,
        target text not null,
        alertname text not null default '',
        fingerprint text not null,
        alert_starts_at timestamptz not null,
        labels jsonb not null default '{}',
        status text not null default 'pending'
            check (status in ('pending', 'running', 'recovered', 'exhausted', 'skipped', 'dry_run', 'failed')),
        reason text not null default '',
        dry_run boolean not null default false,
        escalated boolean not null default false,
        created_at timestamptz not null default now(),
        started_at timestamptz,
        finished_at timestamptz,
        restored_at timestamptz,
        replica text not null default '',
        unique (playbook, target, fingerprint, alert_starts_at)
    );
    create index if not exists remediation_runs_target on remediation_runs (playbook, target, created_at);
    create index if not exists remediation_runs_ticket on remediation_runs (ticket_id);

    create table if not exists remediation_attempts (
        id bigserial primary key,
        run_id bigint not null references remediation_runs (id) on delete cascade,
        playbook text not null,
        target text not null,
        phase text not null default 'ladder' check (phase in ('ladder', 'on_resolved')),
        step int not null,
        action text not null,
        backend text not null,
        operation text not null,
        command jsonb not null default '{}',
        dry_run boolean not null default false,
        status text not null default 'running'
            check (status in ('running', 'ok', 'failed', 'timeout', 'dry_run')),
        output text not null default '',
        started_at timestamptz not null default now(),
        finished_at timestamptz,
        duration_seconds double precision,
        verify_expr text,
        verified boolean,
        verify_detail text not null default '',
        verified_at timestamptz
    );
    create index if not exists remediation_attempts_target on remediation_attempts (playbook, target, started_at);
    create index if not exists remediation_attempts_run on remediation_attempts (run_id, step);

    create table if not exists remediation_settings (
        key text primary key,
        value jsonb not null,
        updated_at timestamptz not null default now(),
        updated_by text not null default ''
    );

    create table if not exists ticket_attachments (
        id bigserial primary key,
        ticket_id bigint not null references tickets (id) on delete cascade,
        kind text not null check (kind in ('graph', 'values', 'related', 'logs', 'error')),
        name text not null,
        content_type text not null,
        body bytea not null,
        meta jsonb not null default '{}',
        created_at timestamptz not null default now(),
        unique (ticket_id, name)
    );

    create table if not exists ticket_itsm_links (
        ticket_id bigint not null references tickets (id) on delete cascade,
        system text not null check (system in ('jira', 'servicenow')),
        external_id text not null,
        external_key text not null,
        url text not null default '',
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        primary key (ticket_id, system)
    );

    """ + outbox.table_ddl("ticket_itsm_outbox", """
        ticket_id bigint not null references tickets (id) on delete cascade,
        system text not null check (system in ('jira', 'servicenow')),
        op text not null check (op in ('create', 'comment', 'resolve', 'reopen')),
        dedup_key text not null unique,
        payload jsonb not null default '{}'""") + """
    create index if not exists ticket_itsm_outbox_ticket on ticket_itsm_outbox (ticket_id, system, id);
    """),
    # 'refused': the playbook would not act on a target it could not resolve from the alert's
    # labels (an unknown service or region, a value with '/', '..' or shell characters)
    (2, """
    alter table remediation_runs drop constraint if exists remediation_runs_status_check;
    alter table remediation_runs add constraint remediation_runs_status_check
        check (status in ('pending', 'running', 'recovered', 'exhausted', 'skipped', 'dry_run', 'failed',
                          'refused'));
    """),
    (3, """
    -- enrichment and remediation work, durable (webhook_receiver/jobs.py on the shared outbox):
    -- queued when a ticket opens/reopens/resolves, run by any receiver process, retried with backoff
    """ + outbox.table_ddl("automation_jobs", """
        ticket_id bigint not null references tickets (id) on delete cascade,
        kind text not null check (kind in ('enrichment', 'remediation', 'restore')),
        lane text not null,
        dedup_key text not null unique,
        payload jsonb not null default '{}'""") + """
    create index if not exists automation_jobs_key on automation_jobs (ticket_id, lane, id);
    create index if not exists remediation_runs_unfinished on remediation_runs (created_at)
        where status in ('pending', 'running');
    """),
    (4, """
    -- start times of rate-limited jobs (enrichment.max_per_minute), a sliding log shared by every
    -- replica (jobs.take_slot); rows older than the window are deleted as slots are taken
    create table if not exists automation_rate (
        id bigserial primary key,
        lane text not null,
        started_at timestamptz not null default clock_timestamp()
    );
    create index if not exists automation_rate_lane on automation_rate (lane, started_at);
    -- a lane's claim (outbox, ordered by id) must not scan the other lane's backlog (a storm's
    -- enrichment jobs waiting for their rate limit)
    create index if not exists automation_jobs_pending_lane on automation_jobs (lane, id) where status = 'pending';
    """),
    (5, """
    -- a playbook with a schedule (a leak's restart in the next low-traffic window before the
    -- predicted OOM, remediation/schedule.py): the run waits as 'scheduled' until scheduled_for,
    -- a 'scheduled' job (its own lane: it never holds up the ticket's other jobs) runs it then;
    -- 'cancelled' when the alert resolved first
    alter table remediation_runs drop constraint if exists remediation_runs_status_check;
    alter table remediation_runs add constraint remediation_runs_status_check
        check (status in ('pending', 'running', 'recovered', 'exhausted', 'skipped', 'dry_run', 'failed',
                          'refused', 'scheduled', 'cancelled'));
    alter table remediation_runs add column if not exists scheduled_for timestamptz;
    alter table remediation_runs add column if not exists deadline_at timestamptz;
    alter table automation_jobs drop constraint if exists automation_jobs_kind_check;
    alter table automation_jobs add constraint automation_jobs_kind_check
        check (kind in ('enrichment', 'remediation', 'restore', 'scheduled'));
    """),
]


def migrate(conn: psycopg.Connection) -> int:
    """Apply the receiver's migrations, then ours. Safe to run concurrently and twice."""
    receiver_db.migrate(conn)
    return apply(conn, MIGRATIONS, "remediation_schema_versions", MIGRATE_LOCK, "automation")


def migrate_url(url: str) -> int:
    with connect(url) as conn:
        return migrate(conn)




# ----------------------------------------------------------------- settings (kill switch)
def set_setting(conn, key: str, value, actor: str) -> None:
    conn.execute("""insert into remediation_settings (key, value, updated_at, updated_by)
                    values (%s, %s, now(), %s)
                    on conflict (key) do update set value = excluded.value, updated_at = now(),
                                                    updated_by = excluded.updated_by""",
                 (key, json.dumps(value), actor))


def kill_switch(conn) -> dict:
    row = conn.execute("select value, updated_at, updated_by from remediation_settings where key = 'kill_switch'"
                       ).fetchone()
    if row is None:
        return {"enabled": False, "updated_at": None, "updated_by": None}
    return {"enabled": bool(row["value"]), "updated_at": row["updated_at"], "updated_by": row["updated_by"]}


# ----------------------------------------------------------------- reading the audit rows
def ticket_runs(conn, ticket_id: int, limit: int = 20) -> list[dict]:
    """The remediation runs of a ticket, newest first, each with ``attempts`` (its
    remediation_attempts rows in order: ladder steps, then on_resolved). Rows as stored
    (datetimes stay datetimes); ``conn`` must return dict rows."""
    runs = conn.execute("select * from remediation_runs where ticket_id = %s order by id desc limit %s",
                        (ticket_id, limit)).fetchall()
    by_run: dict[int, list] = {r["id"]: [] for r in runs}
    if by_run:
        for a in conn.execute("""select * from remediation_attempts where run_id = any(%s)
                                 order by run_id, phase, step, id""", (list(by_run),)).fetchall():
            by_run[a["run_id"]].append(a)
    return [{**r, "attempts": by_run[r["id"]]} for r in runs]
