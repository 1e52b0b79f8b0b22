"""A fresh stack starts with weeks of demo history (`demo.backfill`, docs/demo.md).

Two steps of `opsstack up`, on the FIRST start only (the Prometheus data folder is empty and
there is no `<run_dir>/backfill.json`):

1. ``raw_history`` (before Prometheus starts): demo/history.py generates the series the demo
   services and the probe exporter would have exported over the last ``demo.backfill``, with
   the labels Prometheus attaches (job, instance, service, team); forecasters/backfill.py turns
   each 18h window into a TSDB block (`promtool tsdb create-blocks-from openmetrics`) which lands in
   the data folder, so Prometheus opens with the history. The demo volumes get a sparse file
   of the size the history ends at, so the live disk series continues where it stops.
2. ``rule_history`` (once Prometheus is ready): the recording rules that other rules read over
   long windows (the 5m request/error rates under the 1d/3d/30d SLO and availability ratios)
   get their past too. The running Prometheus evaluates each rule's expression over the
   backfilled span (range queries at RULES_EVAL_INTERVAL, one per rule and window: what a rule
   evaluation at those instants gives), the results become one block per window through
   promtool, and the blocks are moved into the data folder, where Prometheus picks them up
   at its next block reload (within a minute). A rule that reads another recorded series
   gets that series' expression inlined (the history holds raw data only). Rules over data
   the history does not hold are left alone. (`promtool tsdb create-blocks-from rules` does
   the same evaluation but writes one block per rule and 2 hours: 676 blocks for 4 rules and
   14 days, which Prometheus then has to open and compact.)

The marker `<run_dir>/backfill.json` records what was done; a second `up` does nothing.
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from core.config import format_duration, view
from core.prom import Prometheus, PrometheusError
from demo.history import METRICS, WINDOW, history, windows, volume_used_at_end
from demo.service import volume_dir
from forecasters.backfill import create_blocks, openmetrics

log = logging.getLogger("opsstack.backfill")

MARKER = "backfill.json"
HISTORY_FILE = "history.dat"  # in each demo volume: the data the history says is there
RULES_EVAL_INTERVAL = 60.0
BLOCK = format_duration(WINDOW)  # one block per window of demo/history.py
_RANGE_READ = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\[")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def marker_path(resolved: dict) -> Path:
    return Path(resolved["stack"]["run_dir"]) / MARKER


def data_dir(resolved: dict) -> Path:
    return Path(resolved["stack"]["run_dir"]) / "prometheus"


def _write_marker(resolved: dict, info: dict) -> None:
    marker_path(resolved).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_marker(resolved: dict) -> dict | None:
    try:
        return json.loads(marker_path(resolved).read_text())
    except (OSError, ValueError):
        return None


def wanted(resolved: dict) -> bool:
    """The first start of a stack with the demo and `demo.backfill` > 0."""
    d = resolved["demo"]
    if not d["enabled"] or not d.get("backfill"):
        return False
    if marker_path(resolved).exists():
        return False
    data = data_dir(resolved)
    return not (data.exists() and any(data.iterdir()))


def targets(resolved: dict) -> tuple[dict[str, dict], dict | None]:
    """The target labels Prometheus attaches: per demo service (job platform) and of the probe
    exporter (job opsstack_app), as stack/prometheus_config.py configures the scrape."""
    host = resolved["stack"]["host"]
    inst = {}
    for s in resolved["platform"]["services"]:
        port = resolved["demo"]["ports"].get(s["name"], {}).get("admin")
        if port:
            inst[s["name"]] = {"job": "platform", "instance": f"{host}:{port}", "service": s["name"],
                               "team": s["team"]}
    probe = None
    if resolved["exporters"]["app"]["enabled"]:
        probe = {"job": "opsstack_app", "instance": f"{host}:{resolved['stack']['ports']['exporter_app']}"}
    return inst, probe


def _move_blocks(blocks: list[Path], dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for b in blocks:
        shutil.move(str(b), str(dest / b.name))
        out.append(b.name)
    return out


def raw_history(resolved: dict, progress: Callable[[str], None] = print, now: float | None = None) -> dict | None:
    """Step 1 (before Prometheus starts); the marker's content, or None when not wanted."""
    if not wanted(resolved):
        return None
    span = float(resolved["demo"]["backfill"])
    end = (time.time() if now is None else now) - 60.0  # strictly before the first scrape
    start = end - span
    demo, platform, stack = view(resolved, "demo"), view(resolved, "platform"), view(resolved, "stack")
    inst, probe = targets(resolved)
    rd = Path(resolved["stack"]["run_dir"])
    work = rd / "backfill-work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "blocks").mkdir(parents=True)
    progress(f"opsstack: backfilling {format_duration(span)} of demo history (first start only)")
    t0 = time.monotonic()
    blocks, samples = [], 0
    try:
        for _window, series in history(demo, platform, start, end, inst, probe):
            samples += sum(len(s.t) for s in series)
            # one window per call: one block, and promtool reads its input once
            new = create_blocks(openmetrics(s.as_tuple() for s in series), work / "blocks", workdir=work,
                                max_block_duration=BLOCK)
            blocks += _move_blocks(new, data_dir(resolved))
    except (OSError, RuntimeError, ValueError) as exc:
        # no half history: the stack starts without any (as with backfill 0) and says why
        for b in blocks:
            shutil.rmtree(data_dir(resolved) / b, ignore_errors=True)
        log.warning("event=backfill_failed error=%r", str(exc))
        progress(f"opsstack: demo history backfill failed, starting without it: {exc}")
        _write_marker(resolved, {"start": start, "end": end, "span": span, "rules": "skipped",
                                 "error": str(exc)[:500]})
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in inst:  # the live disk series continues where the history ends
        vol = volume_dir(platform, stack, name)
        vol.mkdir(parents=True, exist_ok=True)
        with open(vol / HISTORY_FILE, "wb") as f:
            f.truncate(volume_used_at_end(demo))  # sparse: counts as used, costs no disk
    info = {"start": start, "end": end, "span": span, "samples": samples, "blocks": blocks,
            "seconds": round(time.monotonic() - t0, 1), "rules": "pending"}
    _write_marker(resolved, info)
    log.info("event=backfill_raw samples=%d blocks=%d seconds=%.1f", samples, len(blocks), info["seconds"])
    progress(f"  history {samples} samples in {len(blocks)} blocks ({info['seconds']:.0f}s)")
    return info


# ---------------------------------------------------------------- recording rules
def recording_rules(rule_files: list[Path]) -> dict[str, str]:
    """record name -> expr of every recording rule in the files (first definition wins)."""
    out: dict[str, str] = {}
    for f in rule_files:
        doc = yaml.safe_load(f.read_text()) or {}
        for g in doc.get("groups") or []:
            for r in g.get("rules") or []:
                if "record" in r and r["record"] not in out and not r.get("labels"):
                    out[r["record"]] = str(r["expr"])
    return out


def _references(expr: str, names) -> set[str]:
    return {m.group(0) for m in _IDENT.finditer(expr) if m.group(0) in names}


def inline(expr: str, rules: dict[str, str], depth: int = 0) -> str | None:
    """``expr`` with every bare reference to a recorded series replaced by its expression
    (recursively); None when a reference carries label matchers or a range (not inlinable)."""
    if depth > 10:
        return None
    out, pos = [], 0
    for m in _IDENT.finditer(expr):
        name = m.group(0)
        if name not in rules:
            continue
        rest = expr[m.end():].lstrip()
        if rest.startswith("{") or rest.startswith("["):
            return None
        sub = inline(rules[name], rules, depth + 1)
        if sub is None:
            return None
        out.append(expr[pos:m.start()])
        out.append(f"({sub})")
        pos = m.end()
    out.append(expr[pos:])
    return "".join(out)


def rules_to_backfill(rules: dict[str, str], available: set[str]) -> dict[str, str]:
    """The recorded series other rules read over a range (the inputs of the 1d/3d/30d windows),
    inlined, whose raw inputs are all in ``available`` (the backfilled metric names)."""
    read_over_range = set()
    for expr in rules.values():
        read_over_range |= {m.group(1) for m in _RANGE_READ.finditer(expr) if m.group(1) in rules}
    out = {}
    for name in sorted(read_over_range):
        expr = inline(rules[name], rules)
        if expr is None:
            continue
        metrics = {m.group(0) for m in _IDENT.finditer(expr)
                   if m.group(0).startswith(("opsstack_", "process_"))}
        if metrics and metrics <= available:
            out[name] = expr
    return out


def rule_history(resolved: dict, progress: Callable[[str], None] = print,
                 available: set[str] | None = None) -> list[str]:
    """Step 2 (Prometheus is up on the backfilled data): blocks of the recorded series, moved
    into the data folder. Returns the block names (empty when there was nothing to do)."""
    info = read_marker(resolved)
    if not info or info.get("rules") != "pending":
        return []
    rd = Path(resolved["stack"]["run_dir"])
    rules = recording_rules(sorted((rd / "rules").glob("*.yml")))
    if available is None:
        available = set(METRICS)
    chosen = rules_to_backfill(rules, available)
    blocks: list[str] = []
    if chosen:
        prom = Prometheus(f"http://{resolved['stack']['host']}:{resolved['stack']['ports']['prometheus']}",
                                   timeout=300)
        work = rd / "backfill-work"
        shutil.rmtree(work, ignore_errors=True)
        (work / "blocks").mkdir(parents=True)
        progress(f"opsstack: backfilling {len(chosen)} recording rules over the demo history")
        t0 = time.monotonic()
        step = RULES_EVAL_INTERVAL
        try:
            for a, b in windows(info["start"], info["end"]):
                first, last = math.ceil(a / step) * step, b - 0.001
                if last < first:
                    continue
                series = []
                for name, expr in chosen.items():
                    for s in prom.query_range(expr, first, last, step)["result"]:
                        labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
                        t = np.array([float(v[0]) for v in s["values"]])
                        y = np.array([float(v[1]) for v in s["values"]])
                        series.append((name, labels, t, y))
                if series:
                    new = create_blocks(openmetrics(series), work / "blocks", workdir=work,
                                        max_block_duration=BLOCK)
                    blocks += _move_blocks(new, data_dir(resolved))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        progress(f"  rules {', '.join(chosen)}: {len(blocks)} blocks ({time.monotonic() - t0:.0f}s)")
    info.update(rules="done", rule_blocks=blocks, recorded=sorted(chosen))
    _write_marker(resolved, info)
    return blocks


def after_start(resolved: dict, progress: Callable[[str], None] = print) -> None:
    """Step 2 without failing `up`: a rule backfill that fails leaves live data untouched."""
    try:
        rule_history(resolved, progress)
    except (OSError, RuntimeError, PrometheusError) as exc:
        log.warning("event=backfill_rules_failed error=%r", str(exc))
        progress(f"opsstack: recording-rule backfill failed (live data is fine): {exc}")
        info = read_marker(resolved) or {}
        info.update(rules="failed", error=str(exc)[:500])
        _write_marker(resolved, info)

