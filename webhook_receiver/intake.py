"""Group commit for the webhook's raw payloads (``receiver.processing: queued``).

Request threads hand their validated payload to this process's writer and wait; the writer
takes everything queued at that moment (no artificial delay, at most ``max_batch``), stores
it with ONE statement in ONE transaction (``tickets.enqueue_payloads``: all or nothing,
committed before anyone is answered) and wakes each waiting request with its own payload id,
or with the error (-> 503, Alertmanager retries). While one batch commits the next one fills
up, so under load one commit (fsync) serves many notifications; a lone request costs one
thread hand-off more than writing it itself.

- A batch that fails for a reason other than the connection (e.g. one payload PostgreSQL
  refuses) is retried payload by payload, so one bad payload cannot fail its neighbours.
- A request never waits more than ``timeout``: a payload still queued is withdrawn (nothing
  written, 503); one already in a batch whose outcome is unknown also answers 503 (it may be
  stored: the retry is a duplicate, which processing already handles idempotently).
- Per process and per app, started lazily on the first request (so after gunicorn forks); the
  writer thread exits after ``idle`` seconds without work and is started again when needed,
  so there is nothing to stop at shutdown.
"""
from __future__ import annotations

import logging
import os
import threading

import psycopg

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
    __slots__ = ("note", "text", "done", "payload_id", "error", "taken")

    def __init__(self, note, text: str):
        self.note = note
        self.text = text
        self.done = threading.Event()
        self.payload_id: int | None = None
        self.error: BaseException | None = None
        self.taken = False  # in a batch being written (cannot be withdrawn any more)


class Writer:
    def __init__(self, db, max_batch: int = 256, timeout: float = 10.0, idle: float = 5.0):
        self.db = db
        self.max_batch = max_batch
        self.timeout = timeout
        self.idle = idle
        self.pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Item] = []
        self._thread: threading.Thread | None = None
        # counters (tests, diagnostics)
        self.batches = 0
        self.stored = 0

    # ------------------------------------------------------------------ request side
    def submit(self, note, text: str) -> int:
        """Store one payload durably; returns its id once committed. Raises StoreFailed."""
        item = _Item(note, text)
        with self._cond:
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="receiver-intake-writer", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()
        if not item.done.wait(self.timeout):
            with self._cond:
                if not item.taken:  # still queued: withdraw it, nothing was written
                    self._queue.remove(item)
                    raise StoreFailed(f"not written within {self.timeout:g}s (writer busy)")
            if not item.done.wait(0):
                raise StoreFailed(f"commit not confirmed within {self.timeout:g}s")
        if item.error is not None:
            exc = item.error
            raise StoreFailed((str(exc).strip().splitlines() or [type(exc).__name__])[0], exc)
        return item.payload_id  # type: ignore[return-value]

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(self.idle)
                    if not self._queue:
                        self._thread = None  # the next submit starts a new one
                        return
                batch = self._queue[:self.max_batch]
                del self._queue[:self.max_batch]
                for it in batch:
                    it.taken = True
            try:
                self._write(batch)
            except BaseException as exc:  # noqa: BLE001 - never leave a request waiting
                for it in batch:
                    if not it.done.is_set():
                        it.error = exc
                        it.done.set()
                if not isinstance(exc, Exception):
                    with self._cond:
                        self._thread = None
                    raise

    def _write(self, batch: list[_Item]) -> None:
        try:
            ids = self.db.run(lambda conn: enqueue_payloads(conn, [(it.note, it.text) for it in batch]))
        except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege) as exc:
            self._fail(batch, exc)  # the database is not writable: the same for every payload
            return
        except psycopg.Error as exc:
            if len(batch) == 1:
                self._fail(batch, exc)
                return
            log.warning("event=intake_batch_failed size=%s error=%r; storing one by one", len(batch),
                        (str(exc).strip().splitlines() or [type(exc).__name__])[0])
            for it in batch:
                self._write([it])
            return
        except Exception as exc:  # noqa: BLE001 - e.g. PoolTimeout
            self._fail(batch, exc)
            return
        self.batches += 1
        self.stored += len(batch)
        for it, pid in zip(batch, ids):
            it.payload_id = pid
            it.done.set()

    @staticmethod
    def _fail(batch: list[_Item], exc: BaseException) -> None:
        for it in batch:
            it.error = exc
            it.done.set()


_lock = threading.Lock()


def writer(app, st) -> Writer:
    """This process's writer for ``app`` (a new one after a fork)."""
    w = app.extensions.get(EXT)
    if w is not None and w.pid == os.getpid() and w.db is st.db:
        return w
    with _lock:
        w = app.extensions.get(EXT)
        if w is None or w.pid != os.getpid() or w.db is not st.db:
            r = st.cfg["receiver"]
            # pool wait + statement: a request waits at most about this long, then 503
            timeout = 2 * float(r["db_timeout"]) + 1.0
            w = Writer(st.db, timeout=timeout)
            app.extensions[EXT] = w
        return w
