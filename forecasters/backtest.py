"""Rolling-origin backtest: which model forecasts this series best, and how wrong it is.

Origins are spaced `stride` rows apart, the last one H rows before the end of the history;
at each origin every candidate is fitted on the rows before it and forecasts the next H rows.
The score is the mean MASE over the folds (scale: seasonal-naive in-sample MAE of the whole
history, as in the protocol). Besides single models, the mean of each pair of the three best
models is scored from the same fold forecasts (no extra fits): forecast combination is the
most reliable accuracy gain on noisy ops series.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from forecasters.metrics import mase, mase_scale
from forecasters.models import FitContext, clip, make_model

log = logging.getLogger(__name__)

# Simpler first: ties (within 1%) go to the simpler model.
SIMPLICITY = ["naive", "recent_mean", "recent_median", "ses", "seasonal_naive", "seasonal_mean", "seasonal_ses",
              "seasonal_ses_smooth", "weekly_ses", "theta", "damped_trend", "linear_trend", "long_trend", "prophet_flat", "prophet"]


@dataclass
class BacktestResult:
    horizon: int                                   # H rows
    origins: list[int]
    scores: dict[str, float]                       # model (or "a+b") -> mean MASE
    forecasts: dict[str, np.ndarray]               # model -> (folds, H) fold forecasts
    truth: np.ndarray                              # (folds, H), NaN past the end
    fits: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    scale: float = 1.0
    score_from: int = 0                            # scores use the folds from this index on (the newest)

    def residuals(self, model: str) -> np.ndarray:
        return self.truth - self.forecasts[model]

    def ensemble(self, k: int, within: float = 1.2) -> str:
        """The median of the (at most k) best models whose backtest score is within `within` times
        the best one: 'median:a+b+c'. On a clear signal (a leak) only the models that see it
        qualify; on noise, where many models are as good, the median averages their errors away."""
        ranked = sorted((m for m in self.scores if "+" not in m and np.isfinite(self.scores[m])),
                        key=lambda m: (self.scores[m], _simplicity(m)))[:k]
        if ranked:
            best = self.scores[ranked[0]]
            ranked = [m for m in ranked if self.scores[m] <= best * within + 1e-12]
        if len(ranked) < 2:
            return ranked[0] if ranked else "naive"
        # members in a fixed order: the label value does not change when only their ranks do
        name = "median:" + "+".join(sorted(ranked, key=_simplicity))
        if name not in self.forecasts:
            self.forecasts[name] = np.median([self.forecasts[m] for m in ranked], axis=0)
            self.scores[name] = _score(self.truth[self.score_from:], self.forecasts[name][self.score_from:],
                                       self.scale)
        return name

    def best(self) -> str:
        def rank(name):
            parts = name.split(":")[-1].split("+")
            return (self.scores[name], max(SIMPLICITY.index(p) if p in SIMPLICITY else 99 for p in parts))

        finite = {k: v for k, v in self.scores.items() if np.isfinite(v)}
        if not finite:
            return "naive"
        best = min(finite, key=rank)
        # prefer a simpler model that is within 1% of the best
        for name in sorted(finite, key=lambda n: rank(n)[1]):
            if finite[name] <= finite[best] * 1.01 and "+" not in name:
                return name
        return best


def plan_origins(n: int, horizon: int, folds: int, min_train: int) -> list[int]:
    """Fold origins (row index where the test part starts), oldest first."""
    stride = max(1, horizon // 2)
    out = []
    for i in range(folds):
        o = n - horizon - i * stride
        if o < min_train:
            break
        out.append(o)
    return sorted(out)


def run(t: np.ndarray, y: np.ndarray, ctx: FitContext, candidates: tuple[str, ...], horizon: int,
        folds: int = 4, min_train: int | None = None, combine: bool = False,
        score_folds: int | None = None) -> BacktestResult | None:
    """Backtest every candidate; None when the history is too short for even one fold.

    score_folds: the scores (model choice) use only the newest score_folds origins; the older
    ones only add residuals for the interval calibration (None = all)."""
    n = len(y)
    if min_train is None:
        min_train = max(24, n // 3)
    origins = plan_origins(n, horizon, folds, min_train)
    if not origins:
        return None
    scale = mase_scale(y, m=288)
    if not np.isfinite(scale) or scale == 0:
        scale = float(np.mean(np.abs(np.diff(y)))) or 1.0
    truth = np.full((len(origins), horizon), np.nan)
    for i, o in enumerate(origins):
        seg = y[o:o + horizon]
        truth[i, :len(seg)] = seg
    offsets = np.arange(1, horizon + 1) * ctx.step
    sf = 0 if not score_folds else max(0, len(origins) - score_folds)
    forecasts, scores, failed, fits = {}, {}, {}, 0
    for name in candidates:
        out = np.full((len(origins), horizon), np.nan)
        try:
            for i, o in enumerate(origins):
                m = make_model(name, ctx).fit(t[:o], y[:o])
                fits += 1
                out[i] = m.predict(offsets)
        except Exception as exc:  # a model that cannot fit this series is skipped
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.debug("event=backtest_model_failed model=%s error=%r", name, exc)
            continue
        if ctx.lower is not None or ctx.upper is not None:
            out = clip(out, ctx.lower, ctx.upper)
        forecasts[name] = out
        scores[name] = _score(truth[sf:], out[sf:], scale)
    res = BacktestResult(horizon=horizon, origins=origins, scores=scores, forecasts=forecasts,
                         truth=truth, fits=fits, failed=failed, scale=scale, score_from=sf)
    if combine and len(scores) >= 2:
        top = sorted((k for k in scores if np.isfinite(scores[k])), key=scores.get)[:3]
        for a, b in itertools.combinations(top, 2):
            key = "+".join(sorted((a, b), key=_simplicity))
            f = (forecasts[a] + forecasts[b]) / 2
            forecasts[key] = f
            scores[key] = _score(truth[sf:], f[sf:], scale)
    return res


def _simplicity(name: str) -> int:
    return SIMPLICITY.index(name) if name in SIMPLICITY else len(SIMPLICITY)


def _score(truth: np.ndarray, pred: np.ndarray, scale: float) -> float:
    vals = []
    for i in range(truth.shape[0]):
        ok = np.isfinite(truth[i]) & np.isfinite(pred[i])
        if ok.any():
            vals.append(mase(truth[i][ok], pred[i][ok], scale))
    return float(np.mean(vals)) if vals else float("nan")
