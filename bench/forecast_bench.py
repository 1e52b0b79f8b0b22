"""Forecast accuracy and throughput on the NAB series (the protocol of datasets/nab/README.md).

    .venv/bin/python bench/forecast_bench.py [--workers 2] [--series GLOB] [--json out.json]

Prints the per-series MASE / 80%-coverage table of our forecaster (backtest-selected model,
calibrated band) against the baselines (naive, seasonal-naive, linear trend) and Prophet with
its defaults, the mean MASE ratios ours/baseline, and throughput: model fits per minute and
whole target forecasts per minute on this machine, all measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forecasters import evaluate  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(evaluate.DATA_DIR))
    p.add_argument("--series", default="*", help="glob on the file name (default: all)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--csv", help="write every (series, cutoff, method) row here")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    paths = evaluate.list_series(a.data, a.series)
    if not paths:
        print(f"no series matching {a.series!r} under {a.data}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = evaluate.run(paths, workers=a.workers, progress=not a.no_progress)
    wall = time.perf_counter() - started
    summary = evaluate.summarize(results)
    print(evaluate.format_table(summary))
    fits = summary["fits"]
    print(f"\n{len(paths)} series x {len(evaluate.CUTOFFS)} cutoffs = {len(results)} forecasts in {wall:.1f}s "
          f"on {a.workers} worker(s): {fits / wall * 60:.0f} model fits/min, "
          f"{len(results) / wall * 60:.1f} target forecasts/min (each: backtest of every candidate + final fit "
          f"+ nowcast, plus one default-Prophet fit for the peer column)")
    o = summary["overall"]
    ours = o["opsstack"]["mase"]
    beats = all(ours < o[b]["mase"] for b in evaluate.BASELINES)
    print(f"goal: lower mean MASE than every baseline: {'yes' if beats else 'NO'}; "
          f"coverage {o['opsstack']['coverage']:.3f} (goal 0.75-0.85)")
    summary["wall_seconds"] = wall
    summary["workers"] = a.workers
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2))
    if a.csv:
        evaluate.write_csv(results, a.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
