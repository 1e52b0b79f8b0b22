"""Forecast accuracy and throughput on the NAB series (the protocol of datasets/nab/README.md).

    .venv/bin/python bench/forecast_bench.py [--workers 2] [--series GLOB] [--json out.json]
                                             [--no-statsforecast] [--no-prophet-default]

Prints the per-series MASE / 80%-coverage table of our forecaster (backtest-selected model,
calibrated band) against the baselines (naive, seasonal-naive, linear trend), Prophet with
its defaults and Nixtla statsforecast's AutoETS, AutoTheta, MSTL and AutoARIMA (season length
288 rows, their own 80% intervals), the mean MASE ratios ours/peer, each peer's fit time, and
throughput: model fits per minute and whole target forecasts per minute of our forecaster alone
(model selection on) on this machine, all measured in the same run.

statsforecast is a peer only, never a dependency. It declares pandas<3 (the project pins 3.1.1),
so install it, then put the pin back (its numpy model API runs on pandas 3.1.1):

    .venv/bin/pip install statsforecast==2.1.1 && .venv/bin/pip install pandas==3.1.1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

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


# AutoARIMA is a peer only on request (--sf-models): with season length 288 one fit did not finish
# within minutes on the 2-core box (seasonal ARIMA with m = 288), see docs/forecasting.md
SF_MODELS = ("AutoETS", "AutoTheta", "MSTL")


def _sf_job(path: str, cutoff: float, models: tuple[str, ...]) -> tuple[str, float, dict]:
    """statsforecast peers on one (series, cutoff) of the protocol: their point forecast and
    their own 80% interval (level=[80]), plus the CPU seconds of each fit + forecast."""
    import warnings

    import numpy as np

    import statsforecast.models as sfm
    from forecasters.engine import regularize
    from forecasters.metrics import coverage, mase, mase_scale, smape

    t, y = evaluate.read_csv(path)
    t, y = regularize(t, y)
    n = len(y)
    c = int(n * cutoff)
    yt = y[:c]
    h = min(evaluate.H, n - c)
    truth = y[c:c + h]
    scale = mase_scale(yt, evaluate.M)
    m = evaluate.M if len(yt) >= 2 * evaluate.M else 1
    out = {}
    for name in models:
        model = getattr(sfm, name)(season_length=m)
        c0 = time.process_time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = model.forecast(y=yt.astype(float), h=h, level=[80])
            f, lo, hi = (np.asarray(r[k], float) for k in ("mean", "lo-80", "hi-80"))
            out[f"sf_{name.lower()}"] = {"mase": mase(truth, f, scale), "smape": smape(truth, f),
                                         "coverage": coverage(truth, lo, hi),
                                         "seconds": time.process_time() - c0}
        except Exception as exc:  # a peer that fails on a series scores NaN there (reported)
            out[f"sf_{name.lower()}"] = {"mase": float("nan"), "smape": float("nan"), "coverage": float("nan"),
                                         "seconds": time.process_time() - c0, "error": repr(exc)[:200]}
    return Path(path).stem, cutoff, out


def statsforecast_peers(paths, workers: int, models=SF_MODELS, progress: bool = True,
                        cache: str | None = None) -> dict:
    """(series, cutoff) -> {sf_model: scores} for every task of the protocol.

    cache: a JSON-lines file of finished tasks (series, cutoff, models, statsforecast version):
    the peers are deterministic and slow (AutoETS ~10-20 CPU-s per fit), so an interrupted run
    resumes; their CPU seconds are the ones measured when the task ran."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import statsforecast
    from tqdm import tqdm

    version = statsforecast.__version__
    wanted = {f"sf_{m.lower()}": m for m in models}
    names = {Path(p).stem for p in paths}
    res: dict = {}
    if cache and Path(cache).exists():        # one line per (series, cutoff, model)
        for line in Path(cache).read_text().splitlines():
            d = json.loads(line)
            if d["version"] == version and d["model"] in wanted and d["series"] in names:
                res.setdefault((d["series"], d["cutoff"]), {})[d["model"]] = d["out"]
    tasks = []
    for p in paths:
        for c in evaluate.CUTOFFS:
            have = res.get((Path(p).stem, c), {})
            todo = tuple(m for k, m in wanted.items() if k not in have)
            if todo:
                tasks.append((str(p), c, todo))
    bar = tqdm(total=len(tasks), desc="statsforecast", unit="fc", disable=not progress, dynamic_ncols=True)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(_sf_job, p, c, todo) for p, c, todo in tasks]
        for fu in as_completed(futs):
            series, cutoff, out = fu.result()
            res.setdefault((series, cutoff), {}).update(out)
            if cache:
                with open(cache, "a") as f:
                    for name, v in out.items():
                        f.write(json.dumps({"series": series, "cutoff": cutoff, "model": name,
                                            "version": version, "out": v}) + "\n")
            bar.update(1)
    bar.close()
    return res


def ours_throughput(paths, workers: int) -> dict:
    """Our forecaster alone (backtest of every default candidate + choice + final fit + band +
    nowcast) on every task of the protocol: whole target forecasts per minute (wall, `workers`
    processes) and per CPU-minute."""
    t0 = time.perf_counter()
    res = evaluate.run(paths, workers=workers, progress=False, with_prophet_default=False, baselines=False)
    wall = time.perf_counter() - t0
    cpu = sum(r.cpu for r in res)       # each task's CPU seconds inside its worker
    return {"targets": len(res), "wall_seconds": wall, "targets_per_min_wall": len(res) / wall * 60,
            "task_seconds_sum": cpu, "targets_per_worker_min": len(res) / cpu * 60 if cpu else None,
            "fits": sum(r.fits for r in res)}


def throughput(workers: int, n_fits: int = 20) -> dict:
    """Fits per minute of each model family on `workers` processes (wall) and per CPU-minute."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out = {}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        list(ex.map(_fit_job, ["prophet"] * workers, [0] * workers, range(workers)))  # start + warm the workers
        for model in ("prophet", "prophet_flat", "seasonal_ses", "theta", "damped_trend", "linear_trend"):
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
    p.add_argument("--no-prophet-default", action="store_true", help="skip the default-Prophet peer column")
    p.add_argument("--no-statsforecast", action="store_true", help="skip the statsforecast peers")
    p.add_argument("--sf-models", default=",".join(SF_MODELS), help="statsforecast models (comma-separated)")
    p.add_argument("--sf-cache", help="JSON-lines cache of finished statsforecast tasks (resume a long run)")
    p.add_argument("--sf-only", action="store_true", help="only run the statsforecast peers (fills --sf-cache)")
    p.add_argument("--ablation", action="store_true",
                   help="also run our forecaster with the Prophet candidates added (do they earn their place?)")
    a = p.parse_args(argv)
    paths = evaluate.list_series(a.data, a.series)
    if not paths:
        print(f"no series matching {a.series!r} under {a.data}", file=sys.stderr)
        return 2
    if a.sf_only:
        statsforecast_peers(paths, a.workers, tuple(m for m in a.sf_models.split(",") if m),
                            progress=not a.no_progress, cache=a.sf_cache)
        return 0
    started = time.perf_counter()
    results = evaluate.run(paths, workers=a.workers, progress=not a.no_progress,
                           with_prophet_default=not a.no_prophet_default)
    wall = time.perf_counter() - started
    sf_time = {}
    if not a.no_statsforecast:
        try:
            import statsforecast  # noqa: F401  (a peer only: see the module docstring)
        except ImportError:
            print("statsforecast not installed (see this script's docstring to install it): no statsforecast peers", file=sys.stderr)
        else:
            models = tuple(m for m in a.sf_models.split(",") if m)
            sf = statsforecast_peers(paths, a.workers, models, progress=not a.no_progress, cache=a.sf_cache)
            for r in results:
                for name, v in sf.get((r.series, r.cutoff), {}).items():
                    r.results[name] = {k: v[k] for k in ("mase", "smape", "coverage")}
                    sf_time.setdefault(name, []).append(v["seconds"])
                    if "error" in v:
                        print(f"{name} failed on {r.series} @ {r.cutoff}: {v['error']}", file=sys.stderr)
    summary = evaluate.summarize(results)
    print(evaluate.format_table(summary))
    fits = summary["fits"]
    print(f"\n{len(paths)} series x {len(evaluate.CUTOFFS)} cutoffs = {len(results)} forecasts in {wall:.1f}s "
          f"on {a.workers} worker(s) (ours + baselines{'' if a.no_prophet_default else ' + default Prophet'})")
    o = summary["overall"]
    ours = o["opsstack"]["mase"]
    beats = all(ours < o[b]["mase"] for b in evaluate.BASELINES)
    print(f"goal: lower mean MASE than every baseline: {'yes' if beats else 'NO'}")
    sf_names = [m for m in o if m.startswith("sf_")]
    if sf_names:
        print("statsforecast peers (season length 288, their own 80% intervals):")
        for m in sf_names:
            secs = sf_time.get(m, [])
            print(f"  {m:<14} mean MASE {o[m]['mase']:.3f}  ours/peer {ours / o[m]['mase']:.3f}  "
                  f"coverage {o[m]['coverage']:.3f}  fit+forecast {np.mean(secs):.2f} CPU-s mean, "
                  f"{np.max(secs):.1f} max")
        best = min(sf_names, key=lambda m: o[m]["mase"])
        ratio = ours / o[best]["mase"]
        print(f"goal: mean MASE >= 5% below the best statsforecast model ({best}): ratio {ratio:.3f} "
              f"-> {'yes' if ratio <= 0.95 else 'NO'}")
        summary["statsforecast"] = {m: {"mase": o[m]["mase"], "coverage": o[m]["coverage"],
                                        "ours_over_peer": ours / o[m]["mase"],
                                        "cpu_seconds_mean": float(np.mean(sf_time.get(m, [np.nan]))),
                                        "cpu_seconds_max": float(np.max(sf_time.get(m, [np.nan])))}
                                    for m in sf_names}
    covs = {s: v["opsstack"]["coverage"] for s, v in summary["per_series"].items()}
    cov_ok = 0.78 <= o["opsstack"]["coverage"] <= 0.82 and all(0.6 <= c <= 0.95 for c in covs.values())
    print(f"goal: coverage {o['opsstack']['coverage']:.3f} overall (0.78-0.82), per series "
          f"{min(covs.values()):.2f} ({min(covs, key=covs.get)}) .. {max(covs.values()):.2f} "
          f"({max(covs, key=covs.get)}) (0.60-0.95): {'yes' if cov_ok else 'NO'}")
    summary["coverage_per_series"] = {"min": min(covs.values()), "max": max(covs.values())}
    if a.ablation:
        from forecasters.models import DEFAULT_CANDIDATES

        with_prophet = DEFAULT_CANDIDATES + ("prophet", "prophet_flat")
        t0 = time.perf_counter()
        abl = evaluate.summarize(evaluate.run(paths, workers=a.workers, progress=not a.no_progress,
                                              with_prophet_default=False, models=with_prophet, baselines=False))
        o2 = abl["overall"]["opsstack"]
        print(f"\nablation: our forecaster WITH the Prophet candidates: mean MASE {o2['mase']:.3f} "
              f"(without {ours:.3f}), coverage {o2['coverage']:.3f}, {time.perf_counter() - t0:.0f}s")
        summary["ablation_with_prophet"] = o2
    ot = ours_throughput(paths, a.workers)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"\nour forecaster alone (model selection on), {ot['targets']} target forecasts: "
          f"{ot['targets_per_min_wall']:.1f} targets/min wall on {a.workers} worker(s) "
          f"(= {ot['targets_per_min_wall'] * 15:.0f} per 15-minute cycle; goal >= 1000), "
          f"{ot['targets_per_worker_min']:.1f} targets per worker-CPU-minute "
          f"(= {ot['targets_per_worker_min'] * 2 * 15:.0f} per 15-minute cycle on 2 idle cores); "
          f"1-min load average {load:.1f} on {os.cpu_count()} CPUs")
    summary["ours_throughput"] = ot
    tp = throughput(a.workers)
    print(f"\nfit throughput on 14 days of 5-minute data (4032 points) + a 288-step forecast, {a.workers} worker "
          f"process(es):")
    for model, v in tp.items():
        print(f"  {model:<14} {v['fits_per_min_wall']:>9.0f} fits/min (wall)   "
              f"{v['fits_per_cpu_min']:>9.0f} fits per CPU-minute")
    summary["throughput"] = tp
    summary["load_average"] = load
    summary["wall_seconds"] = wall
    summary["workers"] = a.workers
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(summary, indent=2))
    if a.csv:
        evaluate.write_csv(results, a.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
