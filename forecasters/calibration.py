"""Interval calibration from backtest residuals, and predictive sample paths.

The backtest leaves, for the chosen model, residuals r[f, k] = truth - forecast for fold f at
step k (1..H). The band at step k is the (1-level)/2 and (1+level)/2 quantiles of the residuals
pooled over all folds and the steps near k (a log-scale neighbourhood, so the short horizons
have their own narrow band), made non-decreasing in k. Past the backtest horizon the band grows
like sqrt(k) for level models and like k for trend models (a slope error grows linearly).

Per-series conformal step (`calibrate`): the band is the union of that residual band, scaled by a
factor s, and (within the backtest horizon) a "recent range" floor (the central quantiles of the last few hours of values, which
keeps the band from collapsing to zero width on spiky or intermittent series where most backtest
residuals are exactly 0). s is the smallest factor for which the union covers `level` (+ a small
finite-sample margin) of the backtest truth, each fold with the floor of its own origin: so the band
covers about `level` on every series, not just on average.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass
class Band:
    """Signed residual quantiles per step: lower delta (<= 0) and upper delta (>= 0)."""

    lo: np.ndarray       # shape (H,), step k at index k-1
    hi: np.ndarray
    step: float          # seconds per step
    level: float = 0.8
    growth: float = 0.5  # exponent of the extrapolation past H
    scale: float = 1.0   # conformal factor on lo/hi (calibrate)
    floor_lo: float | None = None   # the band always includes [floor_lo, floor_hi] (absolute values:
    floor_hi: float | None = None   # the recent range, for level forecasts; set_floor)

    @property
    def horizon(self) -> int:
        return len(self.lo)

    def at(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower delta, upper delta) at offsets in seconds after the last sample."""
        k = np.maximum(1.0, np.asarray(offsets, float) / self.step)
        H = self.horizon
        idx = np.clip(np.rint(k).astype(int), 1, H) - 1
        lo, hi = self.lo[idx].copy(), self.hi[idx].copy()
        past = k > H
        if past.any():
            f = (k[past] / H) ** self.growth
            lo[past] = self.lo[-1] * f
            hi[past] = self.hi[-1] * f
        return lo * self.scale, hi * self.scale

    def set_floor(self, recent: tuple[float, float]) -> "Band":
        """Within the calibrated horizon the band always includes the recent range (recent_range);
        past it (where a trend moves away from where the series just was) it does not."""
        self.floor_lo, self.floor_hi = recent
        return self

    def interval(self, yhat: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) absolute band around the forecast yhat at offsets (seconds)."""
        lo, hi = self.at(offsets)
        lower, upper = yhat + lo, yhat + hi
        if self.floor_lo is not None:
            near = np.asarray(offsets, float) / self.step <= self.horizon + 0.5
            lower = np.where(near, np.minimum(lower, self.floor_lo), lower)
            upper = np.where(near, np.maximum(upper, self.floor_hi), upper)
        return lower, upper

    def to_dict(self) -> dict:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "step": self.step,
                "level": self.level, "growth": self.growth, "scale": self.scale,
                "floor_lo": self.floor_lo, "floor_hi": self.floor_hi}


def band_from_residuals(res: np.ndarray, step: float, level: float = 0.8, growth: float = 0.5,
                        widen: float = 1.0) -> Band:
    """Calibrate a Band on residuals of shape (folds, H) (NaN = missing)."""
    res = np.atleast_2d(np.asarray(res, float))
    H = res.shape[1]
    qlo, qhi = (1 - level) / 2, (1 + level) / 2
    lo = np.empty(H)
    hi = np.empty(H)
    for k in range(1, H + 1):
        a, b = max(1, int(k / 1.5)), min(H, int(np.ceil(k * 1.5)))
        pool = res[:, a - 1:b].ravel()
        pool = pool[np.isfinite(pool)]
        if len(pool) == 0:
            lo[k - 1], hi[k - 1] = (lo[k - 2], hi[k - 2]) if k > 1 else (0.0, 0.0)
            continue
        lo[k - 1] = min(0.0, float(np.quantile(pool, qlo)))
        hi[k - 1] = max(0.0, float(np.quantile(pool, qhi)))
    # a band never narrows with the horizon
    lo = np.minimum.accumulate(lo) * widen
    hi = np.maximum.accumulate(hi) * widen
    return Band(lo=lo, hi=hi, step=step, level=level, growth=growth)


def recent_range(y: np.ndarray, rows: int, level: float = 0.8) -> tuple[float, float]:
    """Central quantiles of the last `rows` values: the (1-level)/2 + 0.1 and (1+level)/2 - 0.1
    quantiles (0.2 and 0.8 for an 80% band): where the series has just been."""
    tail = np.asarray(y, float)[-max(1, rows):]
    q = max(0.0, (1 - level) / 2 + 0.1)
    return float(np.quantile(tail, q)), float(np.quantile(tail, 1 - q))


def calibrate(band: Band, forecasts: np.ndarray, truth: np.ndarray, floors: np.ndarray | None,
              margin: float = 0.02, max_scale: float = 3.0) -> Band:
    """Per-series conformal calibration of `band` on its backtest folds.

    forecasts, truth: (folds, H) backtest forecasts of the chosen model and the truth (NaN past the end);
    floors: (folds, 2) recent range at each fold origin (None: no floor). Sets band.scale to the smallest
    s in [0, max_scale] for which the union of s * band and the fold's floor covers level + margin of the
    backtest truth.
    """
    ok = np.isfinite(truth) & np.isfinite(forecasts)
    if not ok.any():
        return band
    H = truth.shape[1]
    lo, hi = band.lo[np.minimum(np.arange(H), band.horizon - 1)], band.hi[np.minimum(np.arange(H), band.horizon - 1)]
    r = truth - forecasts
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(r >= 0, np.where(hi > 0, r / hi, np.where(r > 0, np.inf, 0.0)),
                        np.where(lo < 0, r / lo, np.inf))
    if floors is not None:
        inside = (truth >= floors[:, :1]) & (truth <= floors[:, 1:])
        need = np.where(inside, 0.0, need)
    need = need[ok]
    target = min(1.0, band.level + margin)
    s = float(np.quantile(need, target, method="higher"))
    band.scale = min(max_scale, s) if np.isfinite(s) else max_scale
    return band


def band_from_noise(y: np.ndarray, step: float, level: float = 0.8, horizon: int = 12) -> Band:
    """Fallback when history is too short to backtest: random-walk band from step changes."""
    d = np.diff(np.asarray(y, float))
    sd = float(np.std(d)) if len(d) > 1 else 0.0
    z = NormalDist().inv_cdf((1 + level) / 2)
    k = np.arange(1, horizon + 1)
    w = z * sd * np.sqrt(k)
    return Band(lo=-w, hi=w, step=step, level=level, growth=0.5)


def sample_paths(yhat: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: float, n: int = 400,
                 seed: int = 0) -> np.ndarray:
    """Predictive sample paths (n, len(yhat)) from the calibrated split-normal error model.

    Each path draws one standard-normal z and keeps it along the horizon (the error of an ops
    forecast is mostly a level/slope error, persistent along the path), scaled by the band's
    upper delta for z > 0 and lower delta for z < 0, so the sample quantiles reproduce the band.
    """
    z_level = NormalDist().inv_cdf((1 + level) / 2)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)[:, None]
    up = hi[None, :] / z_level
    down = -lo[None, :] / z_level
    return yhat[None, :] + np.where(z > 0, z * up, z * down)
