"""The background loop of each receiver process: a list of jobs, each with one interface
(``name``, ``run_due(conn, now)``), run in turn by the one Scheduler with errors isolated per
job (a job that raises is logged and the others still run), as GoAlert's engine runs its
updaters. The jobs: queued payloads, escalation timers, heartbeat checks, the notification
outbox, raw-payload retention, reconciliation with Alertmanager (reconcile.py) and, with
automation, ITSM forwarding, the durable automation
jobs (enrichment/remediation/restore: sweep + run) and orphaned remediation runs.

Every step takes its rows with FOR UPDATE SKIP LOCKED, so any number of workers and replicas
can run this loop against one database; state lives only in PostgreSQL, so a restart picks up
where the last process stopped.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Callable

import psycopg

from core.clock import utcnow
from core.logs import first_line
from webhook_receiver import escalation, heartbeat, itsm, notify, reconcile, spool, tickets
from webhook_receiver import jobs as durable_jobs
from webhook_receiver.db import connect
from webhook_receiver.tickets import PAYLOAD_CHANNEL

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
PRUNE_LOCK = 7_215_003


class Job:
    """One kind of background work: ``run_due(conn, now)`` does what is due and returns a summary
    (usually how many rows it handled). ``every``: at most once per this many seconds."""

    def __init__(self, name: str, fn: Callable[[object, datetime | None], object], every: float = 0.0):
        self.name = name
        self.fn = fn
        self.every = every

    def run_due(self, conn, now: datetime | None):
        return self.fn(conn, now)


PASS = 1000  # payloads one apply_pending pass takes at most (then the loop looks at its other jobs)


def apply_pending(st, conn, limit: int = PASS) -> int:
    """Apply queued payloads on ``conn`` until none is left (or limit), a batch per transaction
    (tickets.process_batch: per-group arrival order kept); returns how many.

    The batch size adapts (per app, ``st.batch_size``): a batch cancelled by the statement timeout
    (a machine too busy for statements that large) is retried at half the size, and each batch
    that goes through lets the size grow back by a quarter, up to tickets.PROCESS_BATCH."""
    n = 0
    failed: set[int] = set()  # a payload that failed waits for the next pass
    cancelled = 0
    while n < limit:
        size = getattr(st, "batch_size", tickets.PROCESS_BATCH)
        try:
            got = len(tickets.process_batch(st.ctx, conn, limit=min(size, limit - n), skip=failed))
        except psycopg.errors.QueryCanceled:
            cancelled += 1
            st.batch_size = max(1, size // 2)
            log.warning("event=payload_batch_cancelled size=%s next_size=%s", size, st.batch_size)
            if cancelled > 5:
                raise
            continue
        if not got:
            break
        st.batch_size = min(tickets.PROCESS_BATCH, size + max(1, size // 4))
        n += got
    return n


def process_pending(st, limit: int = PASS) -> int:
    """apply_pending on a pooled connection of its own (the processor threads, tests); spooled
    notifications are loaded first when no loader thread of this process does it."""
    spool.load_pending(st)
    with st.db.connection() as conn:
        return apply_pending(st, conn, limit)


def _heartbeats(st, conn, now):
    if getattr(st, "watching_since", None) is None:
        st.watching_since = utcnow()   # the first pass of this process
    return heartbeat.check(st.ctx, conn, now or utcnow(), st.receiver.heartbeat_timeout,
                           st.watching_since)


def _prune(st, conn, now) -> int:
    keep = timedelta(seconds=st.receiver.raw_retention)
    with conn.transaction():
        got = conn.execute("select pg_try_advisory_xact_lock(%s) ok", (PRUNE_LOCK,)).fetchone()["ok"]
        if not got:
            return 0
        n = conn.execute("delete from ticket_payloads where received_at < now() - %s", (keep,)).rowcount
    if n:
        log.info("event=payloads_pruned rows=%s", n)
    return n


def automation_jobs(auto) -> list[Job]:
    """The background jobs of the automation parts (ITSM, enrichment/remediation jobs, orphans)."""
    out: list[Job] = []
    if itsm.systems(auto.itsm):
        out.append(Job("itsm", lambda conn, now: auto.forwarder.run_due(conn, now=now)))
    kinds = auto.job_kinds()

    def run_jobs(conn, now):
        auto.ensure_migrated()
        swept = durable_jobs.sweep(conn, kinds) if kinds else 0
        due = conn.execute("select lane, count(*) n from automation_jobs where status = 'pending' "
                           "and next_attempt_at <= %s group by 1", (now or utcnow(),)).fetchall()
        for r in due:
            auto.kick(r["lane"], now)  # the lane's pool runs them (long jobs never hold this loop)
        return {"swept": swept, "due": sum(r["n"] for r in due)}
    out.append(Job("automation_jobs", run_jobs))
    if auto.remediation.enabled:
        out.append(Job("remediation_orphans", lambda conn, now: len(durable_jobs.orphans(
            conn, auto.remediation, escalate=lambda tid, reason: auto.runner._escalate(tid, reason)))))
    return out


def default_jobs(st) -> list[Job]:
    batch = st.receiver.scheduler.batch
    out = [
        # (not where a Processor runs: it applies them, and wakes every interval too; two appliers
        # in one process would only queue behind each other's ingest locks)
        *([] if getattr(st, "processor", None) is not None else [
            Job("payloads", lambda conn, now: apply_pending(st, conn))]),
        Job("escalated", lambda conn, now: escalation.run_due(st.ctx, conn, now=now, batch=batch)),
        Job("heartbeat_alarms", lambda conn, now: _heartbeats(st, conn, now)),
        Job("notifications", lambda conn, now: notify.run_outbox(st.ctx, conn, now=now, batch=batch)),
        Job("prune", lambda conn, now: _prune(st, conn, now), every=PRUNE_EVERY),
    ]
    rec = st.receiver.reconcile
    if reconcile.urls(rec):  # at the first pass, then every interval (lost resolved notifications)
        out.append(Job("reconcile", lambda conn, now: reconcile.run(st.ctx, conn, rec, now), every=rec.interval))
    auto = getattr(st, "automation", None)
    if auto is not None:
        out.extend(automation_jobs(auto))
    return out


def run_jobs(st, jobs: list, now: datetime | None = None) -> dict:
    """One pass over ``jobs``, each on a pooled connection of its own; a job that raises is
    logged (and named in ``errors``) and the others still run."""
    out: dict = {}
    last = st.__dict__.setdefault("job_last_run", {})
    for job in jobs:
        every = getattr(job, "every", 0.0)
        if every and time.monotonic() - last.get(job.name, -1e18) < every:
            continue
        last[job.name] = time.monotonic()
        try:
            with st.db.connection() as conn:
                out[job.name] = job.run_due(conn, now)
        except Exception as exc:  # noqa: BLE001 - one job's failure never stops the others
            out[job.name] = None
            out.setdefault("errors", {})[job.name] = first_line(exc)
            log.warning("event=scheduler_job_error job=%s error=%r", job.name, out["errors"][job.name])
    return out


def tick(st, now=None) -> dict:
    """One pass of every job (also what tests call instead of waiting for the thread)."""
    return run_jobs(st, default_jobs(st), now)


def prune(st) -> int:
    with st.db.connection() as conn:
        return _prune(st, conn, None)


def _run_jobs_here(st) -> None:
    auto = getattr(st, "automation", None)
    if auto is not None:
        auto.run_jobs = True  # this process does background work: it runs automation jobs too


class Scheduler:
    def __init__(self, st, jobs: list | None = None):
        self.st = st
        self.interval = st.receiver.scheduler.interval
        self.jobs = jobs  # None: default_jobs(st) on every pass
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        _run_jobs_here(self.st)
        self._thread = threading.Thread(target=self._run, name="receiver-scheduler", daemon=True)
        self._thread.start()
        log.info("event=scheduler_started interval=%s", self.interval)

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def tick(self, now=None) -> dict:
        return run_jobs(self.st, self.jobs if self.jobs is not None else default_jobs(self.st), now)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.st.db.ensure_migrated()
                self.tick()
            except Exception as exc:  # noqa: BLE001 - keep the loop alive; the DB may come back
                log.warning("event=scheduler_error error=%r", first_line(exc))
            self._stop.wait(self.interval)


class Processor:
    """Applies queued payloads as soon as one is stored: woken by this process's webhook
    (st.wakeup) or by PostgreSQL NOTIFY from any process or replica; and every interval for
    payloads left behind (e.g. by a crash). ``threads`` apply payloads in parallel (payloads of
    one Alertmanager group stay in order: tickets.process_batch)."""

    def __init__(self, st, threads: int | None = None):
        self.st = st
        self.interval = st.receiver.scheduler.interval
        self.threads = threads or st.receiver.processing_threads
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._work = threading.Condition()
        self._generation = 0

    def start(self) -> None:
        _run_jobs_here(self.st)
        self._threads = [threading.Thread(target=self._run, name=f"receiver-processor-{i}", daemon=True)
                         for i in range(self.threads)]
        self._threads.append(threading.Thread(target=self._listen, name="receiver-listener", daemon=True))
        self._threads.append(threading.Thread(target=self._local, name="receiver-wakeup", daemon=True))
        for t in self._threads:
            t.start()
        self.kick()  # payloads left from before a restart: at once

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self.kick()
        self.st.wakeup.set()
        for t in self._threads:
            t.join(timeout if t.name.startswith("receiver-processor") else 0.1)

    def kick(self) -> None:
        with self._work:
            self._generation += 1
            self._work.notify_all()

    def _local(self) -> None:
        while not self._stop.is_set():  # this process's webhook stored a payload
            if self.st.wakeup.wait(self.interval):
                self.st.wakeup.clear()
            self.kick()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self.st.db.url, self.st.db.timeout) as conn:
                    conn.autocommit = True
                    conn.execute(f"listen {PAYLOAD_CHANNEL}")
                    self.kick()  # anything stored while we were not listening
                    while not self._stop.is_set():
                        got = False
                        for _ in conn.notifies(timeout=1.0):
                            got = True
                            break
                        if got:
                            self.kick()
            except Exception as exc:  # noqa: BLE001 - the database may come back
                log.warning("event=listener_error error=%r", first_line(exc))
                self._stop.wait(min(self.interval, 1.0))

    def _run(self) -> None:
        seen = -1
        while not self._stop.is_set():
            with self._work:
                if self._generation == seen:
                    self._work.wait(self.interval)
                seen = self._generation
            if self._stop.is_set():
                break
            try:
                self.st.db.ensure_migrated()
                while process_pending(self.st) >= PASS and not self._stop.is_set():
                    pass  # a backlog: on at once (not after the next kick or interval)
            except Exception as exc:  # noqa: BLE001 - the database may come back; payloads wait
                log.warning("event=processor_error error=%r", first_line(exc))
                self._stop.wait(min(self.interval, 1.0))
