"""The background loop of each receiver process: escalation timers, the notification
outbox, heartbeat checks and raw-payload retention.

Every step takes its rows with FOR UPDATE SKIP LOCKED, so any number of workers and replicas
can run this loop against one database; state lives only in PostgreSQL, so a restart picks up
where the last process stopped.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from webhook_receiver import escalation, heartbeat, notify, tickets

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
PRUNE_LOCK = 7_215_003


def process_pending(st, limit: int = 1000) -> int:
    """Apply queued payloads until none is left (or limit); returns how many."""
    n = 0
    with st.db.connection() as conn:
        while n < limit and tickets.process_next(st.ctx, conn) is not None:
            n += 1
    return n


def tick(st, now=None) -> dict:
    """One pass of every job (also what tests call instead of waiting for the thread)."""
    cfg = st.cfg
    batch = cfg["receiver"]["scheduler"]["batch"]
    out = {"payloads": process_pending(st)}
    with st.db.connection() as conn:
        out["escalated"] = escalation.run_due(st.ctx, conn, now=now, batch=batch)
        if getattr(st, "watching_since", None) is None:
            st.watching_since = escalation.utcnow()   # the first pass of this process
        out["heartbeat_alarms"] = heartbeat.check(st.ctx, conn, now or escalation.utcnow(),
                                                  cfg["receiver"]["heartbeat_timeout"], st.watching_since)
        out["notifications"] = notify.run_outbox(st.ctx, conn, now=now, batch=batch)
    return out


def prune(st) -> int:
    keep = timedelta(seconds=st.cfg["receiver"]["raw_retention"])
    with st.db.connection() as conn:
        with conn.transaction():
            got = conn.execute("select pg_try_advisory_xact_lock(%s) ok", (PRUNE_LOCK,)).fetchone()["ok"]
            if not got:
                return 0
            return conn.execute("delete from ticket_payloads where received_at < now() - %s", (keep,)).rowcount


class Scheduler:
    def __init__(self, st):
        self.st = st
        self.interval = st.cfg["receiver"]["scheduler"]["interval"]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="receiver-scheduler", daemon=True)
        self._thread.start()
        log.info("event=scheduler_started interval=%s", self.interval)

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.st.db.ensure_migrated()
                tick(self.st)
                if time.monotonic() - self._last_prune > PRUNE_EVERY:
                    self._last_prune = time.monotonic()
                    n = prune(self.st)
                    if n:
                        log.info("event=payloads_pruned rows=%s", n)
            except Exception as exc:  # noqa: BLE001 - keep the loop alive; the DB may come back
                log.warning("event=scheduler_error error=%r", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
            self._stop.wait(self.interval)


class Processor:
    """Applies queued payloads as soon as one is stored: woken by this process's webhook
    (st.wakeup) or by PostgreSQL NOTIFY from any process or replica; and every interval for
    payloads left behind (e.g. by a crash). ``threads`` apply payloads in parallel (payloads of
    one Alertmanager group stay in order: process_next)."""

    def __init__(self, st, threads: int | None = None):
        self.st = st
        self.interval = st.cfg["receiver"]["scheduler"]["interval"]
        self.threads = threads or st.cfg["receiver"]["processing_threads"]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._work = threading.Condition()
        self._generation = 0

    def start(self) -> None:
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
        from webhook_receiver.db import connect
        from webhook_receiver.tickets import PAYLOAD_CHANNEL

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
                log.warning("event=listener_error error=%r", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
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
                process_pending(self.st)
            except Exception as exc:  # noqa: BLE001 - the database may come back; payloads wait
                log.warning("event=processor_error error=%r", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
                self._stop.wait(min(self.interval, 1.0))


def run_background(cfg: dict, stop: threading.Event | None = None, scheduler: bool = True) -> None:
    """The receiver's background process: processor threads and the scheduler loop, no HTTP."""
    from webhook_receiver.app import close_app, create_app, start_scheduler

    app = create_app(cfg)
    start_scheduler(app, scheduler=scheduler, force=True)
    log.info("event=background_started processing_threads=%s", cfg["receiver"]["processing_threads"])
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        close_app(app)
