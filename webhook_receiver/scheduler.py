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
        out["heartbeat_alarms"] = heartbeat.check(st.ctx, conn, now or escalation.utcnow(),
                                                  cfg["receiver"]["heartbeat_timeout"])
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
    """Applies queued payloads as soon as this process stored one (and every interval, for
    payloads other processes left behind, e.g. after a crash)."""

    def __init__(self, st):
        self.st = st
        self.interval = st.cfg["receiver"]["scheduler"]["interval"]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="receiver-processor", daemon=True)
        self.st.wakeup.set()  # payloads left from before a restart: at once
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self.st.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.st.wakeup.wait(self.interval)
            self.st.wakeup.clear()
            if self._stop.is_set():
                break
            try:
                self.st.db.ensure_migrated()
                process_pending(self.st)
            except Exception as exc:  # noqa: BLE001 - the database may come back; payloads wait
                log.warning("event=processor_error error=%r", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
                self._stop.wait(min(self.interval, 1.0))
