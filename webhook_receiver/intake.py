"""Group commit for the webhook's raw payloads (``receiver.processing: queued``).

A request hands its validated payload to this process's ``Writer``. When no write is in flight
the request writes at once, itself (no hand-off, no extra thread: a lone request costs what it
did before). Requests arriving while a write is in flight queue up; when it ends, the oldest
of them becomes the next leader and stores everything queued at that moment (no artificial
delay, at most ``max_batch``) with ONE statement in ONE transaction (``tickets.enqueue_payloads``:
all or nothing, committed before anyone is answered), then wakes each request with its own
payload id, or with the error (-> 503, Alertmanager retries). So under load one commit (WAL
flush) and one round trip serve many notifications.

- A batch that fails for a reason other than the connection or privileges (e.g. one payload
  PostgreSQL refuses) is retried payload by payload: one bad payload cannot fail its neighbours.
- A queued request waits at most ``timeout`` for its turn: still queued then, it is withdrawn
  (nothing written, 503); already in a batch whose outcome is unknown, it answers 503 as well
  (it may be stored: the retry is then a duplicate, which processing handles idempotently).
  The writing request itself is bounded by the database timeouts (pool wait, connect,
  ``statement_timeout``), as before.
- One writer per process and app, made on first use and again after a fork (gunicorn); it
  owns no thread or connection (it borrows one from the pool per batch): nothing to stop.
- ``receiver.intake: spool`` (the default): the batch is appended to this process's spool segment
  with one write and one fdatasync instead (webhook_receiver/spool.py); the "id" answered is the
  record's stamp, and the background process loads it into PostgreSQL right after.
"""
from __future__ import annotations

import logging
import os
import threading

import psycopg

from core.logs import first_line
from webhook_receiver.spool import SpoolFull, SpoolWriter, fsync_wanted, meta_of
from webhook_receiver.spool import folder as spool_folder
from webhook_receiver.tickets import enqueue_payloads

log = logging.getLogger(__name__)

EXT = "opsstack.intake"


class StoreFailed(Exception):
    """The payload is not (known to be) stored: answer 503. ``cause`` is the database error,
    None when the time limit ran out."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


class _Item:
    __slots__ = ("note", "text", "wake", "done", "lead", "taken", "payload_id", "error")

    def __init__(self, note, text: str):
        self.note = note
        self.text = text
        self.wake = threading.Event()  # set when done, or when it becomes the leader
        self.done = False
        self.lead = False
        self.taken = False  # in a batch being written (cannot be withdrawn any more)
        self.payload_id: int | None = None
        self.error: BaseException | None = None


class Writer:
    """Leader/follower group commit: the request that finds no write in flight writes at once
    (no hand-off, no extra thread); requests arriving meanwhile queue up; when a write ends
    the oldest queued request is woken as the next leader and writes everything queued then."""

    def __init__(self, db, max_batch: int = 256, timeout: float = 10.0, spool=None):
        self.db = db
        self.spool = spool  # a spool.SpoolWriter (receiver.intake: spool): batches go there, not to db
        self.max_batch = max_batch
        self.timeout = timeout
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._busy = False  # a leader is writing (invariant: queue not empty -> busy)
        # counters (tests, diagnostics)
        self.batches = 0
        self.stored = 0

    def submit(self, note, text: str) -> int:
        """Store one payload durably; returns its id once committed. Raises StoreFailed."""
        item = _Item(note, text)
        with self._lock:
            self._queue.append(item)
            if not self._busy:
                self._busy = item.lead = True
        if not item.lead and not item.wake.wait(self.timeout):
            with self._lock:
                if not (item.lead or item.taken or item.done):  # still queued: withdraw, nothing written
                    self._queue.remove(item)
                    raise StoreFailed(f"not written within {self.timeout:g}s (database slow)")
            if not item.lead and not item.wake.wait(0):
                raise StoreFailed(f"commit not confirmed within {self.timeout:g}s")
        if item.lead:
            self._lead()
        if item.error is not None:
            exc = item.error
            raise StoreFailed(first_line(exc), exc)
        return item.payload_id  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[:self.max_batch]  # the leader is first: it was the queue's head
            del self._queue[:self.max_batch]
            for it in batch:
                it.taken = True
        try:
            self._write(batch)
        except BaseException as exc:  # noqa: BLE001 - never leave a request waiting
            for it in batch:
                if not it.done:
                    self._finish(it, error=exc)
            raise
        finally:
            with self._lock:
                if self._queue:  # hand over to the oldest waiting request
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.wake.set()
                else:
                    self._busy = False

    def _write(self, batch: list[_Item]) -> None:
        if self.spool is not None:
            try:
                stamps = self.spool.append([(meta_of(it.note), it.text) for it in batch])
            except (OSError, SpoolFull) as exc:  # disk full, spool full: the same for every payload
                for it in batch:
                    self._finish(it, error=exc)
                return
            self._stored(batch, stamps)
            return
        try:
            ids = self.db.run(lambda conn: enqueue_payloads(conn, [(it.note, it.text) for it in batch]))
        except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege) as exc:
            for it in batch:  # the database is not writable: the same for every payload
                self._finish(it, error=exc)
            return
        except psycopg.Error as exc:
            if len(batch) == 1:
                self._finish(batch[0], error=exc)
                return
            log.warning("event=intake_batch_failed size=%s error=%r; storing one by one", len(batch),
                        first_line(exc))
            for it in batch:
                self._write([it])
            return
        except Exception as exc:  # noqa: BLE001 - e.g. PoolTimeout
            for it in batch:
                self._finish(it, error=exc)
            return
        self._stored(batch, ids)

    def _stored(self, batch: list[_Item], ids: list[int]) -> None:
        self.batches += 1
        self.stored += len(batch)
        for it, pid in zip(batch, ids):
            self._finish(it, payload_id=pid)

    @staticmethod
    def _finish(it: _Item, payload_id: int | None = None, error: BaseException | None = None) -> None:
        it.payload_id, it.error, it.done = payload_id, error, True
        it.wake.set()


_lock = threading.Lock()


def writer(app, st) -> Writer:
    """This process's writer for ``app`` (a new one after a fork)."""
    w = app.extensions.get(EXT)
    if w is not None and w.pid == os.getpid() and w.db is st.db:
        return w
    with _lock:
        w = app.extensions.get(EXT)
        if w is None or w.pid != os.getpid() or w.db is not st.db:
            r = st.receiver
            # a write in flight is bounded by pool wait + connect/statement timeouts (and one retry)
            timeout = 2 * float(r.db_timeout) + 1.0
            sp = None
            if r.intake == "spool":
                sp = SpoolWriter(spool_folder(st), fsync=fsync_wanted(st.cfg), max_bytes=r.spool.max_bytes,
                                 segment_bytes=r.spool.segment_bytes)
            w = Writer(st.db, timeout=timeout, spool=sp)
            app.extensions[EXT] = w
        return w
