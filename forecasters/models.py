"""Forecast models: the baselines ops people trust, and a Prophet tuned for ops metrics.

Every model has the same small interface so the backtest can compare them:

    m = make_model("linear_trend", ctx)
    m.fit(t, y)                     # t: unix seconds (ascending), y: values (no NaN)
    yhat = m.predict(offsets)       # offsets: seconds after t[-1] -> point forecasts

Models are point forecasters; the interval comes from the backtest (calibration.py), the same
way for all of them, so that an 80% band means 80% whichever model won.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from forecasters._quiet import quiet_prophet

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
                        LinearTrend, LongTrend, ProphetModel, ProphetFlat)
}
BASELINES = ("naive", "seasonal_naive", "linear_trend")
DEFAULT_CANDIDATES = ("naive", "seasonal_naive", "seasonal_mean", "recent_mean", "ses", "seasonal_ses",
                      "linear_trend", "long_trend", "prophet", "prophet_flat")


def make_model(name: str, ctx: FitContext) -> Model:
    try:
        return MODELS[name](ctx)
    except KeyError:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})") from None


def clip(values: np.ndarray, lower: float | None, upper: float | None) -> np.ndarray:
    if lower is None and upper is None:
        return values
    return np.clip(values, -math.inf if lower is None else lower, math.inf if upper is None else upper)
