"""The webhook's local spool (``receiver.intake: spool``): a notification is answered once it is
on this host's disk, not once the database committed it.

Why: under an alert storm the database is the busiest program on the machine (the background
process applying payloads, the exporters, the platform's own queries). A webhook answered only
after a commit waits for a database backend to get a CPU, twice per request; measured with the
whole stack on 2 cores, that put the intake's p99 at 70-80 ms (bench/storm_bench.py), and a
database outage turned every notification into a 503. With the spool the answer waits for one
append (and fdatasync) to a local file only; the database is written right after, in sets, by
the loader beside the payload processor. While the database is down, alerts keep being accepted
and are applied when it is back.

Layout: ``receiver.spool.dir`` (default ``<stack.run_dir>/receiver-spool/<database>``) holds segments
``<host>-<pid>-<start ns>.seg``, each written by one web process only (no lock between
processes). A record is a header ``"OS" | length u32 | crc32 u32 | received_at ns i64`` and the
payload's JSON text (UTF-8). A process writes many records with one ``write`` and one
``fdatasync`` (group commit, webhook_receiver.intake.Writer) and answers only after both.

Order: each record's stamp is taken by its writer at write time, increasing within a segment.
The loader takes ``now`` before it reads, and loads only records stamped up to then, oldest
first across all segments. A later notification of the same Alertmanager group was sent only
after the earlier one was answered (written), so it is stamped later: whenever it is loaded,
the earlier one was visible and loaded before it (payloads of one group apply in arrival order).

Exactly once: the loaded offset of each segment is kept in PostgreSQL
(``ticket_spool_segments``) and moves in the same transaction that inserts the records; a
crash between the two loads nothing twice. Those transactions commit without waiting for the WAL
flush (the spool still holds the records): any later synchronous commit makes them durable (the
processor's, or the one before a segment file is deleted), and a crash before that rolls rows and
offsets back together, to be loaded again from the spool. A segment is sealed when its process is gone or
the process started a newer one (at ``segment_bytes``); a sealed segment fully loaded is
deleted. A torn record at the end of a sealed segment (the process died inside a write: it
was never answered) is dropped with a warning.

Bounds: past ``max_bytes`` of segments on disk (the database cannot keep up, or is down for
long), the webhook answers 503 again (Alertmanager retries) instead of filling the disk.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from core.logs import first_line

log = logging.getLogger(__name__)

MAGIC = b"OS"
HEADER = struct.Struct(">2sIIq")  # magic, body length, crc32 of the body, received_at (ns since the epoch)
SUFFIX = ".seg"
LOCK_NAME = ".loader.lock"
LOAD_RECORDS = 500          # records per loading transaction
READ_BYTES = 8 << 20        # bytes read from one segment per pass (or its next record whole)


class SpoolFull(Exception):
    """The spool holds max_bytes already (answer 503)."""


def default_dir(cfg: dict, db_url: str) -> Path:
    """receiver.spool.dir, else ``<stack.run_dir>/receiver-spool/<database>``: a folder per
    database (host, port, name; never the password), so two receivers sharing a run_dir but not a
    database never load each other's notifications."""
    d = cfg["receiver"].get("spool", {}).get("dir")
    if d:
        return Path(d)
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(db_url)
    except psycopg.ProgrammingError:
        info = {"dsn": db_url}
    key = "|".join(str(info.get(k, "")) for k in ("host", "port", "dbname", "user", "dsn"))
    return Path(cfg["stack"]["run_dir"]) / "receiver-spool" / hashlib.sha256(key.encode()).hexdigest()[:16]


def folder(st) -> Path:
    """The spool folder of a receiver app's State (default_dir of its config and database)."""
    return default_dir(st.cfg, st.ctx.db_url)


def fsync_wanted(cfg: dict) -> bool:
    """receiver.spool.fsync; null is true here (`opsstack up` resolves it to the embedded
    cluster's database.embedded.durable: stack/runtime.py)."""
    v = cfg["receiver"].get("spool", {}).get("fsync")
    return True if v is None else bool(v)


def ensure_dir(path: Path) -> None:
    """The spool folder, made 0700 and ours: whoever can write into it could make the loader
    turn a file of theirs into alerts."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise PermissionError(f"the spool folder {path} belongs to uid {st.st_uid}, not to this receiver "
                              f"(uid {os.geteuid()}): set receiver.spool.dir to a folder of its own")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def _host() -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())[:64] or "host"


def meta_of(note) -> str:
    """What the loader needs of a notification besides its text (no JSON parse there): one line."""
    return json.dumps([note.group_key, note.receiver, note.status, len(note.alerts)], ensure_ascii=False,
                      separators=(",", ":"))


def encode(meta: str, text: str, stamp: int) -> bytes:
    body = (meta + "\n" + text).encode("utf-8")
    return HEADER.pack(MAGIC, len(body), zlib.crc32(body), stamp) + body


def decode(buf: bytes | memoryview) -> tuple[list[tuple[int, int, str, str]], int, str | None]:
    """The whole records at the start of ``buf``: ([(end offset, stamp, meta, text)], where they
    stop, why they stop early: None at an incomplete record or the end, else what is damaged
    there (wrong magic or checksum, not UTF-8)."""
    out, pos, n = [], 0, len(buf)
    while pos + HEADER.size <= n:
        magic, length, crc, stamp = HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            return out, pos, f"bad record header at offset {pos}"
        end = pos + HEADER.size + length
        if end > n:
            break
        body = bytes(buf[pos + HEADER.size:end])
        if zlib.crc32(body) != crc:
            return out, pos, f"checksum mismatch at offset {pos}"
        try:
            meta, sep, text = body.decode("utf-8").partition("\n")
        except UnicodeDecodeError:
            return out, pos, f"not UTF-8 at offset {pos}"
        if not sep:
            return out, pos, f"no metadata line at offset {pos}"
        out.append((end, stamp, meta, text))
        pos = end
    return out, pos, None


class SpoolWriter:
    """One web process's segment: ``append(items)`` writes them with one write and (fsync on)
    one fdatasync, and returns their stamps. Not thread-safe: the group-commit leader calls it."""

    def __init__(self, directory: str | os.PathLike, fsync: bool = True, max_bytes: int = 1 << 30,
                 segment_bytes: int = 64 << 20):
        self.dir = Path(directory)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.pid = os.getpid()
        self._fd: int | None = None
        self._size = 0
        self._last = 0
        self._usage = 0
        self._usage_at = 0.0

    def _open(self) -> None:
        ensure_dir(self.dir)
        name = f"{_host()}-{self.pid}-{time.time_ns():020d}{SUFFIX}"
        fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        if self.fsync:  # the new name itself must survive a crash
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        old, self._fd, self._size = self._fd, fd, 0
        if old is not None:
            os.close(old)  # sealed: this process has a newer segment

    def _over_limit(self, adding: int) -> bool:
        now = time.monotonic()
        if now - self._usage_at > 1.0:  # the folder's size, read at most once a second
            self._usage = sum(e.stat().st_size for e in os.scandir(self.dir) if e.name.endswith(SUFFIX))
            self._usage_at = now
        return self._usage + adding > self.max_bytes

    def append(self, items: list[tuple[str, str]]) -> list[int]:
        """Write (meta_of(note), JSON text) records; returns their stamps once on disk."""
        if self._fd is None or self._size >= self.segment_bytes:
            self._open()
        stamps = []
        for _ in items:
            self._last = max(self._last + 1, time.time_ns())
            stamps.append(self._last)
        data = b"".join(encode(m, t, s) for (m, t), s in zip(items, stamps))
        if self._over_limit(len(data)):
            raise SpoolFull(f"the spool holds {self._usage} bytes, receiver.spool.max_bytes is {self.max_bytes}: "
                            "the database is not keeping up or is down")
        view = memoryview(data)
        while view:
            try:
                k = os.write(self._fd, view)
            except OSError:
                # a partial record may be on disk: start a new segment (this one's torn tail is
                # dropped by the loader once sealed); the caller answers 503
                self._fd_broken()
                raise
            view = view[k:]
        if self.fsync:
            try:
                os.fdatasync(self._fd)
            except OSError:
                self._fd_broken()
                raise
        self._size += len(data)
        self._usage += len(data)
        return stamps

    def _fd_broken(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        self._fd_broken()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_warned: set[str] = set()


def _segments(directory: Path) -> list[tuple[str, int, bool]]:
    """(name, size, sealed) of the segments, by name."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    me, host = os.geteuid(), _host()
    files = []  # (name, size, writer (host-pid), its start)
    for e in entries:
        if not e.name.endswith(SUFFIX):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if st.st_uid != me or not e.is_file(follow_symlinks=False):
            # not a file this receiver's user wrote (a link, someone else's): never loaded
            if e.name not in _warned:
                _warned.add(e.name)
                log.warning("event=spool_foreign_file file=%s action=ignored", e.name)
            continue
        w, _, start = e.name[:-len(SUFFIX)].rpartition("-")
        files.append((e.name, st.st_size, w, int(start) if start.isdigit() else 0))
    newest: dict[str, int] = {}  # writer -> its newest segment's start
    for _, _, w, start in files:
        newest[w] = max(newest.get(w, 0), start)
    out = []
    for name, size, w, start in files:
        h, _, pid = w.rpartition("-")
        gone = h == host and pid.isdigit() and not _alive(int(pid))
        out.append((name, size, newest[w] > start or gone or h != host))
    return sorted(out)


def _loaded(db, names: list[str]) -> dict[str, int]:
    """How far each of these segments was loaded, as the database has it (absent: not at all)."""
    if not names:
        return {}
    return {r["name"]: r["loaded_to"] for r in db.run(lambda conn: conn.execute(
        "select name, loaded_to from ticket_spool_segments where name = any(%s)", (names,)).fetchall())}


# one multi-row insert (plain text parameters: the body is not escaped into another JSON document)
_LOAD = """
with v as materialized (
    select nextval(pg_get_serial_sequence('ticket_payloads', 'id')) as id, u.*
    from (values {rows}) as u(ord, received_at, group_key, receiver, status, alert_count, body)
    order by u.ord)
insert into ticket_payloads (id, received_at, group_key, receiver, status, alert_count, body)
select id, received_at, group_key, receiver, status, alert_count, body::jsonb from v order by ord
"""
_ROW = "(%s::int, %s::timestamptz, %s::text, %s::text, %s::text, %s::int, %s::text)"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _when(stamp: int) -> datetime:
    return _EPOCH + timedelta(microseconds=stamp // 1000)


class Loader:
    """Moves spooled records into ticket_payloads (in the background process, or in each worker
    with receiver.background: workers: one at a time per folder, by a file lock)."""

    def __init__(self, db, directory: str | os.PathLike, wake=None, poll: float = 0.05):
        self.db = db
        self.dir = Path(directory)
        self.wake = wake  # called after records were loaded (this process's processors)
        self.poll = poll  # the wait after a pass that left nothing behind (records gather meanwhile)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._done: dict[str, int] | None = None  # loaded offsets as last committed by this loader

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="receiver-spool-loader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._hold_lock():
                    self._stop.wait(1.0)  # another process of this host loads this folder
                    continue
                n = self.load_once()
            except Exception as exc:  # noqa: BLE001 - the database may come back; records wait on disk
                self._done = None
                log.warning("event=spool_load_failed error=%r", first_line(exc))
                self._stop.wait(1.0)
                continue
            if n < LOAD_RECORDS:
                self._stop.wait(self.poll)

    def _hold_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        ensure_dir(self.dir)
        fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _offsets(self, names: list[str]) -> dict[str, int]:
        """The loaded offset of each segment: this loader's own record of what it committed,
        read again from the database for a segment it does not know (or after any failure)."""
        if self._done is None or any(n not in self._done for n in names):
            self.db.ensure_migrated()  # ticket_spool_segments
            self._done = {n: 0 for n in names} | _loaded(self.db, names)
        return {n: self._done[n] for n in names}

    # ------------------------------------------------------------------ one pass
    def load_once(self) -> int:
        """Load what is spooled (up to LOAD_RECORDS records, oldest first); returns how many
        records were loaded or dropped (0: nothing to do)."""
        cut = time.time_ns()  # before reading: see the module doc (order)
        segs = _segments(self.dir)
        if not segs:
            return 0
        done = self._offsets([s[0] for s in segs])
        records: list[tuple[int, str, int, str, str]] = []  # (stamp, segment, end offset, meta, text)
        damaged: dict[str, tuple[int, str]] = {}             # sealed segment -> (offset, why): the rest is dropped
        finished: list[str] = []                             # sealed and fully loaded
        for name, size, sealed in segs:
            start = done[name]
            if start >= size:
                if sealed:
                    finished.append(name)
                continue
            with open(self.dir / name, "rb") as f:
                f.seek(start)
                buf = f.read(min(READ_BYTES, size - start))
                if len(buf) >= HEADER.size and buf[:2] == MAGIC:
                    # one record larger than a pass reads (a storm's notification can be tens of
                    # MB): read that record whole
                    need = HEADER.size + HEADER.unpack_from(buf)[1]
                    if len(buf) < need <= size - start:
                        f.seek(start)
                        buf = f.read(need)
            recs, stop, why = decode(buf)
            later = False
            for end, stamp, meta, text in recs:
                if stamp > cut:  # written after this pass began: the next pass (order)
                    later = True
                    break
                records.append((stamp, name, start + end, meta, text))
            if not sealed or later:
                continue  # a live segment: an incomplete or odd record may be a write in progress
            if why is not None or (stop < len(buf) and len(buf) == size - start):
                # sealed, and what follows the whole records is damaged, or a record its process
                # never finished writing (it died inside the write: never answered): dropped
                damaged[name] = (start + stop, why or "torn record at the end")
        records.sort()
        good, left = records[:LOAD_RECORDS], {r[1] for r in records[LOAD_RECORDS:]}
        ends: dict[str, int] = {}
        for _, name, end, _, _ in good:
            ends[name] = max(ends.get(name, 0), end)
        size_of = {name: size for name, size, _ in segs}
        for name, (offset, why) in damaged.items():
            if name in left:
                continue  # the whole records before the damage go first
            log.warning("event=spool_damaged segment=%s offset=%s bytes_dropped=%s error=%r", name, offset,
                        size_of[name] - offset, why)
            ends[name] = size_of[name]
        if not ends:
            if finished:
                self._remove(finished)
            return 0
        params: list = []
        for stamp, name, _, meta, text in good:
            try:
                group_key, receiver, status, alert_count = json.loads(meta)
            except (ValueError, TypeError) as exc:  # written by SpoolWriter: cannot happen
                log.error("event=spool_record_invalid segment=%s error=%r", name, first_line(exc))
                continue
            params += (len(params) // 7, _when(stamp), group_key, receiver, status, alert_count, text)
        n = len(params) // 7

        def tx(conn):
            with conn.transaction():
                # no WAL flush wait here: until a later synchronous commit flushed this one (the
                # processor's, which applies these rows, or _remove's before any file goes), the
                # records are still in the spool, and a crash rolls rows and offsets back together
                conn.execute("set local synchronous_commit = off")
                for name, end in sorted(ends.items()):
                    cur = conn.execute(
                        """insert into ticket_spool_segments as s (name, loaded_to) values (%s, %s)
                           on conflict (name) do update set loaded_to = excluded.loaded_to, updated_at = now()
                           where s.loaded_to = %s""", (name, end, done[name]))
                    if cur.rowcount != 1:  # another loader moved it meanwhile: nothing written, read again
                        raise _Raced(name)
                if n:
                    conn.execute(_LOAD.replace("{rows}", ", ".join([_ROW] * n)), params, prepare=False)
                    conn.execute("select pg_notify(%s, '')", (PAYLOAD_CHANNEL,))
        try:
            self.db.run(tx)
        except _Raced as exc:
            self._done = None
            log.info("event=spool_load_raced segment=%s", exc)
            return 0
        except BaseException:
            self._done = None
            raise
        self._done.update(ends)
        if n and self.wake is not None:
            self.wake()
        return max(1, n)

    def _remove(self, names: list[str]) -> None:
        # a synchronous commit first: it flushes the WAL through the (asynchronous) commits that
        # recorded these segments as loaded, so no file goes before its rows are durable
        self.db.run(lambda conn: conn.execute(
            "update ticket_spool_segments set updated_at = now() where name = any(%s)", (names,)))
        for name in names:
            try:
                os.unlink(self.dir / name)
            except FileNotFoundError:
                pass
        self.db.run(lambda conn: conn.execute("delete from ticket_spool_segments where name = any(%s)", (names,)))
        if self._done is not None:
            for name in names:
                self._done.pop(name, None)
        log.info("event=spool_segments_removed segments=%s", len(names))


class Collector:
    """/metrics: the spool on this host (its folder is read on each scrape; the loaded offsets
    come from the database, and are left out while it cannot be read)."""

    def __init__(self, directory: Path, db, max_bytes: int):
        self.dir, self.db, self.max_bytes = directory, db, max_bytes

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        segs = _segments(self.dir)
        total = GaugeMetricFamily("opsstack_receiver_spool_bytes",
                                  "Bytes of webhook spool files on this host (bounded by receiver.spool.max_bytes; "
                                  "loaded files are deleted once their process moved on to a new one).")
        total.add_metric([], float(sum(s[1] for s in segs)))
        yield total
        limit = GaugeMetricFamily("opsstack_receiver_spool_max_bytes",
                                  "receiver.spool.max_bytes: past it the webhook answers 503.")
        limit.add_metric([], float(self.max_bytes))
        yield limit
        try:
            done = _loaded(self.db, [s[0] for s in segs])
        except Exception as exc:  # noqa: BLE001 - database errors, PoolTimeout: the gauge is left out
            log.debug("event=spool_metrics_no_database error=%r", first_line(exc))
            return
        pending = GaugeMetricFamily("opsstack_receiver_spool_pending_bytes",
                                    "Bytes the webhook answered from the spool that are not in the database yet "
                                    "(left out while the database cannot be read).")
        pending.add_metric([], float(sum(max(0, size - done.get(name, 0)) for name, size, _ in segs)))
        yield pending
        age = GaugeMetricFamily("opsstack_receiver_spool_pending_age_seconds",
                                "Age of the oldest notification answered from the spool and not in the database "
                                "yet (0 when none; left out while the database cannot be read).")
        stamps = [t for t in (_stamp_at(self.dir / name, done.get(name, 0)) for name, size, _ in segs
                              if size > done.get(name, 0)) if t is not None]
        age.add_metric([], max(0.0, time.time() - min(stamps) / 1e9) if stamps else 0.0)
        yield age


def _stamp_at(path: Path, offset: int) -> int | None:
    """received_at (ns) of the record at ``offset`` of a segment; None when no whole header of
    ours is there (gone, torn, damaged)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            head = f.read(HEADER.size)
    except OSError:
        return None
    if len(head) < HEADER.size or head[:2] != MAGIC:
        return None
    return HEADER.unpack(head)[3]


def collector_factory(st):
    """For State.metrics_collectors: ``f(db) -> Collector`` of this app's spool."""
    directory, limit = folder(st), st.receiver.spool.max_bytes
    return lambda db: Collector(directory, db, limit)


class _Raced(Exception):
    pass


def load_pending(st) -> int:
    """Load everything spooled now, in this thread (scheduler.process_pending: an app without
    a loader thread, e.g. a test or `receiver process`). With a loader thread in this process
    it is that thread's work: nothing is done here. Returns how many passes loaded or dropped
    something."""
    r = st.receiver
    if r.processing != "queued" or r.intake != "spool" or st.loader is not None:
        return 0
    loader = Loader(st.db, folder(st))
    if not loader._hold_lock():
        return 0  # another process loads this folder
    try:
        n = 0
        while loader.load_once():
            n += 1
        return n
    finally:
        loader.stop()


from webhook_receiver.tickets import PAYLOAD_CHANNEL  # noqa: E402  (tickets imports payload, not this module)
