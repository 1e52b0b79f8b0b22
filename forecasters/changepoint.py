"""The most recent change of regime in a series: a new trend (a leak starting) or a level shift.

The backtest chooses models on folds that end H rows (the forecast horizon) before the last
sample, so a leak that started an hour ago is in none of them: every candidate that scored well
there forecasts the old, flat regime, and no OOM is predicted until the trend has lasted longer
than the horizon. This module looks at the recent window alone, after the seasonal profile is
removed (the caller passes the deseasonalised values), and asks which of three explanations the
data support:

    null   one straight line over the window                          (2 parameters)
    step   a line, then from row k on a constant level                (3 + the change point)
    trend  a line, then from row k on another line (level and slope)  (4 + the change point)

For every candidate k at once (prefix sums of x, y, x², xy, y² give the least-squares residual
sum of squares of both sides in O(n)), then by the Bayesian information criterion
n ln(RSS/n) + p ln n. A change is the winner only when it beats the null by a clear margin
(`margin` in BIC units: multiple testing over all k makes small gains meaningless). A step that
explains the recent rows as well as a trend wins (fewer parameters): a fresh level shift of a
few rows is not a leak, nor is a step-up that then stays flat. The segment after a change is
searched again (binary segmentation, a few levels deep) so the **last** regime is the one used
— a leak that stopped is a plateau, not a trend.

The last segment is a trend when it has at least `min_rows` rows, a slope whose t statistic is
at least `min_t` (standard error from the segment's own residuals, floored by the noise of the
first differences of the whole window so that a perfectly straight short segment does not claim
infinite confidence), and a slope different from the one before the change.

Pure numpy; `forecasters.models.ChangePointTrend` turns the result into a forecast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Change:
    """The recent regime of the window (indices into the window that was searched)."""

    at: int                 # first row of the last segment (0 = no change found)
    kind: str               # "trend", "step" or "none"
    slope: float            # per row, of the last segment (0 unless kind == "trend")
    intercept: float        # value of the last segment's line at its first row (x = at)
    t_stat: float           # slope / standard error of the last segment (0 when not a trend)
    rows: int               # rows in the last segment
    noise: float            # noise standard deviation used

    @property
    def trend(self) -> bool:
        return self.kind == "trend"

    def level_at(self, x: np.ndarray | float) -> np.ndarray | float:
        """The last segment's line at window row x (x >= at)."""
        return self.intercept + self.slope * (np.asarray(x, float) - self.at)


def _cums(y: np.ndarray) -> tuple[np.ndarray, ...]:
    x = np.arange(len(y), dtype=float)
    z = np.zeros(1)
    return tuple(np.concatenate([z, np.cumsum(v)]) for v in (np.ones_like(y), x, y, x * x, x * y, y * y))


def _rss(c, a: np.ndarray, b: np.ndarray, line: bool) -> np.ndarray:
    """Least-squares RSS of rows [a, b) (vectors of bounds), a line or a constant."""
    n, sx, sy, sxx, sxy, syy = (v[b] - v[a] for v in c)
    with np.errstate(invalid="ignore", divide="ignore"):
        vy = syy - sy * sy / n
        if not line:
            return np.maximum(vy, 0.0)
        vx = sxx - sx * sx / n
        cxy = sxy - sx * sy / n
        out = np.where(vx > 0, vy - cxy * cxy / np.where(vx > 0, vx, 1.0), vy)
    return np.maximum(out, 0.0)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept at x[0], residual variance with n - 2 degrees of freedom)."""
    xx = x - x[0]
    if len(x) < 2 or np.ptp(xx) == 0:
        return 0.0, float(np.mean(y)), 0.0
    b, a = np.polyfit(xx, y, 1)
    r = y - (a + b * xx)
    dof = max(1, len(x) - 2)
    return float(b), float(a), float(np.sum(r * r) / dof)


def unusual_rise(before: np.ndarray, change: Change, quantile: float = 0.99, factor: float = 1.5) -> bool:
    """Is the new trend's rise so far (slope x its rows - 1) beyond what the series did before the
    change? The rises of ``before`` over the same number of rows (every start, both directions)
    give the usual movement; a cache or GC sawtooth, a nightly batch or a slow wander rises like
    that all the time, a leak after a quiet history does not. The high quantile, not the maximum,
    so that one earlier incident (a leak restarted days ago) does not hide the next one."""
    before = np.asarray(before, float)
    span = max(1, change.rows - 1)
    if len(before) < 4 * span:
        return True
    moves = np.abs(before[span:] - before[:-span])
    return abs(change.slope) * span > factor * float(np.quantile(moves, quantile))


def noise_sd(y: np.ndarray) -> float:
    """Robust noise standard deviation: MAD of the first differences / (0.6745 sqrt 2). A trend
    or a single step moves few differences, so it hardly counts."""
    d = np.diff(np.asarray(y, float))
    if len(d) == 0:
        return 0.0
    mad = float(np.median(np.abs(d - np.median(d))))
    return mad / (0.6745 * math.sqrt(2.0))


def lag1(y: np.ndarray) -> float:
    """Lag-1 autocorrelation of the residuals of a straight line through y, clipped to 0..0.95."""
    y = np.asarray(y, float)
    x = np.arange(len(y), dtype=float)
    if len(y) < 4 or np.ptp(y) == 0:
        return 0.0
    r = y - np.polyval(np.polyfit(x, y, 1), x)
    den = float(np.sum(r * r))
    if den <= 0:
        return 0.0
    return float(min(0.95, max(0.0, np.sum(r[1:] * r[:-1]) / den)))


def best_split(y: np.ndarray, min_rows: int = 4, margin: float = 10.0,
               floor: float = 0.0) -> tuple[str, int]:
    """("none", 0) or (kind, k): the explanation of y with the lowest BIC, a change only when its
    BIC beats the single line's by ``margin``; k is the first row of the segment after it.
    ``floor``: noise variance floor per row (a noise-free series must not win by ln(0))."""
    y = np.asarray(y, float)
    n = len(y)
    if n < 2 * min_rows + 2:
        return "none", 0
    c = _cums(y)
    fl = n * floor + 1e-300
    bic0 = n * math.log((float(_rss(c, np.array([0]), np.array([n]), True)[0]) + fl) / n) + 2 * math.log(n)
    # the pre-change part is a line of at least min_rows rows; the step's level may be a single
    # row (a fresh shift or one spike is a step, never a trend); the trend needs min_rows rows
    k_step = np.arange(min_rows, n)
    pre = _rss(c, np.zeros_like(k_step), k_step, True)
    post = _rss(c, k_step, np.full_like(k_step, n), False)
    bic_step = n * np.log((pre + post + fl) / n) + 4 * math.log(n)
    k_tr = np.arange(min_rows, n - min_rows + 1)
    pre_t = _rss(c, np.zeros_like(k_tr), k_tr, True)
    post_t = _rss(c, k_tr, np.full_like(k_tr, n), True)
    bic_tr = n * np.log((pre_t + post_t + fl) / n) + 5 * math.log(n)
    i_s = int(np.argmin(bic_step))
    best = ("step", int(k_step[i_s]), float(bic_step[i_s]))
    if len(k_tr):
        i_t = int(np.argmin(bic_tr))
        if float(bic_tr[i_t]) < best[2]:
            best = ("trend", int(k_tr[i_t]), float(bic_tr[i_t]))
    if best[2] > bic0 - margin:
        return "none", 0
    return best[0], best[1]


def recent_change(y: np.ndarray, min_rows: int = 4, min_t: float = 6.0, margin: float = 10.0,
                  depth: int = 4) -> Change:
    """The last regime of the window y (deseasonalised values, one per step)."""
    y = np.asarray(y, float)
    n = len(y)
    sd = noise_sd(y)
    scale = float(np.max(np.abs(y))) if n else 0.0
    floor = max(sd * sd, (1e-9 * scale) ** 2)
    starts, kind = [0], "none"
    for _ in range(depth):
        k_kind, k = best_split(y[starts[-1]:], min_rows, margin, floor)
        if k_kind == "none":
            break
        starts.append(starts[-1] + k)
        kind = k_kind
    start = starts[-1]
    if kind == "none":
        return Change(0, "none", 0.0, float(np.mean(y[-min_rows:])) if n else 0.0, 0.0, n, sd)
    seg = y[start:]
    x = np.arange(start, n, dtype=float)
    slope, icpt, var = _line(x, seg)
    rows = len(seg)
    if rows < min_rows:
        return Change(start, "step", 0.0, float(np.mean(seg)), 0.0, rows, sd)
    sxx = float(np.sum((x - x.mean()) ** 2))
    # the regime before the change: its line's slope, and its scatter around that line, which is
    # what the series does when nothing happens (a wandering, autocorrelated series has a wide
    # scatter but small step changes: a few rows of its wander must not count as a new trend)
    pre = y[starts[-2]:start]
    if len(pre) < min_rows:
        pre = y[:start]
    pre_slope, _, pre_var = _line(np.arange(len(pre), dtype=float), pre)
    # noise: the segment's own residual variance, never below the previous regime's scatter nor
    # the window's difference noise
    noise = math.sqrt(max(var, pre_var, sd * sd, (1e-9 * scale) ** 2))
    # autocorrelated noise (a series that wanders) makes a least-squares slope far less certain
    # than white noise would: the variance of the slope grows by (1 + phi) / (1 - phi) for AR(1)
    # noise with lag-1 autocorrelation phi, estimated on the residuals before the change
    # (on the previous regime when it is long enough: an older step before it is no autocorrelation)
    ref = pre if len(pre) >= 12 * min_rows else y[:start]
    phi = lag1(ref) if len(ref) >= 3 * min_rows else 0.0
    se = noise / math.sqrt(sxx) * math.sqrt((1 + phi) / (1 - phi)) if sxx > 0 else math.inf
    t = slope / se if se > 0 else 0.0
    changed = abs(slope - pre_slope) > min_t * se
    if abs(t) >= min_t and changed:
        return Change(start, "trend", slope, icpt, t, rows, noise)
    return Change(start, "step", 0.0, float(np.mean(seg)), t, rows, noise)
