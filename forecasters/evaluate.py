"""The evaluation protocol of datasets/nab/README.md, for our forecaster and the baselines.

For each series: cutoffs at 70%, 80% and 90% of its rows; train on the rows before the cutoff,
forecast the next h = 288 rows (fewer if the series ends). Errors: MASE (scale: in-sample MAE
of seasonal-naive with m = 288 on the training rows, m = 1 when shorter than 2m), sMAPE and the
share of truth inside the 80% interval. Baselines: naive, seasonal-naive (m = 288 rows), linear
trend (least squares over the last 6 hours). Their 80% intervals are the textbook ones (random
walk, seasonal random walk, regression prediction interval), so coverage is compared fairly.
"prophet_default" is Prophet as shipped (its own 80% interval), the peer the issue measured.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from forecasters._quiet import quiet_prophet
from forecasters.engine import Spec, forecast_series, infer_step, regularize
from forecasters.metrics import coverage, mase, mase_scale, smape

log = logging.getLogger(__name__)

H = 288
M = 288
CUTOFFS = (0.7, 0.8, 0.9)
LEVEL = 0.8
Z = NormalDist().inv_cdf((1 + LEVEL) / 2)
BASELINES = ("naive", "seasonal_naive", "linear_trend")
DATA_DIR = Path(__file__).resolve().parents[1] / "datasets" / "nab"


def read_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A `timestamp,value` CSV -> (unix seconds, values). Timestamps: ISO text or numbers."""
    import pandas as pd

    df = pd.read_csv(path)
    if df.shape[1] < 2:
        raise ValueError(f"{path}: expected two columns timestamp,value")
    ts, vals = df.iloc[:, 0], pd.to_numeric(df.iloc[:, 1], errors="coerce")
    if pd.api.types.is_numeric_dtype(ts):
        t = ts.to_numpy(float)
    else:
        dt = pd.to_datetime(ts, utc=True, format="mixed")
        t = (dt - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy(float)
    return t, vals.to_numpy(float)


def list_series(data_dir: str | os.PathLike = DATA_DIR, pattern: str = "*") -> list[Path]:
    return sorted(p for p in Path(data_dir).rglob("*.csv") if p.match(pattern + ".csv") or p.match(pattern))


# ---------------------------------------------------------------- baselines with intervals

def baseline(name: str, t: np.ndarray, y: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = np.arange(1, h + 1)
    if name == "naive":
        sd = float(np.std(np.diff(y), ddof=1)) if len(y) > 2 else 0.0
        f = np.full(h, y[-1])
        w = Z * sd * np.sqrt(k)
    elif name == "seasonal_naive":
        m = M if len(y) >= 2 * M else 1
        f = y[-m:][(k - 1) % m]
        sd = float(np.std(y[m:] - y[:-m], ddof=1)) if len(y) > m + 1 else 0.0
        w = Z * sd * np.sqrt(np.floor((k - 1) / m) + 1)
    elif name == "linear_trend":
        step = float(np.median(np.diff(t)))
        sel = t >= t[-1] - 6 * 3600
        if sel.sum() < 3:
            sel[-3:] = True
        x = t[sel] - t[-1]
        yy = y[sel]
        b, a = np.polyfit(x, yy, 1)
        xf = k * step
        f = a + b * xf
        resid = yy - (a + b * x)
        dof = max(1, len(x) - 2)
        s = math.sqrt(float(np.sum(resid ** 2)) / dof)
        sxx = float(np.sum((x - x.mean()) ** 2)) or 1.0
        w = Z * s * np.sqrt(1 + 1 / len(x) + (xf - x.mean()) ** 2 / sxx)
    else:
        raise ValueError(name)
    return f, f - w, f + w


def prophet_default(t: np.ndarray, y: np.ndarray, h: int):
    import pandas as pd  # heavy: pandas, only for the Prophet baseline

    quiet_prophet()
    from prophet import Prophet

    step = float(np.median(np.diff(t)))
    df = pd.DataFrame({"ds": pd.to_datetime(t, unit="s"), "y": y})
    m = Prophet(interval_width=LEVEL).fit(df)
    fut = pd.DataFrame({"ds": pd.to_datetime(t[-1] + np.arange(1, h + 1) * step, unit="s")})
    out = m.predict(fut)
    return out["yhat"].to_numpy(), out["yhat_lower"].to_numpy(), out["yhat_upper"].to_numpy()


# ---------------------------------------------------------------- one task

@dataclass
class TaskResult:
    series: str
    cutoff: float
    rows: int
    results: dict            # method -> {"mase", "smape", "coverage"}
    chosen: str
    fits: int
    seconds: float
    cpu: float = 0.0         # CPU seconds of our forecaster alone (backtest, choice, fits, band)


def evaluate_one(path: str, cutoff: float, with_prophet_default: bool = True, widen: float = 1.0,
                 models: tuple[str, ...] | None = None, baselines: bool = True) -> TaskResult:
    started = time.perf_counter()
    t, y = read_csv(path)
    t, y = regularize(t, y)
    n = len(y)
    c = int(n * cutoff)
    tt, yt = t[:c], y[:c]
    h = min(H, n - c)
    truth = y[c:c + h]
    scale = mase_scale(yt, M)
    res = {}

    def score(name, f, lo, hi):
        res[name] = {"mase": mase(truth, f, scale), "smape": smape(truth, f), "coverage": coverage(truth, lo, hi)}

    for b in BASELINES if baselines else ():
        score(b, *baseline(b, tt, yt, h))
    fits = 0
    if with_prophet_default:
        score("prophet_default", *prophet_default(tt, yt, h))
        fits += 1
    step = infer_step(tt)
    spec = Spec(step=step, horizons=(h * step,), widen=widen)
    if models:
        spec = Spec(step=step, horizons=(h * step,), widen=widen, candidates=tuple(models))
    c0 = time.process_time()
    fc = forecast_series(tt, yt, spec, horizon_rows=h)
    cpu = time.process_time() - c0
    fits += fc.fits
    score("opsstack", fc.yhat, fc.lower, fc.upper)
    return TaskResult(series=Path(path).stem, cutoff=cutoff, rows=n, results=res, chosen=fc.model,
                      fits=fits, seconds=time.perf_counter() - started, cpu=cpu)


def _init_worker():
    logging.getLogger().setLevel(logging.WARNING)


def run(paths: list[Path], workers: int = 2, progress: bool = True, with_prophet_default: bool = True,
        cutoffs: tuple[float, ...] = CUTOFFS, widen: float = 1.0, models: tuple[str, ...] | None = None,
        baselines: bool = True) -> list[TaskResult]:
    """Evaluate every (series, cutoff) in worker processes, with a progress bar on stderr."""
    from tqdm import tqdm

    tasks = [(str(p), c) for p in paths for c in cutoffs]
    out: list[TaskResult] = []
    bar = tqdm(total=len(tasks), desc="evaluate", unit="fc", disable=not progress, dynamic_ncols=True)
    if workers <= 1:
        for p, c in tasks:
            out.append(evaluate_one(p, c, with_prophet_default, widen, models, baselines))
            bar.update(1)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker) as ex:
            futs = [ex.submit(evaluate_one, p, c, with_prophet_default, widen, models, baselines) for p, c in tasks]
            for f in as_completed(futs):
                out.append(f.result())
                bar.update(1)
    bar.close()
    out.sort(key=lambda r: (r.series, r.cutoff))
    return out


# ---------------------------------------------------------------- tables

def summarize(results: list[TaskResult]) -> dict:
    methods = list(results[0].results) if results else []
    overall = {}
    for m in methods:
        vals = {k: [r.results[m][k] for r in results if np.isfinite(r.results[m][k])]
                for k in ("mase", "smape", "coverage")}
        overall[m] = {k: float(np.mean(v)) if v else float("nan") for k, v in vals.items()}
    per_series = {}
    for r in results:
        s = per_series.setdefault(r.series, {m: {"mase": [], "coverage": []} for m in methods})
        for m in methods:
            s[m]["mase"].append(r.results[m]["mase"])
            s[m]["coverage"].append(r.results[m]["coverage"])
    per_series = {s: {m: {k: float(np.nanmean(v)) for k, v in d.items()} for m, d in ms.items()}
                  for s, ms in per_series.items()}
    chosen: dict[str, int] = {}   # how often each model is (a member of) the chosen forecast
    for r in results:
        for part in r.chosen.split(":")[-1].split("+"):
            chosen[part] = chosen.get(part, 0) + 1
    return {"overall": overall, "per_series": per_series, "chosen": chosen,
            "tasks": len(results), "fits": sum(r.fits for r in results)}


def format_table(summary: dict) -> str:
    methods = list(summary["overall"])
    lines = []
    w = max([len(s) for s in summary["per_series"]] + [10])
    lines.append(f"{'series':<{w}}  " + "  ".join(f"{m[:15]:>15}" for m in methods) + "   (MASE / 80% coverage)")
    for s, ms in summary["per_series"].items():
        lines.append(f"{s:<{w}}  " + "  ".join(f"{ms[m]['mase']:>8.3f} / {ms[m]['coverage']:.2f}" for m in methods))
    lines.append("-" * len(lines[0]))
    o = summary["overall"]
    lines.append(f"{'mean MASE':<{w}}  " + "  ".join(f"{o[m]['mase']:>15.3f}" for m in methods))
    lines.append(f"{'mean sMAPE':<{w}}  " + "  ".join(f"{o[m]['smape']:>15.3f}" for m in methods))
    lines.append(f"{'mean coverage':<{w}}  " + "  ".join(f"{o[m]['coverage']:>15.3f}" for m in methods))
    if "opsstack" in o:
        ours = o["opsstack"]["mase"]
        lines.append(f"{'MASE ratio ours/x':<{w}}  " + "  ".join(
            f"{ours / o[m]['mase']:>15.3f}" if o[m]["mase"] else f"{'-':>15}" for m in methods))
    lines.append("models in the chosen forecasts (median ensembles count each member): " + ", ".join(f"{k} x{v}" for k, v in sorted(summary["chosen"].items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def write_csv(results: list[TaskResult], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "cutoff", "method", "mase", "smape", "coverage", "chosen"])
        for r in results:
            for m, v in r.results.items():
                w.writerow([r.series, r.cutoff, m, f"{v['mase']:.6g}", f"{v['smape']:.6g}",
                            f"{v['coverage']:.6g}", r.chosen])
