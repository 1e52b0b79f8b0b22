"""Tail a log file through rotation, counting every line once (exporters.security).

A ``Tailer`` follows one path. Each ``poll(sink)`` reads what was appended since the last
poll and hands it to ``sink(text, lines)`` as blocks of complete lines (``text`` ends with
"\\n"; ``lines`` is how many). Its position is kept as state (``state()`` / the ``state=``
argument, persisted by ``StateFile``): device, inode, the committed offset (end of the last
complete line handed out), the first bytes of the file (``head``) and the bytes just before the
offset (``tail``), so a restarted exporter goes on where it stopped and never hands out a line
twice.

Rotation, both of logrotate's modes:
- **create** (the file is renamed, a new one created): the path's inode changes. The old file
  stays open and is read to its end first (a writer that has not reopened yet still appends
  to it: it is drained until it stays still for ``rotate_grace`` seconds, then its unterminated
  last line, if any, is handed out and it is closed); the new file is read from offset 0.
  After a restart, the file of the saved inode is looked for beside the path (``name.1``,
  ``name-20260101``..., not compressed ones) and finished from the saved offset.
- **copytruncate** (the file is copied, then truncated in place): the file shrinks below the
  offset, or its bytes before the offset are no longer the ones read (truncated and already
  written past the old offset). The lines that were copied but not yet read are read from the
  copy (the rotated file whose bytes before the offset match), then the file from offset 0.
  Every read also reads the FINGERPRINT bytes before its position again and compares them with
  what it read there, so a truncate-and-rewrite between two reads is caught too. Lines a
  writer appends between logrotate's copy and its truncate are in neither file: logrotate's
  own caveat of that mode, nothing a reader can recover.
- generations never seen (rotated twice between two looks, or copied away while nothing of
  them had been read) are read whole from the uncompressed rotated files written since the
  last look that are neither open nor already read (``missed_generations``).

Lines: a partial last line waits for its newline (it is not handed out, the offset stays
before it); a line longer than ``max_line`` bytes is cut to ``max_line`` bytes (counted in
``truncated_lines``), never dropped, and what is past the cut is skipped without being held;
invalid UTF-8 is escaped (``\\xNN``, counted in ``invalid_utf8_lines``). The common case (a block
of valid UTF-8 without a huge line) is handed out as one decoded block without per-line work.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger("opsstack.exporter.security.tail")

FINGERPRINT = 64          # bytes kept of the file's head and of what is before the offset
COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z", ".zip")
Sink = Callable[[str, int], None]


@dataclass
class Stats:
    lines: int = 0
    bytes: int = 0
    truncated_lines: int = 0
    invalid_utf8_lines: int = 0
    rotations_create: int = 0
    rotations_truncate: int = 0
    recovered_from_copy: int = 0    # copytruncate: times the unread part was read from the copy
    lost_rotations: int = 0         # the rotated file could not be found (compressed, deleted)
    missed_generations: int = 0     # whole generations rotated away between two looks, read whole


@dataclass
class _File:
    """An open generation of the log: the fd, where we are, and what identifies it."""
    fd: int
    ino: int
    dev: int
    offset: int = 0                 # committed: end of the last complete line handed out
    pos: int = 0                    # read position (offset + the pending partial line)
    pending: bytearray = field(default_factory=bytearray)
    skipping: bool = False          # inside a line past max_line: drop bytes until "\n"
    head: bytes = b""
    tail: bytes = b""
    recent: bytes = b""             # the last FINGERPRINT bytes read (up to pos)
    rewritten: bool = False         # a read found the bytes before pos changed (copytruncate)
    still_since: float | None = None  # draining old file: since when it has not grown

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class Tailer:
    def __init__(self, path: str | os.PathLike, *, state: dict | None = None, max_line: int = 65536,
                 chunk: int = 1 << 20, rotate_grace: float = 5.0, start_at: str = "end"):
        self.path = str(path)
        self.max_line = int(max_line)
        self.chunk = max(int(chunk), 4096)
        self.rotate_grace = float(rotate_grace)
        self.start_at = start_at
        self.stats = Stats()
        self.cur: _File | None = None
        self.draining: list[_File] = []
        self._saved = dict(state) if state else None
        self._last_seen = 0.0           # wall time the live file was last looked at
        self._first = True              # start_at applies to the first open only
        self._finished: list[tuple[int, int]] = []  # (ino, dev) of the last generations read to the end

    # ------------------------------------------------------------------ state
    def state(self) -> dict | None:
        f = self.cur
        if f is None:
            return self._saved
        return {"dev": f.dev, "ino": f.ino, "offset": f.offset, "head": f.head.hex(), "tail": f.tail.hex(),
                "seen": self._last_seen}

    def lag_bytes(self) -> int:
        """Bytes of the live file not handed out yet (its size - the committed offset)."""
        if self.cur is None:
            return 0
        try:
            return max(os.fstat(self.cur.fd).st_size - self.cur.offset, 0)
        except OSError:
            return 0

    def close(self) -> None:
        for f in self.draining:
            f.close()
        self.draining = []
        if self.cur is not None:
            self.cur.close()
            self.cur = None

    # ------------------------------------------------------------------ polling
    def poll(self, sink: Sink) -> int:
        """Read everything appended since the last poll; returns the lines handed to ``sink``."""
        before = self.stats.lines
        now = time.time()
        if self.cur is None:
            self._open_first(sink)
        cur = self.cur
        if cur is not None:
            self._check_truncated(cur, sink)
            self._read(cur, sink)
            if cur.rewritten:  # truncated and regrown between the check and the read
                self._recover(cur, sink)
                self._read(cur, sink)
            st = _stat(self.path)
            if st is not None and (st.st_ino, st.st_dev) != (cur.ino, cur.dev):
                # create mode: the path is a new file; finish the old one first, then the new
                self.stats.rotations_create += 1
                self._read(cur, sink)
                cur.still_since = now
                self.draining.append(cur)
                self.cur = None
                self._finish_missed(sink, {(st.st_ino, st.st_dev)}, self._last_seen)
                self._open_new(sink, st)
            elif st is not None:
                self._last_seen = now
        for f in list(self.draining):
            n = self._read(f, sink)
            if n:
                f.still_since = now
            elif now - (f.still_since or now) >= self.rotate_grace:
                self._flush_pending(f, sink)
                self._forget(f)
                self.draining.remove(f)
        return self.stats.lines - before

    def _open_first(self, sink: Sink) -> None:
        st = _stat(self.path)
        saved = self._saved
        first, self._first = self._first, False
        if st is None:
            return
        fd = _open(self.path)
        if fd is None:
            return
        f = _File(fd=fd, ino=os.fstat(fd).st_ino, dev=os.fstat(fd).st_dev)
        if (f.ino, f.dev) != (st.st_ino, st.st_dev):  # rotated between stat and open
            st = os.fstat(fd)
        if saved:
            head, tail, off = bytes.fromhex(saved.get("head", "")), bytes.fromhex(saved.get("tail", "")), \
                int(saved.get("offset", 0))
            if (saved.get("ino"), saved.get("dev")) == (f.ino, f.dev) and _matches(fd, head, 0) \
                    and _matches(fd, tail, off - len(tail)) and st.st_size >= off:
                f.offset = f.pos = off
                f.head, f.tail, f.recent = head, tail, tail
                self._last_seen = float(saved.get("seen", 0))
                self.cur = f
                return
            # the saved file was rotated away while we were stopped: finish it, then the new one
            old = self._find_rotated(ino=saved.get("ino"), dev=saved.get("dev"), head=head, tail=tail,
                                     offset=off, since=float(saved.get("seen", 0)))
            if old is not None:
                self.stats.rotations_create += 1
                self._read(old, sink)
                self._flush_pending(old, sink)
                self._forget(old)
                self._finish_missed(sink, {(f.ino, f.dev)}, float(saved.get("seen", 0)))
            else:
                self.stats.lost_rotations += 1
                log.warning("event=rotated_file_not_found path=%s saved_ino=%s offset=%d", self.path,
                            saved.get("ino"), off)
            self.cur = f
            return
        if first and self.start_at == "end":  # no saved state: new lines only, from the last complete one
            f.offset = f.pos = _last_line_end(fd, st.st_size)
            f.head = os.pread(fd, FINGERPRINT, 0)
            f.tail = f.recent = os.pread(fd, min(FINGERPRINT, f.offset), f.offset - min(FINGERPRINT, f.offset))
        self.cur = f

    def _forget(self, f: _File) -> None:
        """Close a finished generation and remember it was read to its end."""
        f.close()
        self._finished = (self._finished + [(f.ino, f.dev)])[-32:]

    def _finish_missed(self, sink: Sink, exclude: set, since: float) -> None:
        """Generations we never saw: create mode rotated more than once since we last looked (a
        starved or stopped reader), or a copytruncate copy of lines written while the live file
        showed nothing read yet. They sit beside the path (not compressed yet), were written
        since ``since``, and are neither open nor already read: read whole, oldest first."""
        known = set(exclude) | set(self._finished) | {(d.ino, d.dev) for d in self.draining}
        if self.cur is not None:
            known.add((self.cur.ino, self.cur.dev))
        base = glob.escape(self.path)
        found = []
        for c in set(glob.glob(base + ".*")) | set(glob.glob(base + "-*")):
            if c.endswith(COMPRESSED):
                continue
            st = _stat(c)
            if st is None or (st.st_ino, st.st_dev) in known or st.st_mtime < since - 0.05 or not st.st_size:
                continue
            found.append((st.st_mtime, c))
        for _, c in sorted(found):
            fd = _open(c)
            if fd is None:
                continue
            fst = os.fstat(fd)
            f = _File(fd=fd, ino=fst.st_ino, dev=fst.st_dev)
            self.stats.missed_generations += 1
            self._read(f, sink)
            self._flush_pending(f, sink)
            self._forget(f)

    def _open_new(self, sink: Sink, st) -> None:
        fd = _open(self.path)
        if fd is None:
            return
        fst = os.fstat(fd)
        self.cur = _File(fd=fd, ino=fst.st_ino, dev=fst.st_dev)
        self._last_seen = time.time()
        self._read(self.cur, sink)

    def _check_truncated(self, f: _File, sink: Sink) -> None:
        try:
            size = os.fstat(f.fd).st_size
        except OSError:
            return
        if f.pos == 0 and self._last_seen > 0:
            # nothing read of this generation yet, so a shrink cannot show: lines written since
            # we last looked and copied away by a copytruncate are in a copy we never saw
            self._finish_missed(sink, {(f.ino, f.dev)}, self._last_seen)
            return
        shrunk = size < f.pos
        rewritten = not shrunk and f.offset > 0 and not (
            _matches(f.fd, f.tail, f.offset - len(f.tail)) and _matches(f.fd, f.head[:f.offset], 0))
        if shrunk or rewritten:
            self._recover(f, sink)

    def _recover(self, f: _File, sink: Sink) -> None:
        """copytruncate: read what was copied but not read yet from the copy, then start at 0."""
        self.stats.rotations_truncate += 1
        copy = self._find_rotated(ino=None, dev=None, head=f.head, tail=f.tail, offset=f.offset,
                                  since=self._last_seen, exclude_ino=f.ino)
        if copy is not None:
            self.stats.recovered_from_copy += 1
            self._read(copy, sink)
            self._flush_pending(copy, sink)
            self._forget(copy)
        else:
            self._flush_pending(f, sink)
        # truncated more than once since we last looked: the copies in between, read whole
        self._finish_missed(sink, {(f.ino, f.dev)}, self._last_seen)
        f.offset = f.pos = 0
        f.pending.clear()
        f.skipping = False
        f.rewritten = False
        f.head = f.tail = f.recent = b""

    def _find_rotated(self, *, ino, dev, head: bytes, tail: bytes, offset: int, since: float,
                      exclude_ino: int | None = None) -> _File | None:
        """The rotated generation of our file beside the path: by inode (create) or by content
        (copytruncate: same head and same bytes before ``offset``), opened at ``offset``."""
        base = Path(self.path)
        cands = set(glob.glob(glob.escape(str(base)) + ".*")) | set(glob.glob(glob.escape(str(base)) + "-*"))
        found = []
        for c in cands:
            if c.endswith(COMPRESSED):
                continue
            st = _stat(c)
            if st is None or st.st_size < offset or st.st_ino == exclude_ino:
                continue
            if ino is not None and (st.st_ino, st.st_dev) == (ino, dev):
                found.append((2, st.st_mtime, c))
            elif head or tail:
                found.append((1, st.st_mtime, c))
            elif offset == 0 and st.st_mtime >= since - 1 and st.st_size > 0:
                found.append((0, st.st_mtime, c))  # nothing read yet: the copy made since we looked
        for _, _, c in sorted(found, reverse=True):
            fd = _open(c)
            if fd is None:
                continue
            fst = os.fstat(fd)
            if _matches(fd, head[:max(offset, 0)] if offset < len(head) else head, 0) \
                    and _matches(fd, tail, offset - len(tail)):
                return _File(fd=fd, ino=fst.st_ino, dev=fst.st_dev, offset=offset, pos=offset, head=head,
                             tail=tail, recent=tail)
            os.close(fd)
        return None

    def _read(self, f: _File, sink: Sink) -> int:
        """Read ``f`` to its end, handing complete lines to ``sink``; returns the bytes read."""
        total = 0
        while True:
            k = len(f.recent)
            try:
                data = os.pread(f.fd, self.chunk, f.pos)
                # then the bytes just before pos again: unchanged, or the file was truncated and
                # rewritten under our feet (``data`` may be the new content: not used)
                if data and k and os.pread(f.fd, k, f.pos - k) != f.recent:
                    f.rewritten = True
                    return total
            except OSError:
                return total
            if not data:
                return total
            total += len(data)
            before = f.pos
            f.pos += len(data)
            prev = f.recent
            # fingerprints from the bytes read, never read again from the file: a copytruncate
            # between two reads would give the new content's bytes
            if len(f.head) == before < FINGERPRINT:
                f.head += data[:FINGERPRINT - before]
            f.recent = (prev + data[-FINGERPRINT:])[-FINGERPRINT:]
            self._consume(f, data, sink, prev)

    def _consume(self, f: _File, data: bytes, sink: Sink, prev: bytes = b"") -> None:
        """``prev``: the (up to FINGERPRINT) bytes read just before ``data``."""
        last_nl = data.rfind(b"\n")
        if last_nl < 0:  # no line end in this chunk: it all belongs to the pending line
            self._hold(f, data)
            return
        start = 0
        if f.pending or f.skipping:  # finish the pending line first
            first_nl = data.find(b"\n")
            self._hold(f, data[:first_nl])
            line = bytes(f.pending)
            f.pending.clear()
            f.skipping = False
            self._emit(line + b"\n", sink, f)
            start = first_nl + 1
        block = data[start:last_nl + 1]
        if block:
            self._emit(block, sink, f)
        f.offset = f.pos - (len(data) - last_nl - 1)
        end = last_nl + 1
        f.tail = data[end - FINGERPRINT:end] if end >= FINGERPRINT else (prev + data[:end])[-FINGERPRINT:]
        self._hold(f, data[last_nl + 1:])

    def _hold(self, f: _File, part: bytes) -> None:
        if f.skipping:
            return
        room = self.max_line - len(f.pending)
        if len(part) > room:
            f.pending += part[:room]
            f.skipping = True
            self.stats.truncated_lines += 1
        else:
            f.pending += part

    def _emit(self, block: bytes, sink: Sink, f: _File | None = None) -> None:
        """Hand out ``block`` (complete lines, ending in "\\n")."""
        n = len(block) - len(block.replace(b"\n", b""))  # 4x faster than bytes.count (memchr)
        self.stats.lines += n
        self.stats.bytes += len(block)
        if len(block) > self.max_line + 1 and _has_long_line(block, self.max_line):
            out = []
            for line in block[:-1].split(b"\n"):
                if len(line) > self.max_line:
                    self.stats.truncated_lines += 1
                    line = line[:self.max_line]
                out.append(line)
            block = b"\n".join(out) + b"\n"
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            lines = []
            for line in block[:-1].split(b"\n"):
                try:
                    lines.append(line.decode("utf-8"))
                except UnicodeDecodeError:
                    self.stats.invalid_utf8_lines += 1
                    lines.append(line.decode("utf-8", "backslashreplace"))
            text = "\n".join(lines) + "\n"
        sink(text, n)

    def _flush_pending(self, f: _File, sink: Sink) -> None:
        """A generation is finished: its unterminated last line is a line too."""
        if f.pending or f.skipping:
            line = bytes(f.pending)
            f.pending.clear()
            f.skipping = False
            self._emit(line + b"\n", sink, f)
            f.offset = f.pos
            f.tail = f.recent


def _has_long_line(block: bytes, max_line: int) -> bool:
    """Whether ``block`` (ending in "\\n") has a line longer than ``max_line`` bytes: jumps from
    line end to the last line end within max_line + 1 bytes (a few steps a MiB)."""
    p, n = 0, len(block)
    while n - p > max_line + 1:
        nl = block.rfind(b"\n", p, p + max_line + 1)
        if nl < 0:
            return True
        p = nl + 1
    return False


def _stat(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _matches(fd: int, expected: bytes, at: int) -> bool:
    if not expected:
        return True
    if at < 0:
        return False
    try:
        return os.pread(fd, len(expected), at) == expected
    except OSError:
        return False


def _last_line_end(fd: int, size: int) -> int:
    """Offset just past the last "\\n" before ``size`` (0 when there is none)."""
    pos = size
    while pos > 0:
        n = min(65536, pos)
        data = os.pread(fd, n, pos - n)
        i = data.rfind(b"\n")
        if i >= 0:
            return pos - n + i + 1
        pos -= n
    return 0


class StateFile:
    """The tailers' positions, one JSON file (``{log name: state}``), written atomically."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._last: str | None = None

    def load(self) -> dict:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError) as exc:
            log.warning("event=tail_state_unreadable path=%s error=%r", self.path, str(exc))
            return {}

    def save(self, states: dict) -> None:
        if self.path is None:
            return
        text = json.dumps(states, sort_keys=True)
        if text == self._last:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._last = text
