"""One forecast of one series: backtest, choose, fit, calibrate, derive the operator numbers.

Pure computation (no I/O), picklable in and out, so it runs in worker processes:

    fc = forecast_series(t, y, Spec(step=300, horizons=(172800,), thresholds=(0.9,)))
    fc.curve_t, fc.yhat, fc.lower, fc.upper       # the future curve (absolute unix seconds)
    fc.crossings[0.9]                             # when yhat / the band cross 0.9
    fc.exceedance[(0.9, 172800)]                  # P(crossing 0.9 within 48h)
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from statistics import NormalDist

import numpy as np

from forecasters import backtest
from forecasters.calibration import Band, band_from_noise, band_from_residuals, calibrate, recent_range, sample_paths
from forecasters.models import DAY, DEFAULT_CANDIDATES, WEEK, FitContext, clip, make_model

log = logging.getLogger(__name__)

MONTH = 30 * DAY


@dataclass(frozen=True)
class Spec:
    """How to forecast one target (built from the config by forecasters.targets)."""

    step: float                                     # seconds between samples
    horizons: tuple[float, ...] = (2 * DAY,)        # seconds
    thresholds: tuple[float, ...] = ()
    direction: str = "above"                        # crossing means going above / below
    lower: float | None = None                      # bounds of the quantity
    upper: float | None = None
    seasonalities: tuple[float, ...] = (DAY, WEEK)
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    folds: int = 4                                  # backtest origins that score the candidates (the newest)
    calibration_folds: int = 8                      # origins whose residuals calibrate the band (>= folds)
    recent_window: float = 12 * 3600.0              # seconds of history of the band's recent-range floor
    ensemble: int = 7                               # median of the k best models (1 = the best alone)
    ensemble_within: float = 1.3                    # ... among those within this factor of the best score
    backtest_horizon: float | None = None           # seconds; None = from the history length
    level: float = 0.8
    samples: int = 400
    curve_points: int = 500                         # points of the stored future curve
    anomaly_rows: int = 3                           # recent rows checked against the nowcast
    linear_window: float = 6 * 3600.0
    prophet: tuple = ()                             # (key, value) pairs of Prophet settings
    model: str | None = None                        # force a model, skip selection
    widen: float = 1.0                              # extra band factor (calibration)
    change_point: bool = False                      # a recent new trend overrides the backtest choice
    change_window: float = 2 * DAY                  # seconds searched for it (changepoint_trend)
    change_min_t: float = 6.0                       # t statistic its slope needs

    def ctx(self) -> FitContext:
        return FitContext(step=self.step, seasonalities=self.seasonalities, lower=self.lower,
                          upper=self.upper, linear_window=self.linear_window, prophet=dict(self.prophet),
                          change_window=self.change_window, change_min_t=self.change_min_t)


@dataclass
class Crossing:
    threshold: float
    at: float | None          # unix seconds when yhat crosses (None: not within the curve)
    earliest: float | None    # when the pessimistic edge of the band crosses
    latest: float | None      # when the optimistic edge crosses (None: not within the curve)


@dataclass
class Forecast:
    model: str
    t_last: float                              # time of the last sample
    y_last: float
    curve_t: np.ndarray                        # absolute unix seconds (future)
    yhat: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    horizons: dict[float, tuple[float, float, float]]   # horizon s -> (yhat, lower, upper)
    crossings: dict[float, Crossing]
    exceedance: dict[tuple[float, float], float]         # (threshold, horizon) -> probability
    anomaly: bool
    backtest_mase: float | None
    backtest_coverage: float | None
    scores: dict[str, float] = field(default_factory=dict)
    growth_per_month: float = 0.0              # change of yhat over the next 30 days
    fits: int = 0
    duration: float = 0.0
    band: Band | None = None

    def at(self, when: float) -> tuple[float, float, float]:
        """(yhat, lower, upper) interpolated at absolute time `when` (clamped to the curve)."""
        ts = np.concatenate([[self.t_last], self.curve_t])
        return tuple(float(np.interp(when, ts, np.concatenate([[v0], arr])))  # type: ignore
                     for v0, arr in ((self.yhat[0], self.yhat), (self.lower[0], self.lower),
                                     (self.upper[0], self.upper)))


class _Combo:
    """Mean ('a+b') or median ('median:a+b+c') of fitted models, pointwise."""

    def __init__(self, models, how: str = "mean"):
        self.models = models
        self.how = how
        self.error_growth = "trend" if any(m.error_growth == "trend" for m in models) else "level"

    def predict(self, offsets):
        preds = [m.predict(offsets) for m in self.models]
        return np.median(preds, axis=0) if self.how == "median" else np.mean(preds, axis=0)


def model_parts(name: str) -> list[str]:
    return name.split(":")[-1].split("+")


def _fit(name: str, ctx: FitContext, t, y):
    parts = model_parts(name)
    if len(parts) > 1:
        how = "median" if name.startswith("median:") else "mean"
        return _Combo([make_model(p, ctx).fit(t, y) for p in parts], how)
    return make_model(name, ctx).fit(t, y)


def regularize(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, finite, de-duplicated samples."""
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    if len(t) > 1:
        keep = np.concatenate([[True], np.diff(t) > 0])
        t, y = t[keep], y[keep]
    return t, y


def infer_step(t: np.ndarray) -> float:
    d = np.diff(np.asarray(t, float))
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 60.0


def forecast_series(t: np.ndarray, y: np.ndarray, spec: Spec, horizon_rows: int | None = None,
                    seed: int = 0) -> Forecast:
    """Forecast y (at times t) according to spec.

    horizon_rows: forecast exactly this many rows (the evaluation protocol); otherwise the
    curve spans the longest configured horizon with `spec.curve_points` points.
    """
    started = time.perf_counter()
    t, y = regularize(t, y)
    if len(y) < 3:
        raise ValueError(f"need at least 3 samples to forecast, got {len(y)}")
    ctx = spec.ctx()
    n = len(y)
    step = spec.step
    # ---- backtest and choose
    if spec.backtest_horizon:
        H = int(round(spec.backtest_horizon / step))
    elif horizon_rows:
        H = horizon_rows
    else:
        H = int(round(min(max(spec.horizons), step * n / (spec.folds + 2)) / step))
    H = max(1, min(H, n // 3))
    bt = None
    fits = 0
    constant = bool(np.ptp(y) == 0)
    if constant and spec.model is None:
        chosen = "naive"   # nothing to learn; the band comes from the (zero) step changes
    elif spec.model is None:
        bt = backtest.run(t, y, ctx, spec.candidates, H, folds=max(spec.folds, spec.calibration_folds),
                          score_folds=spec.folds)
        if bt is None:
            chosen = "linear_trend" if "linear_trend" in spec.candidates else spec.candidates[0]
        elif spec.ensemble > 1:
            chosen = bt.ensemble(spec.ensemble, spec.ensemble_within)
        else:
            chosen = bt.best()
        fits += bt.fits if bt else 0
    else:
        chosen = spec.model
        if spec.folds > 0:
            bt = backtest.run(t, y, ctx, (chosen,), H, folds=max(spec.folds, spec.calibration_folds),
                              combine=False, score_folds=spec.folds)
            fits += bt.fits if bt else 0
    model = _fit(chosen, ctx, t, y)
    fits += len(model_parts(chosen))
    change = None
    if spec.change_point and spec.model is None and chosen != "changepoint_trend":
        # the backtest's folds end H rows before the last sample: a trend that started since (a
        # leak) is in none of them, so every model it chose forecasts the old regime. A
        # significant new trend in the recent window, heading toward the thresholds, wins.
        cp = make_model("changepoint_trend", ctx).fit(t, y)
        fits += 1
        toward = cp.slope > 0 if spec.direction == "above" else cp.slope < 0
        if cp.detected and toward:
            model, chosen, change = cp, "changepoint_trend", cp.change
    growth_exp = 1.0 if model.error_growth == "trend" else 0.5
    if change is not None:
        band = band_from_change(change, step, spec.level, max(1, H))
        bt_mase = bt_cov = None
        scores = dict(bt.scores) if bt is not None else {}
    elif bt is not None and chosen in bt.forecasts:
        band = band_from_residuals(bt.residuals(chosen), step, spec.level, growth_exp, spec.widen)
        # per-series conformal step: scale the band (and add the recent-range floor) so that it covers
        # `level` of this series' backtest truth; each fold gets the floor of its own origin
        rows = max(2, int(round(spec.recent_window / step)))
        floors = np.array([recent_range(y[:o], rows, spec.level) for o in bt.origins])
        band = calibrate(band, bt.forecasts[chosen], bt.truth, floors)
        bt_mase = bt.scores.get(chosen)
        fc_b = bt.forecasts[chosen]
        lo_b, hi_b = band.at(np.arange(1, H + 1) * step)
        lower_b, upper_b = fc_b + lo_b, fc_b + hi_b
        lower_b, upper_b = np.minimum(lower_b, floors[:, :1]), np.maximum(upper_b, floors[:, 1:])
        band.set_floor(recent_range(y, rows, spec.level))
        bt_cov = float(np.nanmean(((bt.truth >= lower_b) & (bt.truth <= upper_b))[np.isfinite(bt.truth)]))
        scores = dict(bt.scores)
    else:
        band = band_from_noise(y, step, spec.level, horizon=max(1, H))
        bt_mase = bt_cov = None
        scores = {}
    # ---- the future curve
    if horizon_rows:
        offsets = np.arange(1, horizon_rows + 1) * step
    else:
        far = max(spec.horizons)
        npts = max(2, spec.curve_points)
        offsets = np.unique(np.concatenate([
            np.linspace(step, far, npts),
            np.asarray(spec.horizons, float),
        ]))
    yhat = clip(model.predict(offsets), spec.lower, spec.upper)
    lower, upper = band.interval(yhat, offsets)
    lo_d, hi_d = lower - yhat, upper - yhat
    lower = clip(lower, spec.lower, spec.upper)
    upper = clip(upper, spec.lower, spec.upper)
    curve_t = t[-1] + offsets
    # ---- operator numbers
    horizons = {}
    for h in spec.horizons:
        i = int(np.argmin(np.abs(offsets - h)))
        horizons[float(h)] = (float(yhat[i]), float(lower[i]), float(upper[i]))
    above = spec.direction == "above"
    crossings, exceed = {}, {}
    samples = None
    if spec.thresholds:
        samples = clip(sample_paths(yhat, lo_d, hi_d, spec.level, spec.samples, seed), spec.lower, spec.upper)
    for thr in spec.thresholds:
        thr = float(thr)
        crossings[thr] = Crossing(
            threshold=thr,
            at=_first_cross(y[-1], curve_t, yhat, thr, above, t[-1]),
            earliest=_first_cross(y[-1], curve_t, upper if above else lower, thr, above, t[-1]),
            latest=_first_cross(y[-1], curve_t, lower if above else upper, thr, above, t[-1]),
        )
        hit = samples >= thr if above else samples <= thr
        already = (y[-1] >= thr) if above else (y[-1] <= thr)
        first_hit = np.where(hit.any(axis=1), hit.argmax(axis=1), len(offsets))
        for h in spec.horizons:
            k = int(np.searchsorted(offsets, h, side="right"))
            exceed[(thr, float(h))] = 1.0 if already else float(np.mean(first_hit < k))
    # ---- anomaly: are the latest rows inside the band of a forecast made just before them?
    anomaly = False
    a = min(spec.anomaly_rows, n // 4)
    if a >= 1 and bt is not None:
        try:
            m2 = _fit(chosen, ctx, t[:-a], y[:-a])
            fits += len(model_parts(chosen))
            offs = t[-a:] - t[-a - 1]
            pred = clip(m2.predict(offs), spec.lower, spec.upper)
            lo2, hi2 = band.interval(pred, offs)
            anomaly = bool(y[-1] < lo2[-1] or y[-1] > hi2[-1])
        except Exception as exc:  # anomaly is a bonus, never a failed run
            log.debug("event=nowcast_failed error=%r", exc)
    month_i = int(np.argmin(np.abs(offsets - min(MONTH, offsets[-1]))))
    span = offsets[month_i]
    growth = float((yhat[month_i] - yhat[0]) * (MONTH / span)) if span > 0 else 0.0
    return Forecast(
        model=chosen, t_last=float(t[-1]), y_last=float(y[-1]), curve_t=curve_t, yhat=yhat,
        lower=lower, upper=upper, horizons=horizons, crossings=crossings, exceedance=exceed,
        anomaly=anomaly, backtest_mase=bt_mase, backtest_coverage=bt_cov, scores=scores,
        growth_per_month=growth, fits=fits, duration=time.perf_counter() - started, band=band,
    )


def band_from_change(change, step: float, level: float, horizon: int) -> Band:
    """The band of a forecast that extrapolates a new trend (changepoint_trend): the noise plus the
    slope's standard error times the distance from the centre of the segment it was fitted on
    (a slope error grows linearly), for ``horizon`` steps, then growing linearly."""
    z = NormalDist().inv_cdf((1 + level) / 2)
    k = np.arange(1, horizon + 1, dtype=float)
    se_slope = abs(change.slope / change.t_stat) if change.t_stat else 0.0
    centre = (change.rows - 1) / 2.0
    w = z * np.sqrt(change.noise ** 2 + (se_slope * (k + centre)) ** 2)
    return Band(lo=-w, hi=w, step=step, level=level, growth=1.0)


def _first_cross(y_now: float, ts: np.ndarray, vals: np.ndarray, thr: float, above: bool,
                 t_now: float) -> float | None:
    """Absolute time the curve first reaches thr (linear interpolation between points)."""
    if (above and y_now >= thr) or (not above and y_now <= thr):
        return t_now
    hit = vals >= thr if above else vals <= thr
    if not hit.any():
        return None
    i = int(hit.argmax())
    t0, v0 = (t_now, y_now) if i == 0 else (ts[i - 1], vals[i - 1])
    t1, v1 = ts[i], vals[i]
    if v1 == v0:
        return float(t1)
    frac = (thr - v0) / (v1 - v0)
    return float(t0 + min(1.0, max(0.0, frac)) * (t1 - t0))


def seconds_until(when: float | None, now: float) -> float:
    """Seconds from now until `when` (0 if past, +Inf if never)."""
    if when is None:
        return math.inf
    return max(0.0, when - now)
