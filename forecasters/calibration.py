"""Interval calibration from backtest residuals, and predictive sample paths.

The backtest leaves, for the chosen model, residuals r[f, k] = truth - forecast for fold f at
step k (1..H). The band at step k is the (1-level)/2 and (1+level)/2 quantiles of the residuals
pooled over all folds and the steps near k (a log-scale neighbourhood, so the short horizons
have their own narrow band), made non-decreasing in k. Past the backtest horizon the band grows
like sqrt(k) for level models and like k for trend models (a slope error grows linearly).
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
        return lo, hi

    def to_dict(self) -> dict:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "step": self.step,
                "level": self.level, "growth": self.growth}


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
