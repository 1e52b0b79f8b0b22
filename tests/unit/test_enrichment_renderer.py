"""The enrichment's graph renderer (a spawned process of its own) never outlives the process
that started it: that one may end with os._exit or be killed without stopping its pool, and the
renderer must not wait for work forever as an orphan."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, sys
from webhook_receiver import enrichment as E
pool = E._render_pool()
assert pool.submit(os.getpid).result(timeout=120) != os.getpid()   # it runs, in its own process
open(sys.argv[1], "w").write(" ".join(map(str, pool._processes)))
os._exit(0)   # no pool shutdown: as a killed or hard-exiting parent leaves it
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended (waiting for init to reap it)


def test_the_renderer_ends_when_its_parent_is_gone(tmp_path):
    # no pipes to the child: the renderer inherits them, and a test waiting for their end would
    # hang on an orphan instead of failing
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "pids")], cwd=ROOT, timeout=300,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert out.returncode == 0
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 1
    wait_for(lambda: not _alive(pids[0]), timeout=60, what="the orphaned renderer to end")
