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


def _fit_job(model: str, n_fits: int, seed: int) -> tuple[int, float]:
    """Fit `model` n_fits times on 14 days of 5-minute data; returns (fits, CPU seconds)."""
    import logging

    import numpy as np

    from forecasters.models import FitContext, make_model

    logging.disable(logging.WARNING)
    rng = np.random.default_rng(seed)
    t = 1.7e9 + np.arange(0, 14 * 86400, 300.0)
    y = 50 + 10 * np.sin(2 * np.pi * t / 86400) + 0.00001 * (t - t[0]) + rng.normal(0, 2, len(t))
    ctx = FitContext(step=300.0)
    import resource

    def cpu() -> float:  # this process + finished children (Prophet runs cmdstan as a child process)
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + ch.ru_utime + ch.ru_stime

    make_model(model, ctx).fit(t[:500], y[:500])  # warm-up: imports, Stan model load
    c0 = cpu()
    for i in range(n_fits):
        make_model(model, ctx).fit(t, y + i * 0.01).predict(np.arange(1, 289) * 300.0)
    return n_fits, cpu() - c0


def throughput(workers: int, n_fits: int = 20) -> dict:
    """Fits per minute of each model family on `workers` processes (wall) and per CPU-minute."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out = {}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        list(ex.map(_fit_job, ["prophet"] * workers, [0] * workers, range(workers)))  # start + warm the workers
        for model in ("prophet", "prophet_flat", "seasonal_ses", "linear_trend"):
            t0 = time.perf_counter()
            res = list(ex.map(_fit_job, [model] * workers, [n_fits] * workers, range(workers)))
            wall = time.perf_counter() - t0
            fits = sum(r[0] for r in res)
            cpu = sum(r[1] for r in res)
            out[model] = {"fits_per_min_wall": fits / wall * 60, "fits_per_cpu_min": fits / cpu * 60 if cpu else None}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(evaluate.DATA_DIR))
    p.add_argument("--series", default="*", help="glob on the file name (default: all)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--csv", help="write every (series, cutoff, method) row here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ablation", action="store_true",
                   help="also run our forecaster without the Prophet candidates (does Prophet earn its place?)")
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
    if a.ablation:
        from forecasters.models import DEFAULT_CANDIDATES

        no_prophet = tuple(m for m in DEFAULT_CANDIDATES if not m.startswith("prophet"))
        t0 = time.perf_counter()
        abl = evaluate.summarize(evaluate.run(paths, workers=a.workers, progress=not a.no_progress,
                                              with_prophet_default=False, models=no_prophet, baselines=False))
        o2 = abl["overall"]["opsstack"]
        print(f"\nablation: our forecaster WITHOUT the Prophet candidates: mean MASE {o2['mase']:.3f} "
              f"(with Prophet {ours:.3f}), coverage {o2['coverage']:.3f}, {time.perf_counter() - t0:.0f}s")
        summary["ablation_without_prophet"] = o2
    tp = throughput(a.workers)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"\nfit throughput on 14 days of 5-minute data (4032 points) + a 288-step forecast, {a.workers} worker "
          f"process(es), 1-min load average {load:.1f} on {os.cpu_count()} CPUs:")
    for model, v in tp.items():
        print(f"  {model:<14} {v['fits_per_min_wall']:>9.0f} fits/min (wall)   "
              f"{v['fits_per_cpu_min']:>9.0f} fits per CPU-minute")
    summary["throughput"] = tp
    summary["load_average"] = load
    summary["wall_seconds"] = wall
    summary["workers"] = a.workers
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2))
    if a.csv:
        evaluate.write_csv(results, a.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
