"""The log tailer (exporters/security/tail.py): partial lines, huge lines, invalid UTF-8,
rotation by rename (create) and by truncation (copytruncate), state across restarts.
The real logrotate runs in tests/integration/test_security_logrotate.py."""
from __future__ import annotations

import os

from exporters.security.tail import StateFile, Tailer


class Sink:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str, n: int) -> None:
        got = text.split("\n")[:-1]
        assert len(got) == n and text.endswith("\n")
        self.lines += got


def append(path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def test_partial_line_waits_for_its_newline(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"")
    t, s = Tailer(p, start_at="beginning"), Sink()
    append(p, b"one\ntw")
    t.poll(s)
    assert s.lines == ["one"]
    assert t.state()["offset"] == 4
    append(p, b"o\nthree")
    t.poll(s)
    append(p, b"\n")
    t.poll(s)
    assert s.lines == ["one", "two", "three"]
    t.close()


def test_huge_line_is_cut_not_dropped_and_bad_utf8_escaped(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"")
    t, s = Tailer(p, start_at="beginning", max_line=100, chunk=4096), Sink()
    huge = b"x" * 10_000
    append(p, b"a\n" + huge + b"\nb\xff\xfec\n")
    t.poll(s)
    assert s.lines == ["a", "x" * 100, "b\\xff\\xfec"]
    assert t.stats.truncated_lines == 1 and t.stats.invalid_utf8_lines == 1
    # a huge line arriving in pieces over several polls (and chunks) is cut once too
    for _ in range(5):
        append(p, b"y" * 3000)
        t.poll(s)
    append(p, b"\nz\n")
    t.poll(s)
    assert s.lines[3:] == ["y" * 100, "z"]
    assert t.stats.truncated_lines == 2
    t.close()


def test_start_at_end_skips_history_then_a_new_file_is_read_whole(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"old1\nold2\npart")
    t, s = Tailer(p, start_at="end"), Sink()
    t.poll(s)
    append(p, b"ial\nnew\n")
    t.poll(s)
    assert s.lines == ["partial", "new"]
    t.close()


def test_create_rotation_finishes_the_old_file_first(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"1\n2\n")
    t, s = Tailer(p, start_at="beginning", rotate_grace=0), Sink()
    t.poll(s)
    append(p, b"3\n4")  # unread, and an unterminated last line
    os.rename(p, str(p) + ".1")
    p.write_bytes(b"5\n")
    t.poll(s)  # the old file stays still for rotate_grace (0): its last line goes out, it closes
    assert s.lines == ["1", "2", "3", "5", "4"]
    assert t.stats.rotations_create == 1 and not t.draining
    t.close()


def test_late_writer_of_the_old_file_is_still_read_during_the_grace(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"1\n")
    t, s = Tailer(p, start_at="beginning", rotate_grace=3600), Sink()
    t.poll(s)
    os.rename(p, str(p) + ".1")
    p.write_bytes(b"new\n")
    t.poll(s)
    append(str(p) + ".1", b"late\n")   # the writer had not reopened yet
    t.poll(s)
    assert sorted(s.lines) == ["1", "late", "new"]
    t.close()


def test_copytruncate_reads_the_unread_part_from_the_copy(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"a1\na2\n")
    t, s = Tailer(p, start_at="beginning"), Sink()
    t.poll(s)
    append(p, b"a3\na4\n")
    (tmp_path / "a.log.1").write_bytes(p.read_bytes())  # the copy
    with open(p, "r+b") as fh:
        fh.truncate(0)
    append(p, b"b1-a-longer-line-than-before\nb2\n")  # grows past the old offset before we look
    t.poll(s)
    assert s.lines == ["a1", "a2", "a3", "a4", "b1-a-longer-line-than-before", "b2"]
    assert t.stats.rotations_truncate == 1 and t.stats.recovered_from_copy == 1
    t.close()


def test_copytruncate_without_a_copy_starts_again_at_zero(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"a1\na2\n")
    t, s = Tailer(p, start_at="beginning"), Sink()
    t.poll(s)
    with open(p, "r+b") as fh:
        fh.truncate(0)
    append(p, b"b\n")
    t.poll(s)
    assert s.lines == ["a1", "a2", "b"]
    t.close()


def test_state_survives_a_restart_and_a_rotation_while_stopped(tmp_path):
    p = tmp_path / "a.log"
    store = StateFile(tmp_path / "state.json")
    p.write_bytes(b"1\n2\n")
    t, s = Tailer(p, start_at="beginning"), Sink()
    t.poll(s)
    store.save({"a": t.state()})
    t.close()
    # restart without rotation: goes on from the offset
    append(p, b"3\n")
    t, s2 = Tailer(p, state=store.load()["a"]), Sink()
    t.poll(s2)
    assert s2.lines == ["3"]
    store.save({"a": t.state()})
    t.close()
    # rotated (create) while stopped: the rest of the old file, then the new one
    append(p, b"4\n")
    os.rename(p, str(p) + ".1")
    p.write_bytes(b"5\n")
    t, s3 = Tailer(p, state=store.load()["a"]), Sink()
    t.poll(s3)
    assert s3.lines == ["4", "5"]
    t.close()


def test_a_new_file_on_a_reused_inode_is_read_from_zero(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"first generation line\n")
    t, s = Tailer(p, start_at="beginning"), Sink()
    t.poll(s)
    state = t.state()
    t.close()
    with open(p, "r+b") as fh:  # same inode, other content (as if the inode were reused)
        fh.truncate(0)
        fh.write(b"second generation, longer than the first one\n")
    t, s2 = Tailer(p, state=state), Sink()
    t.poll(s2)
    assert s2.lines == ["second generation, longer than the first one"]
    t.close()


def test_copytruncate_while_stopped_reads_the_rest_from_the_copy(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"1\n2\n")
    t, s = Tailer(p, start_at="beginning"), Sink()
    t.poll(s)
    state = t.state()
    t.close()
    append(p, b"3\n")
    (tmp_path / "a.log.1").write_bytes(p.read_bytes())
    with open(p, "r+b") as fh:
        fh.truncate(0)
    append(p, b"4 a line longer than everything before it\n")
    t, s2 = Tailer(p, state=state), Sink()
    t.poll(s2)
    assert s2.lines == ["3", "4 a line longer than everything before it"]
    t.close()


def test_two_create_rotations_between_polls_lose_nothing(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"a1\n")
    t, s = Tailer(p, start_at="beginning", rotate_grace=0), Sink()
    t.poll(s)
    append(p, b"a2\n")
    os.rename(p, str(p) + ".1")          # first rotation
    p.write_bytes(b"b1\nb2\n")
    os.rename(str(p) + ".1", str(p) + ".2")
    os.rename(p, str(p) + ".1")          # second rotation before the reader looked again
    p.write_bytes(b"c1\n")
    t.poll(s)
    assert sorted(s.lines) == ["a1", "a2", "b1", "b2", "c1"]
    assert t.stats.missed_generations == 1
    append(p, b"c2\n")
    os.rename(p, str(p) + ".x")          # an ordinary rotation later: no generation read twice
    p.write_bytes(b"d1\n")
    t.poll(s)
    assert sorted(s.lines) == ["a1", "a2", "b1", "b2", "c1", "c2", "d1"]
    t.close()


def test_copytruncate_of_lines_written_while_nothing_was_read_yet(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"")
    t, s = Tailer(p, start_at="beginning"), Sink()
    t.poll(s)                                            # looked: empty
    append(p, b"x1\nx2\n")                               # written, then copied away before we look
    (tmp_path / "a.log.1").write_bytes(p.read_bytes())
    with open(p, "r+b") as fh:
        fh.truncate(0)
    append(p, b"y1\n")
    t.poll(s)
    assert sorted(s.lines) == ["x1", "x2", "y1"]
    t.poll(s)
    assert sorted(s.lines) == ["x1", "x2", "y1"]        # the copy is not read again
    t.close()
