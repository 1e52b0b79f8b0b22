"""Forecast models: the baselines ops people trust, and a Prophet tuned for ops metrics.

Every model has the same small interface so the backtest can compare them:

    m = make_model("linear_trend", ctx)
    m.fit(t, y)                     # t: unix seconds (ascending), y: values (no NaN)
    yhat = m.predict(offsets)       # offsets: seconds after t[-1] -> point forecasts

Models are point forecasters; the interval comes from the backtest (calibration.py), the same
way for all of them, so that an 80% band means 80% whichever model won.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from forecasters._quiet import quiet_prophet
from forecasters.changepoint import Change, recent_change, unusual_rise

log = logging.getLogger(__name__)

DAY = 86400.0
WEEK = 7 * DAY


@dataclass
class FitContext:
    """What a model may know about the series besides its values."""

    step: float                       # seconds between samples
    seasonalities: tuple[float, ...] = (DAY, WEEK)  # candidate periods in seconds
    lower: float | None = None        # hard bounds of the quantity (e.g. 0..1 for a ratio)
    upper: float | None = None
    linear_window: float = 6 * 3600.0  # seconds of history the linear trend is fitted on
    season_rows: int | None = None    # explicit seasonal period in rows (overrides seasonalities)
    prophet: dict = field(default_factory=dict)  # extra Prophet settings (see ProphetModel)
    change_window: float = 2 * DAY    # seconds of history searched for a recent change (changepoint_trend)
    change_min_t: float = 6.0         # t statistic a new trend's slope needs (changepoint_trend)

    def period_rows(self, n: int) -> int | None:
        """The seasonal period in rows that fits at least twice in n rows, or None."""
        if self.season_rows:
            return self.season_rows if n >= 2 * self.season_rows else None
        for p in sorted(self.seasonalities):
            rows = int(round(p / self.step))
            if rows >= 2 and n >= 2 * rows:
                return rows
        return None


class Model:
    name = "model"
    #: how the backtest error grows past its horizon: "level" (sqrt) or "trend" (linear)
    error_growth = "level"

    def __init__(self, ctx: FitContext):
        self.ctx = ctx

    def fit(self, t: np.ndarray, y: np.ndarray) -> "Model":
        raise NotImplementedError

    def predict(self, offsets: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # helpers
    def _rows(self, offsets: np.ndarray) -> np.ndarray:
        """Offsets in seconds -> 1-based step numbers (at least 1)."""
        return np.maximum(1, np.rint(np.asarray(offsets, float) / self.ctx.step)).astype(int)


class Naive(Model):
    """The last value, forever."""

    name = "naive"

    def fit(self, t, y):
        self.last = float(y[-1])
        return self

    def predict(self, offsets):
        return np.full(len(offsets), self.last)


class SeasonalNaive(Model):
    """The value one season (period m rows) earlier; the last value when there is no season."""

    name = "seasonal_naive"

    def fit(self, t, y):
        self.m = self.ctx.period_rows(len(y)) or 1
        self.tail = np.asarray(y[-self.m:], float)
        return self

    def predict(self, offsets):
        k = self._rows(offsets)
        return self.tail[(k - 1) % self.m]


class SeasonalMean(Model):
    """Mean of the same phase over the last few seasons, shifted to the recent level.

    Robust against one odd day (the seasonal-naive weakness) and against a level shift
    (the profile is re-centred on the mean of the last season).
    """

    name = "seasonal_mean"
    seasons = 4

    def fit(self, t, y):
        y = np.asarray(y, float)
        m = self.ctx.period_rows(len(y))
        if m is None:
            self.m, self.profile = 1, np.array([float(np.mean(y[-min(len(y), 12):]))])
            return self
        k = min(self.seasons, len(y) // m)
        block = y[len(y) - k * m:].reshape(k, m)
        profile = np.median(block, axis=0)
        # re-centre: the level of the most recent season
        profile = profile - profile.mean() + block[-1].mean()
        self.m, self.profile = m, profile
        return self

    def predict(self, offsets):
        k = self._rows(offsets)
        return self.profile[(k - 1) % self.m]


class RecentMean(Model):
    """Mean of the recent window: the best constant for a noisy, level series."""

    name = "recent_mean"

    def fit(self, t, y):
        n = max(1, int(round(self.ctx.linear_window / self.ctx.step)))
        self.level = float(np.mean(np.asarray(y, float)[-n:]))
        return self

    def predict(self, offsets):
        return np.full(len(offsets), self.level)


class RecentMedian(Model):
    """Median of the recent window. MASE is an absolute error, whose best constant forecast is the
    median, not the mean: on spiky series (CPU, request bursts) the mean is pulled up by the spikes
    while most future values sit near the median."""

    name = "recent_median"

    def fit(self, t, y):
        n = max(1, int(round(self.ctx.linear_window / self.ctx.step)))
        self.level = float(np.median(np.asarray(y, float)[-n:]))
        return self

    def predict(self, offsets):
        return np.full(len(offsets), self.level)


_ALPHAS = np.array([0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])


def ses_level(y: np.ndarray, max_rows: int = 2016) -> tuple[float, float]:
    """Simple exponential smoothing: (final level, alpha) with alpha minimising the in-sample
    one-step absolute error over a grid (all alphas run at once, vectorised)."""
    y = np.asarray(y, float)[-max_rows:]
    level = np.full(len(_ALPHAS), y[0])
    err = np.zeros(len(_ALPHAS))
    for v in y[1:]:
        e = v - level
        err += np.abs(e)
        level = level + _ALPHAS * e
    i = int(np.argmin(err))
    return float(level[i]), float(_ALPHAS[i])


class SimpleExpSmoothing(Model):
    """Exponentially weighted level (alpha from the data): follows a level shift, ignores noise."""

    name = "ses"

    def fit(self, t, y):
        self.level, self.alpha = ses_level(y)
        return self

    def predict(self, offsets):
        return np.full(len(offsets), self.level)


class SeasonalSES(Model):
    """Seasonal profile (median of the last seasons) + an exponentially smoothed level.

    The deseasonalised series is smoothed like `ses`, so a level shift moves the whole
    profile within a few steps instead of a season later.
    """

    name = "seasonal_ses"
    seasons = 4

    def fit(self, t, y):
        y = np.asarray(y, float)
        m = self.ctx.period_rows(len(y))
        if m is None:
            self.m, self.profile = 1, np.zeros(1)
            self.level, _ = ses_level(y)
            self.phase0 = 0
            return self
        k = min(self.seasons, len(y) // m)
        block = y[len(y) - k * m:].reshape(k, m)
        profile = np.median(block, axis=0)
        profile = profile - profile.mean()
        # phase of row i (counted from the end): row n-1 has phase m-1 of the profile
        n = len(y)
        phases = (np.arange(n) - (n - k * m)) % m
        self.level, _ = ses_level(y - profile[phases])
        self.m, self.profile = m, profile
        return self

    def predict(self, offsets):
        k = self._rows(offsets)
        return self.level + self.profile[(k - 1) % self.m]


def season_profile(y: np.ndarray, m: int, seasons: int = 4, smooth: int = 0) -> np.ndarray:
    """Zero-mean seasonal profile of period m rows: the per-phase median over the last `seasons`
    seasons, optionally smoothed by a circular moving average of 2*smooth+1 phases (a median of
    4 values is noisy; neighbouring phases of a 5-minute daily profile hardly differ).
    Phase m-1 is the phase of the last row."""
    y = np.asarray(y, float)
    n = len(y)
    k = max(1, min(seasons, n // m - 1))
    if n >= (k + 1) * m:
        # classical decomposition: remove the centred moving average of one season first, so a
        # trend inside the window does not leak into the profile as a sawtooth
        tail = y[n - (k + 1) * m:]
        c = np.concatenate([[0.0], np.cumsum(tail)])
        ma = (c[m:] - c[:-m]) / m                        # mean of tail[i:i+m], centred at i+(m-1)/2
        h = m // 2
        detr = (tail[h:h + len(ma)] - ma)[1:]             # rows h+1 .. of tail: k*m values
        cols = np.median(detr.reshape(k, m), axis=0)     # column j = phase (h+1+j) mod m
        profile = np.roll(cols, (h + 1) % m)
    else:
        block = y[n - k * m:].reshape(k, m)
        profile = np.median(block, axis=0)
    if smooth > 0 and m > 2 * smooth + 1:
        w = 2 * smooth + 1
        ext = np.concatenate([profile[-smooth:], profile, profile[:smooth]])
        profile = np.convolve(ext, np.ones(w) / w, mode="valid")
    return profile - profile.mean()


def _phases(n: int, m: int) -> np.ndarray:
    """Profile phase of each of n rows (row n-1 has phase m-1)."""
    return (np.arange(n) - n) % m


class _Deseasonalised(Model):
    """Base of the models fitted on the series minus its (smoothed) seasonal profile."""

    seasons = 4
    smooth = 2
    max_rows = 2016

    def _split(self, y: np.ndarray) -> np.ndarray:
        """Sets self.m / self.profile, returns the deseasonalised tail (at most max_rows rows)."""
        y = np.asarray(y, float)
        m = self.ctx.period_rows(len(y))
        if m is None:
            self.m, self.profile = 1, np.zeros(1)
            return y[-self.max_rows:]
        self.m, self.profile = m, season_profile(y, m, self.seasons, self.smooth)
        return (y - self.profile[_phases(len(y), m)])[-self.max_rows:]

    def _season(self, k: np.ndarray) -> np.ndarray:
        return self.profile[(k - 1) % self.m]


class Theta(_Deseasonalised):
    """The Theta method (Assimakopoulos & Nikolopoulos 2000) in its SES-with-drift form
    (Hyndman & Billah 2003): on the deseasonalised series, an exponentially smoothed level plus
    half the least-squares slope, yhat(h) = l_n + b/2 * (h - 1 + 1/alpha)."""

    name = "theta"
    error_growth = "trend"

    def fit(self, t, y):
        d = self._split(y)
        self.level, self.alpha = ses_level(d)
        x = np.arange(len(d), dtype=float)
        self.slope = float(np.polyfit(x, d, 1)[0]) if len(d) >= 3 else 0.0
        return self

    def predict(self, offsets):
        k = self._rows(offsets)
        return self.level + self.slope / 2 * (k - 1 + 1 / self.alpha) + self._season(k)


# (alpha, beta, phi) grid of the damped-trend smoother, searched all at once
_A, _B, _P = np.meshgrid([0.02, 0.05, 0.1, 0.2, 0.4, 0.7], [0.0, 0.01, 0.05, 0.15], [0.8, 0.9, 0.98],
                         indexing="ij")
_A, _B, _P = _A.ravel(), (_A * _B).ravel(), _P.ravel()   # beta as a share of alpha (beta* <= alpha)


class DampedTrend(_Deseasonalised):
    """Additive damped-trend exponential smoothing, ETS(A,Ad,N) (Gardner & McKenzie 1985), on the
    deseasonalised series: level l, trend b damped by phi, parameters from a grid minimising the
    in-sample one-step absolute error. yhat(h) = l + (phi + ... + phi^h) b + season."""

    name = "damped_trend"
    error_growth = "trend"

    def fit(self, t, y):
        d = self._split(y)
        n = len(d)
        lv = np.full(len(_A), d[0])
        b0 = float(np.mean(np.diff(d[:min(n, 13)]))) if n > 2 else 0.0
        tr = np.full(len(_A), b0)
        err = np.zeros(len(_A))
        warm = min(n - 1, 12)
        for i in range(1, n):
            f = lv + _P * tr
            e = d[i] - f
            if i > warm:
                err += np.abs(e)
            lv_new = f + _A * e
            tr = _P * tr + _B * e
            lv = lv_new
        j = int(np.argmin(err))
        self.level, self.trend, self.phi = float(lv[j]), float(tr[j]), float(_P[j])
        self.alpha, self.beta = float(_A[j]), float(_B[j])
        return self

    def predict(self, offsets):
        k = self._rows(offsets)
        phi = self.phi
        damp = phi * (1 - phi ** k) / (1 - phi) if phi < 1 else k.astype(float)
        return self.level + damp * self.trend + self._season(k)


class SmoothSeasonalSES(_Deseasonalised):
    """seasonal_ses with a smoothed profile over more seasons (less noise in the profile)."""

    name = "seasonal_ses_smooth"
    seasons = 7
    smooth = 3

    def fit(self, t, y):
        d = self._split(y)
        self.level, _ = ses_level(d)
        return self

    def predict(self, offsets):
        k = self._rows(offsets)
        return self.level + self._season(k)


class WeeklySeasonalSES(SmoothSeasonalSES):
    """seasonal_ses on the longest seasonality that fits twice in the history, when it is longer than
    the one the other seasonal models use (a week beside a day): traffic and user-driven series
    repeat weekly (weekends differ from weekdays), which a daily profile cannot follow. Does not fit
    (the backtest skips it) when no such second season fits."""

    name = "weekly_ses"
    seasons = 4
    smooth = 0        # no smoothing across phases: a week has sharp weekday/weekend edges

    def _split(self, y):
        y = np.asarray(y, float)
        n = len(y)
        fits = [r for r in (int(round(p / self.ctx.step)) for p in sorted(self.ctx.seasonalities))
                if r >= 2 and n >= 2 * r]
        if self.ctx.season_rows or len(fits) < 2:
            raise ValueError("no second, longer seasonality fits twice in the history")
        self.m = fits[-1]
        self.profile = season_profile(y, self.m, self.seasons, self.smooth)
        return (y - self.profile[_phases(n, self.m)])[-self.max_rows:]


class LinearTrend(Model):
    """Least squares over the recent window, extrapolated (what PromQL predict_linear does)."""

    name = "linear_trend"
    error_growth = "trend"

    def fit(self, t, y):
        t = np.asarray(t, float)
        y = np.asarray(y, float)
        sel = t >= t[-1] - self.ctx.linear_window
        if sel.sum() < 2:
            sel = np.zeros(len(t), bool)
            sel[-min(len(t), 2):] = True
        tt, yy = t[sel] - t[-1], y[sel]
        if len(tt) >= 2 and np.ptp(tt) > 0:
            self.slope, self.intercept = np.polyfit(tt, yy, 1)
        else:
            self.slope, self.intercept = 0.0, float(yy[-1])
        return self

    def predict(self, offsets):
        return self.intercept + self.slope * np.asarray(offsets, float)


class LongTrend(LinearTrend):
    """Least squares over the whole history: slow leaks and capacity growth."""

    name = "long_trend"

    def fit(self, t, y):
        t = np.asarray(t, float)
        y = np.asarray(y, float)
        tt = t - t[-1]
        if len(tt) >= 2 and np.ptp(tt) > 0:
            self.slope, self.intercept = np.polyfit(tt, y, 1)
        else:
            self.slope, self.intercept = 0.0, float(y[-1])
        return self


class ChangePointTrend(_Deseasonalised):
    """The trend of the last regime: on the deseasonalised series, the most recent significant
    change in the last ``ctx.change_window`` (forecasters/changepoint.py: a line, then a step or a
    new line, chosen by BIC, searched again after each change); when the last segment is a
    significant new trend (a leak that started after the backtest's folds) the forecast
    extrapolates that segment's line, otherwise it is the smoothed level (like ses) + season.
    ``detected`` says which; the engine uses it for targets with ``change_point`` even when the
    backtest, which only saw the old regime, chose another model."""

    name = "changepoint_trend"
    error_growth = "trend"
    min_rows = 4          # rows after the change before a new trend counts
    margin = 10.0         # BIC units a change must win by (multiple testing over every row)

    def fit(self, t, y):
        d = self._split(y)
        w = max(2 * self.min_rows + 2, int(round(self.ctx.change_window / self.ctx.step)))
        win = d[-w:]
        self.change: Change = recent_change(win, min_rows=self.min_rows, min_t=self.ctx.change_min_t,
                                            margin=self.margin)
        if self.change.trend and unusual_rise(d[:len(d) - len(win) + self.change.at], self.change):
            self.level = float(self.change.level_at(len(win) - 1))
            self.slope = self.change.slope
        else:
            if self.change.trend:   # the series has risen like this before (a sawtooth, a batch): no new regime
                self.change = dataclasses.replace(self.change, kind="usual")
            self.level, _ = ses_level(d)
            self.slope = 0.0
        return self

    @property
    def detected(self) -> bool:
        return self.change.trend

    def predict(self, offsets):
        k = self._rows(offsets)
        return self.level + self.slope * k + self._season(k)


# Prophet defaults for ops metrics, after the NAB backtests (docs/forecasting.md):
# a stiff trend (small changepoint prior) that only bends in the recent part, additive
# daily/weekly seasonality with modest Fourier orders, no yearly/holidays, MAP fit.
PROPHET_DEFAULTS = {
    "changepoint_prior_scale": 0.01,
    "changepoint_range": 0.9,
    "n_changepoints": 15,
    "seasonality_prior_scale": 5.0,
    "daily_fourier_order": 8,
    "weekly_fourier_order": 3,
    "window": 14 * DAY,       # fit on at most this much recent history (speed, recency)
}


class ProphetModel(Model):
    """Prophet tuned for ops metrics; logistic growth between the bounds when both are set."""

    name = "prophet"
    growth = "linear"
    error_growth = "trend"

    def _settings(self) -> dict:
        s = dict(PROPHET_DEFAULTS)
        s.update(self.ctx.prophet or {})
        return s

    def fit(self, t, y):
        import pandas as pd  # heavy: pandas, only when Prophet fits

        quiet_prophet()
        from prophet import Prophet

        s = self._settings()
        t = np.asarray(t, float)
        y = np.asarray(y, float)
        sel = t >= t[-1] - s["window"]
        t, y = t[sel], y[sel]
        self.t_last = t[-1]
        span = t[-1] - t[0]
        if np.ptp(y) <= 1e-12 * max(1.0, float(np.max(np.abs(y)))):
            raise ValueError("constant series: nothing for Prophet to fit")
        growth = self.growth
        lo, hi = self.ctx.lower, self.ctx.upper
        if growth == "linear" and lo is not None and hi is not None:
            # logistic growth between the bounds, when the data stays inside them; data sitting on a
            # bound makes the logistic fit slow and unstable (the output is clipped to the bounds anyway)
            margin = 0.005 * (hi - lo)
            if float(np.min(y)) > lo + margin and float(np.max(y)) < hi - margin:
                growth = "logistic"
        # Prophet works in its own scaled space; keep y moderate for numerical stability
        self.offset = float(np.median(y))
        self.scale = float(np.std(y)) or (abs(self.offset) or 1.0)
        ys = (y - self.offset) / self.scale
        df = pd.DataFrame({"ds": pd.to_datetime(t, unit="s"), "y": ys})
        if growth == "logistic":
            cap = (hi - self.offset) / self.scale
            floor = (lo - self.offset) / self.scale
            # logistic growth needs every value strictly inside (floor, cap)
            eps = 1e-6 * (cap - floor)
            df["y"] = np.clip(df["y"], floor + eps, cap - eps)
            df["cap"], df["floor"] = cap, floor
            self.cap, self.floor = cap, floor
        m = Prophet(
            growth=growth,
            changepoint_prior_scale=s["changepoint_prior_scale"],
            changepoint_range=s["changepoint_range"],
            n_changepoints=int(min(s["n_changepoints"], max(0, len(df) // 10))),
            seasonality_prior_scale=s["seasonality_prior_scale"],
            yearly_seasonality=False, weekly_seasonality=False, daily_seasonality=False,
            uncertainty_samples=0,
        )
        if span >= 2 * DAY and DAY in self.ctx.seasonalities and self.ctx.step < DAY / 4:
            m.add_seasonality("daily", period=1, fourier_order=s["daily_fourier_order"])
        if span >= 2 * WEEK and WEEK in self.ctx.seasonalities and self.ctx.step < WEEK / 4:
            m.add_seasonality("weekly", period=7, fourier_order=s["weekly_fourier_order"])
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=Warning)  # pandas 3.1 deprecations inside prophet
            m.fit(df, algorithm="Newton" if len(df) < 100 else "LBFGS")
        self.m, self.growth_used = m, growth
        return self

    def predict(self, offsets):
        import pandas as pd

        ds = pd.to_datetime(self.t_last + np.asarray(offsets, float), unit="s")
        fut = pd.DataFrame({"ds": ds})
        if self.growth_used == "logistic":
            fut["cap"], fut["floor"] = self.cap, self.floor
        import warnings

        with warnings.catch_warnings():
            # prophet 1.5 calls DataFrame.drop(inplace=True), deprecated in pandas 3.1
            warnings.simplefilter("ignore", category=Warning)
            out = self.m.predict(fut)["yhat"].to_numpy()
        return out * self.scale + self.offset


class ProphetFlat(ProphetModel):
    """Prophet with a flat trend: level + seasonality, no extrapolated drift."""

    name = "prophet_flat"
    growth = "flat"
    error_growth = "level"


MODELS: dict[str, type[Model]] = {
    m.name: m for m in (Naive, SeasonalNaive, SeasonalMean, RecentMean, SimpleExpSmoothing, SeasonalSES,
                        LinearTrend, LongTrend, ProphetModel, ProphetFlat, Theta, DampedTrend,
                        SmoothSeasonalSES, ChangePointTrend, WeeklySeasonalSES, RecentMedian)
}
BASELINES = ("naive", "seasonal_naive", "linear_trend")
# Prophet is not a default candidate: its fits cost far more CPU than all the others together, which the
# 1000-targets-per-15-minutes budget on 2 cores excludes (docs/forecasting.md); list it in forecast.models.
DEFAULT_CANDIDATES = ("naive", "seasonal_naive", "seasonal_mean", "recent_mean", "ses", "seasonal_ses",
                      "seasonal_ses_smooth", "theta", "damped_trend", "linear_trend", "long_trend",
                      "recent_median", "weekly_ses")


def make_model(name: str, ctx: FitContext) -> Model:
    try:
        return MODELS[name](ctx)
    except KeyError:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})") from None


def clip(values: np.ndarray, lower: float | None, upper: float | None) -> np.ndarray:
    if lower is None and upper is None:
        return values
    return np.clip(values, -math.inf if lower is None else lower, math.inf if upper is None else upper)
