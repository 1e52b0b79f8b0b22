"""The log tailer against the real logrotate (Debian package), both modes, while a writer
appends: every line written is handed out exactly once.

- create: logrotate renames the file and creates a new one; the writer opens the path for
  each line (as `>>` does), so a write may still land in the renamed file. A tailer restart
  (state persisted through StateFile) and a rotation while it is stopped are part of the run.
- copytruncate: logrotate copies then truncates in place. A line written between its copy and
  its truncate is in neither file (logrotate's documented caveat, nothing a reader can
  recover), so the writer pauses around that window (prerotate/postrotate scripts); it
  appends before and after it. The tailer polls slowly so that lines copied but not yet read
  must come from the copy.

Rotations come every 2,000 lines here, not hours apart: before each one the test waits until
the reader has read what was written before the previous one, so that a reader starved by a
loaded machine never falls two rotations behind (past the delaycompress'd copy).
"""
from __future__ import annotations

import collections
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from exporters.security.tail import StateFile, Tailer
from tests.support.wait import wait_for

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not os.path.exists(LOGROTATE), reason="logrotate not installed "
                                 "(scripts/install-deps.sh --test)")]

ROTATE_EVERY = 2_000
ROTATIONS = 5


class Writer(threading.Thread):
    def __init__(self, path: Path, pause_dir: Path):
        super().__init__(daemon=True)
        self.path, self.pause, self.paused = path, pause_dir / "pause", pause_dir / "paused"
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():  # writes until told to stop (rotations happen meanwhile)
            if self.pause.exists():
                self.paused.touch()
                while self.pause.exists():
                    time.sleep(0.002)
                self.paused.unlink(missing_ok=True)
            with open(self.path, "ab") as fh:  # opened per line, like `echo >> file`
                fh.write(f"line {self.count:06d} {'x' * (self.count % 97)}\n".encode())
            self.count += 1
            if self.count % 20 == 0:
                time.sleep(0.001)  # pace the writer: a few thousand lines a second


class Reader:
    """A tailer polling in a thread; ``stop()`` keeps its state for a restart."""

    def __init__(self, path: Path, state: dict | None, interval: float):
        self.tailer = Tailer(path, state=state, start_at="beginning", rotate_grace=0.3)
        self.seen: collections.Counter = collections.Counter()
        self.interval = interval
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _sink(self, text: str, n: int) -> None:
        for line in text.splitlines():
            self.seen[line.split(" ")[1]] += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tailer.poll(self._sink)
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._th.join(10)
        state = self.tailer.state()
        self.tailer.close()
        return state


def rotate(conf: Path, state: Path) -> None:
    r = subprocess.run([LOGROTATE, "-s", str(state), "-f", str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def write_conf(tmp: Path, log: Path, mode: str) -> Path:
    conf = tmp / "logrotate.conf"
    extra = ("copytruncate\n    prerotate\n        touch {d}/pause; while [ ! -e {d}/paused ]; do sleep 0.01; done\n"
             "    endscript\n    postrotate\n        rm -f {d}/pause\n    endscript\n").format(d=tmp) \
        if mode == "copytruncate" else "create 0644\n"
    conf.write_text(f"{log} {{\n    rotate 50\n    missingok\n    notifempty\n    compress\n    delaycompress\n"
                    f"    {extra}}}\n")
    os.chmod(conf, 0o644)
    return conf


def check_exact(seen: collections.Counter, total: int) -> None:
    twice = [k for k, v in seen.items() if v > 1]
    missing = [f"{i:06d}" for i in range(total) if f"{i:06d}" not in seen]
    assert not twice, f"lines handed out twice: {twice[:10]}"
    assert not missing, f"lines never handed out: {missing[:10]} ({len(missing)})"
    assert sum(seen.values()) == total


def written(writer: Writer, n: int) -> None:
    wait_for(lambda: writer.count >= n, timeout=120, interval=0.005, what=f"{n} lines written")


def caught_up(seen, before: int) -> None:
    """Rotations hours apart, compressed: the reader has read everything written before the
    previous rotation (under load a starved reader could otherwise fall two rotations behind,
    past the delaycompress'd copy: a test-speed artefact, not the case being tested)."""
    wait_for(lambda: seen() >= before, timeout=60, interval=0.01, what=f"reader past line {before}")


def finish(writer: Writer) -> int:
    written(writer, writer.count + 200)  # the writer goes on past the last rotation
    writer.stop.set()
    writer.join(60)
    assert not writer.is_alive()
    return writer.count


def rotated_files(log: Path) -> list[Path]:
    return sorted(p for p in log.parent.iterdir() if p.name.startswith(log.name + "."))


def test_create_mode_with_a_restart_and_a_rotation_while_stopped(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    conf, lr_state = write_conf(tmp_path, log, "create"), tmp_path / "logrotate.state"
    store = StateFile(tmp_path / "tail-state.json")
    writer = Writer(log, tmp_path)
    reader = Reader(log, None, interval=0.01)
    writer.start()
    total_seen: collections.Counter = collections.Counter()
    last = 0
    for k in range(1, ROTATIONS + 1):
        written(writer, k * ROTATE_EVERY)
        caught_up(lambda: sum(reader.seen.values()) + sum(total_seen.values()), last)
        if k == 3:  # stop the tailer, rotate while it is stopped, start it again from its state
            store.save({"access": reader.stop()})
            total_seen += reader.seen
            rotate(conf, lr_state)
            written(writer, writer.count + 300)
            reader = Reader(log, store.load()["access"], interval=0.01)
        else:
            rotate(conf, lr_state)
        last = writer.count  # after the rotation: every line of the rotated generation is below it
    total = finish(writer)
    try:
        wait_for(lambda: sum(reader.seen.values()) + sum(total_seen.values()) >= total
                 and not reader.tailer.draining, timeout=60, what="every line read")
    except TimeoutError:
        reader.stop()
        check_exact(total_seen + reader.seen, total)  # says which lines are missing or twice
        raise
    reader.stop()
    total_seen += reader.seen
    check_exact(total_seen, total)
    assert len(rotated_files(log)) == ROTATIONS  # logrotate did rotate (.1, .2.gz, ...)
    assert any(p.name.endswith(".gz") for p in rotated_files(log))


def test_copytruncate_mode(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    conf, lr_state = write_conf(tmp_path, log, "copytruncate"), tmp_path / "logrotate.state"
    writer = Writer(log, tmp_path)
    reader = Reader(log, None, interval=0.25)  # slow: rotations catch it with unread lines
    writer.start()
    last = 0
    for k in range(1, ROTATIONS + 1):
        written(writer, k * ROTATE_EVERY)
        caught_up(lambda: sum(reader.seen.values()), last)
        rotate(conf, lr_state)
        last = writer.count  # after the copy: every line of the copied generation is below it
    total = finish(writer)
    try:
        wait_for(lambda: sum(reader.seen.values()) >= total, timeout=60, what="every line read")
    except TimeoutError:
        reader.stop()
        print("tailer stats:", reader.tailer.stats, "rotated files:",
              [(p.name, p.stat().st_size) for p in rotated_files(log)])
        check_exact(reader.seen, total)  # says which lines are missing or twice
        raise
    reader.stop()
    check_exact(reader.seen, total)
    st = reader.tailer.stats
    assert st.rotations_truncate + st.missed_generations == ROTATIONS
    assert len(rotated_files(log)) == ROTATIONS
