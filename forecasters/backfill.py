"""Load history into Prometheus: series -> OpenMetrics text -> `promtool tsdb create-blocks-from
openmetrics` -> TSDB blocks to drop into a Prometheus data folder.

Backfilled samples are in the PAST (blocks older than the head), which Prometheus accepts;
this is the only way the forecaster ever writes samples with timestamps.
"""
from __future__ import annotations

import math
import re
import subprocess
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from core.procs import binary

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(series: Iterable[tuple[str, dict, np.ndarray, np.ndarray]], help_text: str = "Backfilled history.") -> str:
    """OpenMetrics gauge text for (metric, labels, t seconds, values) items; past timestamps only."""
    by_name: dict[str, list] = {}
    for name, labels, t, y in series:
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        by_name.setdefault(name, []).append((labels, t, y))
    now = time.time()
    out = []
    for name, items in by_name.items():
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        for labels, t, y in items:
            lab = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
            lab = "{" + lab + "}" if lab else ""
            for ts, v in zip(np.asarray(t, float), np.asarray(y, float)):
                if not math.isfinite(v):
                    continue
                if ts > now:
                    raise ValueError("refusing a future timestamp: backfill writes history only")
                out.append(f"{name}{lab} {float(v)!r} {float(ts):.3f}")
    out.append("# EOF")
    return "\n".join(out) + "\n"


def create_blocks(om_text: str, out_dir: str | Path, workdir: str | Path | None = None,
                  max_block_duration: str = "24h") -> list[Path]:
    """Run promtool to turn OpenMetrics text into blocks under out_dir; returns the block folders."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(workdir) if workdir else out_dir
    src = work / "backfill.om"
    src.write_text(om_text)
    before = {p.name for p in out_dir.iterdir()}
    r = subprocess.run([binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                        f"--max-block-duration={max_block_duration}", str(src), str(out_dir)],
                       capture_output=True, text=True)
    src.unlink(missing_ok=True)
    if r.returncode != 0:
        raise RuntimeError(f"promtool create-blocks-from openmetrics failed: {(r.stderr or r.stdout).strip()[-800:]}")
    return sorted(p for p in out_dir.iterdir() if p.is_dir() and p.name not in before)


def shift_to_end(t: np.ndarray, end: float) -> np.ndarray:
    """Shift timestamps so the last one is `end` (replay a recorded series as recent history)."""
    t = np.asarray(t, float)
    return t + (end - t[-1])
