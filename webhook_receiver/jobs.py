"""Durable automation jobs: enrichment, remediation and restore work in PostgreSQL.

A ticket change (opened, reopened, alerts attached, resolved) queues a row in ``automation_jobs``
inside its own transaction (Automation.stage_jobs, a hooks stager: the job is committed with the
change or not at all; one per ticket,
kind and episode: the dedup key ``<kind>:<ticket>:<reopened_count>``); any receiver process
runs it through the shared outbox (core/outbox.py): taken with FOR UPDATE SKIP
LOCKED, in order per ticket and lane (a restore waits for the remediation of its ticket),
retried with exponential backoff after any error (a database outage included), then
``failed`` for good and shown on the ticket. A process that dies while running a job drops
its row lock with its connection, so the job is taken again by the next process.

The scheduler's sweep still queues the jobs of recently opened tickets that have none (jobs
deleted by hand, tickets written by older versions; same dedup key: it never doubles one).
``orphans`` marks remediation runs failed whose replica died mid-run.

Enrichment is rate-limited across every process and replica (``enrichment.max_per_minute``):
before an enrichment job is taken, a slot is taken in ``automation_rate`` (a sliding log of
start times, under an advisory lock); with every slot of the last 60 s used, the jobs simply
stay pending (no attempt counted, nothing dropped) and the scheduler's next pass tries again;
a waiting job whose ticket resolved meanwhile is marked done without enriching (``skip_resolved``),
so the slots go to incidents still going on.
Ticket creation and notifications never wait for it: hooks only queue the job, and the
pools that run jobs are apart from the request and payload threads.
"""
from __future__ import annotations

import logging
from datetime import datetime

from psycopg.types.json import Jsonb

from core import outbox
from webhook_receiver.remediation import store
from webhook_receiver.ticket_store import add_event

log = logging.getLogger(__name__)

LANES = {"enrichment": "enrichment", "remediation": "remediation", "restore": "remediation",
         # a scheduled run's delayed job (remediation/runner.py run_scheduled): a lane of its own, so
         # a job due hours from now never holds up the ticket's remediation and restore jobs
         "scheduled": "scheduled"}
SWEEP_WINDOW = 6 * 3600  # seconds: tickets opened this recently get their missing jobs
RATE_LOCK_CLASS = 7_215_063  # pg_advisory_xact_lock(RATE_LOCK_CLASS, hashtext(lane)) while taking a slot
RATE_WINDOW = 60.0  # seconds: max_per_minute counts the starts in this sliding window


def queue(rem, lane: str | None = None) -> outbox.Queue:
    """``rem``: the typed remediation view (core.config.view(cfg, "remediation"))."""
    j = rem.jobs
    where = {"enrichment": "o.lane = 'enrichment'", "remediation": "o.lane = 'remediation'",
             "scheduled": "o.lane = 'scheduled'", None: ""}[lane]
    return outbox.Queue(name="jobs", table="automation_jobs", key=("ticket_id", "lane"),
                        info=("ticket_id", "kind"), done_status="done", done_at="done_at",
                        max_attempts=j.max_attempts, initial_backoff=j.initial_backoff,
                        max_backoff=j.max_backoff, where=where)


def wanted(enr, rem, playbooks: list, prometheus_url: str | None, loki_url: str | None = None) -> set[str]:
    """Kinds of job this configuration runs (pure): ``enr``/``rem`` the typed enrichment and
    remediation views, ``prometheus_url`` the Prometheus enrichment queries (None: none),
    ``loki_url`` the Loki of the log excerpt (None: none; source auto without a stack Loki)."""
    out = set()
    logs = enr.logs.source == "file" or (enr.logs.source in ("loki", "auto") and loki_url)
    if enr.enabled and (prometheus_url or logs):
        out.add("enrichment")
    if rem.enabled and playbooks:
        out.add("remediation")
        # restore also cancels scheduled runs whose ticket resolved (runner.cancel_scheduled)
        if any(p.on_resolved or getattr(p, "schedule", None) for p in playbooks):
            out.add("restore")
    return out


def enqueue(conn, ticket_id: int, kind: str, payload: dict | None = None, extra: str | None = None,
            unless_pending: bool = False) -> int | None:
    """Queue a job for the ticket's current episode; None when it is already queued. ``extra``:
    one more job of that episode (e.g. remediation for alerts that joined the incident later:
    the id of their alert_attached event), its own dedup key. ``unless_pending``: None too when
    a job of that kind of the ticket waits to run (pending and not being run: a running job's
    row is locked, skipped here, so alerts it may have read too early get a job of their own)."""
    row = conn.execute(
        """insert into automation_jobs (ticket_id, kind, lane, dedup_key, payload)
           select id, %s, %s, %s || ':' || id || ':' || reopened_count || coalesce(':' || %s::text, ''), %s
           from tickets t where id = %s
             and not (%s and exists (select 1 from automation_jobs j where j.ticket_id = t.id and j.kind = %s
                                     and j.status = 'pending' for update skip locked))
           on conflict (dedup_key) do nothing returning id""",
        (kind, LANES[kind], kind, extra, Jsonb(payload or {}), ticket_id, unless_pending, kind)).fetchone()
    return row["id"] if row else None


_ENQUEUE_MANY = """
    insert into automation_jobs (ticket_id, kind, lane, dedup_key, payload, status, done_at)
    select t.id, u.kind, u.lane, u.kind || ':' || t.id || ':' || t.reopened_count || coalesce(':' || u.extra, ''),
           case when s.why is null then '{{}}'::jsonb else jsonb_build_object('skipped', s.why) end,
           case when s.why is null then 'pending' else 'done' end,
           case when s.why is null then null else now() end
    from unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bool[], %s::text[]) with ordinality
         u(ticket_id, kind, lane, extra, unless_pending, skipped, ord)
    join tickets t on t.id = u.ticket_id
    cross join lateral (select {why} why) s
    where not (u.unless_pending and exists (select 1 from automation_jobs j where j.ticket_id = t.id
                                            and j.kind = u.kind and j.status = 'pending' for update skip locked))
    order by u.ord
    on conflict (dedup_key) do nothing returning id, ticket_id, kind, lane, status"""

# why a restore is recorded skipped: an incident whose remediation never ran nor waits to (only in a
# batch with a restore: opening tickets never reads remediation_runs)
_RESTORE_WHY = """coalesce(u.skipped, case
    when u.kind = 'restore'
     and not exists (select 1 from remediation_runs r where r.ticket_id = t.id)
     and not exists (select 1 from automation_jobs j where j.ticket_id = t.id and j.kind in ('remediation', 'scheduled')
                     and not (j.status = 'done' and j.payload ? 'skipped'))
    then %s end)"""
NO_PLAYBOOK = "no playbook matches the incident's alerts"
NOTHING_TO_RESTORE = "the incident's remediation never ran: nothing to restore"


def enqueue_many(conn, items: list[tuple[int, str, str | None, bool, str | None]]) -> list[dict]:
    """``enqueue`` for many jobs in ONE statement (inside the ticket transaction that wants them:
    Automation.stage_jobs): ``items`` are (ticket_id, kind, extra, unless_pending, skipped);
    returns the rows inserted (id, ticket_id, kind, lane, status). Same dedup keys as ``enqueue``.
    A job with a ``skipped`` reason, and a restore of an incident whose remediation never ran and
    none waits, is written ``done`` with ``payload.skipped`` saying why: no worker takes it, and its
    dedup key keeps the sweep from queueing it again."""
    if not items:
        return []
    tids, kinds, extras, unless, skipped = zip(*items)
    args = [list(tids), list(kinds), [LANES[k] for k in kinds], list(extras), list(unless), list(skipped)]
    if "restore" in kinds:
        return conn.execute(_ENQUEUE_MANY.format(why=_RESTORE_WHY), (*args, NOTHING_TO_RESTORE)).fetchall()
    return conn.execute(_ENQUEUE_MANY.format(why="u.skipped"), args).fetchall()


def sweep(conn, kinds: set[str]) -> int:
    """Queue the enrichment/remediation jobs that recently opened tickets lack (a receiver that
    died between the ticket's commit and its hook); returns how many were queued."""
    n = 0
    for kind, done in (("enrichment", "select 1 from ticket_attachments a where a.ticket_id = t.id"),
                       ("remediation", "select 1 from remediation_runs r where r.ticket_id = t.id")):
        if kind not in kinds:
            continue
        n += conn.execute(
            f"""insert into automation_jobs (ticket_id, kind, lane, dedup_key)
                select t.id, %s, %s, %s || ':' || t.id || ':' || t.reopened_count from tickets t
                where t.status <> 'resolved'
                  and coalesce(t.last_reopened_at, t.opened_at) > now() - make_interval(secs => %s)
                  and not exists ({done})
                on conflict (dedup_key) do nothing""", (kind, LANES[kind], kind, SWEEP_WINDOW)).rowcount
    if n:
        log.info("event=automation_jobs_swept queued=%s", n)
    return n


def skip_resolved(conn) -> int:
    """Pending enrichment jobs whose ticket has resolved since are done without enriching (marked
    in their payload): in a storm the rate limit would otherwise spend the minute's slots on
    incidents that are over while live ones wait. Returns how many."""
    # skip locked: a job being run right now (its row locked until it ends) is not waited for
    n = conn.execute("""update automation_jobs set status = 'done', done_at = now(),
                               payload = payload || '{"skipped": "ticket resolved before its enrichment ran"}'
                        where id in (select j.id from automation_jobs j join tickets t on t.id = j.ticket_id
                                     where j.lane = 'enrichment' and j.status = 'pending' and t.status = 'resolved'
                                     for update of j skip locked)""").rowcount
    if n:
        log.info("event=enrichment_skipped_resolved jobs=%s", n)
    return n


def take_slot(conn, lane: str, per_window: int, window: float = RATE_WINDOW) -> int | None:
    """A start slot for one job of ``lane`` when fewer than ``per_window`` started in the last
    ``window`` seconds (every process and replica counted); None when the lane is at its limit.
    ``conn``: autocommit, no transaction open (the slot must be visible to others at once)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s, hashtext(%s))", (RATE_LOCK_CLASS, lane))
        conn.execute("delete from automation_rate where lane = %s "
                     "and started_at < clock_timestamp() - make_interval(secs => %s)", (lane, window))
        used = conn.execute("select count(*) n from automation_rate where lane = %s", (lane,)).fetchone()["n"]
        if used >= per_window:
            return None
        return conn.execute("insert into automation_rate (lane) values (%s) returning id", (lane,)).fetchone()["id"]


def release_slot(conn, slot: int) -> None:
    """Give back a slot that no job used."""
    conn.execute("delete from automation_rate where id = %s", (slot,))


def run_due(conn, rem, enrich, runner_of, lane: str | None = None, now: datetime | None = None,
            batch: int = 20, enrich_per_minute: int = 0) -> int:
    """Run due jobs (of one lane, or all): ``rem`` the typed remediation view, ``enrich(ticket_id)``
    enriches a ticket, ``runner_of()`` gives the remediation Runner. ``enrich_per_minute`` > 0:
    at most that many enrichment jobs start in any 60 s (``enrichment.max_per_minute``); the
    others stay pending for a later pass."""
    if enrich_per_minute > 0 and lane is None:
        return (run_due(conn, rem, enrich, runner_of, "remediation", now, batch)
                + run_due(conn, rem, enrich, runner_of, "enrichment", now, batch, enrich_per_minute))
    if enrich_per_minute > 0 and lane == "enrichment":
        handled = skip_resolved(conn)
        while handled < batch:
            slot = take_slot(conn, lane, enrich_per_minute)
            if slot is None:
                log.debug("event=enrichment_rate_limited per_minute=%s", enrich_per_minute)
                break
            n = run_due(conn, rem, enrich, runner_of, lane, now, 1)
            if n == 0:
                release_slot(conn, slot)
                break
            handled += n
        return handled

    def deliver(conn, job: dict) -> None:
        if job["kind"] == "enrichment":
            enrich(job["ticket_id"])
        elif job["kind"] == "remediation":
            runner_of().handle_ticket(job["ticket_id"])
        elif job["kind"] == "restore":
            runner_of().restore(job["ticket_id"])
        elif job["kind"] == "scheduled":
            runner_of().run_scheduled(job["ticket_id"], job["payload"] or {})
        else:
            raise outbox.Permanent(f"unknown job kind {job['kind']!r}")

    def on_failed(conn, job: dict, error: str, attempts: int, final: bool) -> None:
        log.warning("event=automation_job_failed id=%s kind=%s ticket_id=%s attempt=%s final=%s error=%r",
                    job["id"], job["kind"], job["ticket_id"], attempts, final, error[:300])
        if final:
            add_event(conn, job["ticket_id"], "automation_failed", "automation",
                      {"job": job["kind"], "attempts": attempts, "error": error[:500]})

    return outbox.run_due(conn, queue(rem, lane), deliver, now=now, batch=batch, on_failed=on_failed)


def orphans(conn, rem, escalate=None) -> list[dict]:
    """Remediation runs left pending/running by a replica that died: no session holds their run
    lock (a live run holds it from before 'running' until it finishes) and they are older than
    ``remediation.orphan_after``. Each is marked failed, the ticket says why, and (with
    escalate_on_failure) the ticket goes to people: nobody knows what the dead run did.
    ``rem``: the typed remediation view."""
    r = rem
    with conn.transaction():
        rows = conn.execute(
            """select r.id, r.ticket_id, r.playbook, r.target, r.status, r.replica from remediation_runs r
               where r.status in ('pending', 'running')
                 and coalesce(r.started_at, r.created_at) < now() - make_interval(secs => %s)
                 and not exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.granted
                                 and l.classid::bigint = %s and l.objsubid = 2
                                 and l.objid::bigint = (hashtext(r.playbook || '|' || r.target)::bigint
                                                        + 4294967296) %% 4294967296)
               for update of r skip locked""", (r.orphan_after, store.RUN_LOCK_CLASS)).fetchall()
        for run in rows:
            reason = (f"the replica running it ({run['replica'] or 'unknown'}) stopped while the run was "
                      f"{run['status']}: what it did is unknown, check {run['target']} by hand")
            conn.execute("update remediation_runs set status = 'failed', reason = %s, finished_at = now() "
                         "where id = %s", (reason, run["id"]))
            log.warning("event=remediation_run_orphaned run_id=%s playbook=%s target=%s replica=%s",
                        run["id"], run["playbook"], run["target"], run["replica"])
            if run["ticket_id"] is not None:
                add_event(conn, run["ticket_id"], "remediation", "remediation",
                          {"playbook": run["playbook"], "target": run["target"], "status": "failed",
                           "output": reason})
    out = [dict(x) for x in rows]
    if escalate is not None and r.escalate_on_failure:
        for run in out:
            if run["ticket_id"] is None:
                continue
            try:
                escalate(run["ticket_id"], f"automatic remediation {run['playbook']} on {run['target']} "
                                           f"did not finish: its receiver stopped mid-run.")
            except Exception:  # noqa: BLE001 - the run is marked; the escalation timers still run
                log.exception("event=remediation_orphan_escalate_failed run_id=%s", run["id"])
    return out


def status(conn, ticket_id: int) -> list[dict]:
    rows = conn.execute("""select id, kind, status, attempts, last_error, next_attempt_at, created_at, done_at
                           from automation_jobs where ticket_id = %s order by id""", (ticket_id,)).fetchall()
    return [dict(r) for r in rows]
