"""Forecast maths on synthetic series with known truth (no servers)."""
from __future__ import annotations

import numpy as np
import pytest

from forecasters.calibration import band_from_residuals, sample_paths
from forecasters.engine import Spec, forecast_series, seconds_until
from forecasters.metrics import coverage, mase, mase_scale, smape

STEP = 300.0
DAY = 86400.0
CHEAP = ("naive", "seasonal_naive", "seasonal_mean", "recent_mean", "linear_trend", "long_trend")


def leak(days=3.0, start=0.2, slope=0.2 / DAY, noise=0.003, seed=0, t0=1.7e9):
    t = t0 + np.arange(0, days * DAY, STEP)
    rng = np.random.default_rng(seed)
    y = start + slope * (t - t0) + rng.normal(0, noise, len(t))
    return t, y


@pytest.mark.parametrize("candidates", [CHEAP, ("naive", "linear_trend", "prophet")])
def test_linear_leak_oom_time_within_10_percent_of_truth(candidates):
    slope = 0.2 / DAY
    t, y = leak(slope=slope)
    true_oom = t[0] + (1.0 - 0.2) / slope          # ratio reaches the limit (1.0)
    spec = Spec(step=STEP, horizons=(2 * DAY, 14 * DAY), thresholds=(1.0,), lower=0.0,
                candidates=candidates, folds=2)
    fc = forecast_series(t, y, spec)
    assert fc.model != "naive"
    predicted = fc.crossings[1.0].at
    truth_left = true_oom - t[-1]
    assert predicted is not None
    assert abs((predicted - t[-1]) - truth_left) <= 0.10 * truth_left
    # the band's crossing dates bracket the central one
    c = fc.crossings[1.0]
    assert c.earliest <= predicted <= (c.latest or float("inf"))
    # probabilities from the predictive samples: likely within 14d, rising with the horizon
    p2, p14 = fc.exceedance[(1.0, 2 * DAY)], fc.exceedance[(1.0, 14 * DAY)]
    assert p14 >= 0.9 and p2 <= p14
    assert seconds_until(predicted, t[-1]) == pytest.approx(predicted - t[-1])


def test_seconds_until_never_is_inf_and_past_is_zero():
    assert seconds_until(None, 100.0) == float("inf")
    assert seconds_until(50.0, 100.0) == 0.0


@pytest.mark.parametrize("model", [None, "prophet", "linear_trend"])
def test_bounded_ratio_never_forecast_outside_0_1(model):
    # a disk filling fast near the top, plus a daily wave: trends overshoot 1 without bounds
    t = 1.7e9 + np.arange(0, 3 * DAY, STEP)
    rng = np.random.default_rng(1)
    y = np.clip(0.80 + 0.06 * (t - t[0]) / DAY + 0.03 * np.sin(2 * np.pi * t / DAY)
                + rng.normal(0, 0.01, len(t)), 0, 1)
    spec = Spec(step=STEP, horizons=(2 * DAY, 30 * DAY), thresholds=(0.9, 0.99), lower=0.0, upper=1.0,
                candidates=CHEAP + ("prophet",), folds=2, model=model)
    fc = forecast_series(t, y, spec)
    for arr in (fc.yhat, fc.lower, fc.upper):
        assert np.all(arr >= 0.0) and np.all(arr <= 1.0)
    for h in fc.horizons.values():
        assert all(0.0 <= v <= 1.0 for v in h)
    assert all(0.0 <= p <= 1.0 for p in fc.exceedance.values())
    # a falling ratio too (floor at 0)
    fc2 = forecast_series(t, 1.0 - y, spec)
    assert np.all(fc2.lower >= 0.0) and np.all(fc2.yhat >= 0.0)


def test_seasonal_series_picks_a_seasonal_model_and_band_covers_about_80_percent():
    t = 1.7e9 + np.arange(0, 9 * DAY, STEP)
    rng = np.random.default_rng(2)
    y = 10 + 5 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 0.5, len(t))
    n_train = int(8 * DAY / STEP)
    spec = Spec(step=STEP, horizons=(DAY,), candidates=CHEAP, folds=4)
    h = len(t) - n_train
    fc = forecast_series(t[:n_train], y[:n_train], spec, horizon_rows=h)
    assert "seasonal" in fc.model
    truth = y[n_train:]
    assert 0.65 <= coverage(truth, fc.lower, fc.upper) <= 0.95
    scale = mase_scale(y[:n_train], m=288)
    naive_mase = mase(truth, np.full(h, y[n_train - 1]), scale)
    assert mase(truth, fc.yhat, scale) < naive_mase


def test_short_history_still_forecasts():
    t = 1.7e9 + np.arange(6) * STEP
    y = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    fc = forecast_series(t, y, Spec(step=STEP, horizons=(3600.0,), thresholds=(2.0,), candidates=CHEAP))
    assert np.all(np.isfinite(fc.yhat)) and np.all(fc.lower <= fc.upper)
    with pytest.raises(ValueError):
        forecast_series(t[:2], y[:2], Spec(step=STEP))


def test_metrics_on_known_values():
    y = np.array([1.0, 2, 3, 4, 5, 6])
    assert mase_scale(y, m=2) == pytest.approx(2.0)
    assert mase_scale(y, m=4) == pytest.approx(1.0)     # fewer than 2m rows: m = 1
    assert mase([1, 2], [2, 4], 1.5) == pytest.approx(1.0)
    assert smape([0, 1], [0, 1]) == 0.0
    assert smape([1], [3]) == pytest.approx(1.0)
    assert coverage([1, 2, 3, 4], [0, 0, 0, 5], [1.5, 1.5, 4, 6]) == 0.5


def test_band_from_gaussian_residuals_matches_normal_quantiles():
    rng = np.random.default_rng(4)
    res = rng.normal(0, 2.0, size=(40, 50))
    band = band_from_residuals(res, STEP, level=0.8)
    assert band.hi[-1] == pytest.approx(1.2816 * 2.0, rel=0.15)
    assert band.lo[-1] == pytest.approx(-1.2816 * 2.0, rel=0.15)
    assert np.all(np.diff(band.hi) >= 0) and np.all(np.diff(band.lo) <= 0)
    lo, hi = band.at(np.array([100 * STEP]))        # past the backtest horizon: wider
    assert hi[0] > band.hi[-1] and lo[0] < band.lo[-1]
    # the predictive samples reproduce the band
    s = sample_paths(np.zeros(50), band.lo, band.hi, 0.8, n=4000, seed=1)
    inside = np.mean((s[:, -1] >= band.lo[-1]) & (s[:, -1] <= band.hi[-1]))
    assert inside == pytest.approx(0.8, abs=0.03)


def test_forecast_at_interpolates_the_curve():
    t, y = leak(days=2)
    fc = forecast_series(t, y, Spec(step=STEP, horizons=(DAY,), candidates=("linear_trend",), folds=1))
    mid = t[-1] + DAY / 2
    yhat, lo, hi = fc.at(mid)
    assert lo <= yhat <= hi
    assert yhat == pytest.approx(float(np.interp(mid, fc.curve_t, fc.yhat)))


@pytest.mark.parametrize("kind", ["constant", "zeros", "spiky-at-floor"])
def test_degenerate_series_forecast_flat_and_finite(kind):
    # a fresh volume (all zeros) or a constant gauge: nothing to learn, nothing to cross
    t = 1.7e9 + np.arange(0, 2 * DAY, STEP)
    rng = np.random.default_rng(5)
    y = {"constant": np.full(len(t), 0.5), "zeros": np.zeros(len(t)),
         "spiky-at-floor": np.where(rng.random(len(t)) < 0.02, rng.random(len(t)) * 0.1, 0.0)}[kind]
    fc = forecast_series(t, y, Spec(step=STEP, horizons=(2 * DAY,), thresholds=(0.9,), lower=0.0, upper=1.0))
    assert np.all(np.isfinite(fc.yhat)) and np.all(fc.lower <= fc.upper)
    assert fc.crossings[0.9].at is None and fc.exceedance[(0.9, 2 * DAY)] < 0.5
