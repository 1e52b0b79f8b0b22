"""Own statistical models (theta, damped trend, detrended seasonal profile) and the per-series
conformal calibration of the band, on synthetic series with known truth and noise."""
import numpy as np
import pytest

from forecasters.calibration import Band, band_from_residuals, calibrate, recent_range
from forecasters.engine import Spec, forecast_series
from forecasters.models import FitContext, _phases, make_model, season_profile

STEP = 300.0
DAY_ROWS = 288


def test_season_profile_is_not_bent_by_a_trend():
    rng = np.random.default_rng(3)
    n = 12 * DAY_ROWS
    x = np.arange(n)
    season = 10 * np.sin(2 * np.pi * x / DAY_ROWS)
    y = season + 0.03 * x + rng.normal(0, 2, n)     # +8.6 per day: a plain per-phase median saws by ~8
    prof = season_profile(y, DAY_ROWS, seasons=4, smooth=2)
    err = np.abs(prof[_phases(n, DAY_ROWS)] - season)
    assert err.mean() < 1.0 and err.max() < 3.0
    assert abs(prof.mean()) < 1e-9


def test_theta_extrapolates_half_the_slope_and_damped_trend_follows_it():
    rng = np.random.default_rng(4)
    n = 2000
    t = 1.7e9 + np.arange(n) * STEP
    y = 100 + 0.05 * np.arange(n) + rng.normal(0, 0.5, n)
    ctx = FitContext(step=STEP, seasonalities=())
    k = np.array([1, 289]) * STEP
    th = make_model("theta", ctx).fit(t, y).predict(k)
    assert (th[1] - th[0]) / 288 == pytest.approx(0.05 / 2, rel=0.1)   # SES with drift b/2
    dt = make_model("damped_trend", ctx).fit(t, y).predict(np.arange(1, 13) * STEP)
    truth = 100 + 0.05 * (n - 1 + np.arange(1, 13))
    assert np.abs(dt - truth).max() < 1.5


def test_seasonal_models_forecast_a_seasonal_series_near_the_noise_floor():
    rng = np.random.default_rng(5)
    n = 10 * DAY_ROWS
    t = 1.7e9 + np.arange(n) * STEP
    y = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / DAY_ROWS) + rng.normal(0, 1, n)
    ctx = FitContext(step=STEP)
    truth = 50 + 10 * np.sin(2 * np.pi * np.arange(n, n + DAY_ROWS) / DAY_ROWS)
    for name in ("theta", "damped_trend", "seasonal_ses_smooth"):
        f = make_model(name, ctx).fit(t, y).predict(np.arange(1, DAY_ROWS + 1) * STEP)
        assert np.mean(np.abs(f - truth)) < 1.0, name      # noise sd 1; the season alone is 6.4 MAE


def test_calibrate_scales_a_too_narrow_band_to_the_level():
    rng = np.random.default_rng(6)
    res = rng.normal(0, 1, (8, 100))
    band = Band(lo=np.full(100, -0.5), hi=np.full(100, 0.5), step=STEP)   # far too narrow for sd 1
    band = calibrate(band, np.zeros((8, 100)), res, None, margin=0.0)
    assert band.scale == pytest.approx(1.2816 / 0.5, rel=0.1)
    fresh = rng.normal(0, 1, 20000)
    lo, hi = band.interval(np.zeros(1), np.array([STEP]))
    assert np.mean((fresh >= lo[0]) & (fresh <= hi[0])) == pytest.approx(0.8, abs=0.03)


def test_calibrate_uses_the_recent_range_when_residuals_are_degenerate():
    # intermittent series: a residual band of width 0 (most backtest residuals exactly 0) around a
    # forecast of 0.5, while the truth jumps between 0 and 1: no scale of that band covers anything,
    # the recent-range floor does
    truth = np.tile([0.0, 0.0, 1.0, 1.0, 0.0], (8, 20))
    fc = np.full_like(truth, 0.5)
    zero = Band(lo=np.zeros(100), hi=np.zeros(100), step=STEP)
    assert calibrate(zero, fc, truth, None).scale == 3.0      # capped: nothing finite covers
    band = Band(lo=np.zeros(100), hi=np.zeros(100), step=STEP)
    floors = np.tile([[0.0, 1.0]], (8, 1))
    assert calibrate(band, fc, truth, floors).scale == 0.0    # the floor alone covers everything
    band.set_floor(recent_range(np.tile([0.0, 0.0, 1.0, 1.0, 0.0], 40), 100))
    assert (band.floor_lo, band.floor_hi) == (0.0, 1.0)
    lower, upper = band.interval(np.full(5, 0.5), np.arange(1, 6) * STEP)
    assert np.all(lower <= 0.0) and np.all(upper >= 1.0)
    assert band_from_residuals(truth - fc, STEP).hi.max() > 0  # (the usual band is not degenerate here)


@pytest.mark.parametrize("noise", ["gauss", "laplace", "ar1"])
def test_calibrated_band_covers_about_80_percent_of_the_future(noise):
    """Seasonal series with known noise, forecast at 6 cutoffs 8 hours apart with model selection: the calibrated
    80% band covers 70-90% of the next day's truth on average (a wrong band width or a band that
    ignores the noise family lands outside)."""
    rng = np.random.default_rng({"gauss": 11, "laplace": 12, "ar1": 13}[noise])
    n = 9 * DAY_ROWS
    x = np.arange(n)
    if noise == "gauss":
        e = rng.normal(0, 2, n)
    elif noise == "laplace":
        e = rng.laplace(0, 2, n)
    else:                                  # persistent errors: AR(1), phi 0.95, stationary sd 2
        z = rng.normal(0, 2 * np.sqrt(1 - 0.95 ** 2), n)
        e = np.zeros(n)
        for i in range(1, n):
            e[i] = 0.95 * e[i - 1] + z[i]
    y = 40 + 8 * np.sin(2 * np.pi * x / DAY_ROWS) + e
    t = 1.7e9 + x * STEP
    covs = []
    for c in range(6):
        end = n - DAY_ROWS - c * 96
        fc = forecast_series(t[:end], y[:end], Spec(step=STEP, horizons=(DAY_ROWS * STEP,)),
                             horizon_rows=DAY_ROWS)
        truth = y[end:end + DAY_ROWS]
        covs.append(np.mean((truth >= fc.lower) & (truth <= fc.upper)))
        assert fc.band is not None and fc.band.scale > 0
    assert 0.70 <= float(np.mean(covs)) <= 0.90, covs


def test_recent_median_is_the_absolute_error_optimal_level_of_a_spiky_series():
    # a CPU-like series: a steady level with rare tall spikes; the mean is pulled up, the median is not
    rng = np.random.default_rng(11)
    n = 3 * DAY_ROWS
    t = 1.7e9 + np.arange(n) * STEP
    base = 20 + rng.normal(0, 1, n + DAY_ROWS)
    spikes = np.where(rng.random(n + DAY_ROWS) < 0.08, 60.0, 0.0)
    y_all = base + spikes
    y, future = y_all[:n], y_all[n:]
    ctx = FitContext(step=STEP, seasonalities=())
    offs = np.arange(1, DAY_ROWS + 1) * STEP
    med = make_model("recent_median", ctx).fit(t, y).predict(offs)
    mean = make_model("recent_mean", ctx).fit(t, y).predict(offs)
    assert med[0] == pytest.approx(np.median(y[-72:]))              # last 6 h
    assert np.mean(np.abs(future - med)) < np.mean(np.abs(future - mean))


def test_weekly_ses_follows_a_weekly_shape_and_does_not_fit_without_two_weeks():
    step = 3600.0
    week = 168
    rng = np.random.default_rng(12)
    n = 4 * week
    x = np.arange(n + week)
    day = x // 24
    shape = 10 * np.sin(2 * np.pi * x / 24) + np.where(day % 7 >= 5, -30.0, 0.0)   # quiet weekends
    y_all = 100 + shape + rng.normal(0, 1, len(x))
    t = 1.7e9 + np.arange(n) * step
    ctx = FitContext(step=step)
    offs = np.arange(1, week + 1) * step
    truth = 100 + shape[n:]
    weekly = make_model("weekly_ses", ctx).fit(t, y_all[:n]).predict(offs)
    daily = make_model("seasonal_ses_smooth", ctx).fit(t, y_all[:n]).predict(offs)
    assert np.mean(np.abs(weekly - truth)) < 2.0
    assert np.mean(np.abs(weekly - truth)) < np.mean(np.abs(daily - truth)) / 3
    with pytest.raises(ValueError):          # the backtest then skips it (only one season fits)
        make_model("weekly_ses", ctx).fit(t[:week + 24], y_all[:week + 24])
