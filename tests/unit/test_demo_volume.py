"""The demo volume's fill files (real files in a temporary folder)."""
from __future__ import annotations

import threading

from demo.service import Volume


def write_within(vol: Volume, nbytes: int, chunk: bytes, seconds: float = 30.0) -> int:
    """vol.write in a thread; fails (instead of hanging the suite) when it does not return."""
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(vol.write(nbytes, chunk)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "Volume.write did not return (spinning on a full file)"
    return out[0]


def test_write_spreads_over_files_of_the_maximum_size(tmp_path):
    vol = Volume(tmp_path / "v", capacity=10_000, file_max=100)
    assert write_within(vol, 250, b"x" * 64) == 250
    assert [p.stat().st_size for p in vol.fill_files()] == [100, 100, 50]
    assert vol.filled() == 250 == vol.used()


def test_write_after_a_cleanup_removed_some_files_goes_on(tmp_path):
    """The cleanup playbook deleted fill files while disk-fill was active: the next file name is
    after the highest number left, never an existing full file (which spun forever at 100% CPU)."""
    vol = Volume(tmp_path / "v", capacity=10_000, file_max=100)
    write_within(vol, 300, b"x" * 64)                      # fill-00001..00003, all full
    vol.fill_files()[0].unlink()                            # fill-00002, fill-00003 left
    assert write_within(vol, 150, b"y" * 64) == 150
    names = [p.name for p in vol.fill_files()]
    assert names == ["fill-00002.bin", "fill-00003.bin", "fill-00004.bin", "fill-00005.bin"]
    assert vol.filled() == 350


def test_cleanup_frees_everything_and_writing_starts_again(tmp_path):
    vol = Volume(tmp_path / "v", capacity=10_000, file_max=100)
    write_within(vol, 120, b"z" * 50)
    assert vol.cleanup() == 120 and vol.fill_files() == []
    assert write_within(vol, 10, b"z") == 10 and vol.filled() == 10
    assert vol.write(10, b"") == 0
