"""A recent new trend (forecasters/changepoint.py, models.ChangePointTrend, the engine's override
for change_point targets): a leak that starts after 14 days of flat history is forecast to reach
the limit at about the right time soon after it starts, and nothing else is taken for a leak —
a flat noisy series, a wandering (autocorrelated) one, a diurnal one, a step-up that stays flat,
a fresh step, a spike."""
from __future__ import annotations

import numpy as np
import pytest

from forecasters.changepoint import best_split, recent_change
from forecasters.engine import Spec, forecast_series
from forecasters.models import FitContext, make_model

DAY = 86400.0
STEP = 300.0
N = 14 * 288            # 14 days of 5-minute rows, like the demo's backfilled history
T0 = 1.7e9


def _spec(**kw) -> Spec:
    return Spec(step=STEP, horizons=(2 * DAY,), thresholds=(1.0,), lower=0.0, change_point=True, **kw)


def _cross_minutes(y: np.ndarray, spec: Spec | None = None) -> float | None:
    t = T0 + np.arange(len(y)) * STEP
    fc = forecast_series(t, y, spec or _spec())
    at = fc.crossings[1.0].at
    return None if at is None else (at - t[-1]) / 60.0


def _flat_history(rng) -> np.ndarray:
    # memory / limit of the demo: ~7% with a slow growth and 256 KiB of noise on 512 MiB
    return 0.066 + 0.0015 * np.arange(N) / N + rng.normal(0, 0.0005, N)


@pytest.mark.parametrize("elapsed", [15, 25, 35, 45])
def test_leak_after_flat_history_predicts_the_oom(elapsed):
    """A 50-minute leak (7% -> 100%): from 15 minutes in, the OOM time is within 5 minutes of the
    truth (the old forecast, a median of level models, predicted none)."""
    rng = np.random.default_rng(elapsed)
    k = elapsed // 5
    ramp = 0.066 + (1 - 0.066) * np.arange(1, k + 1) / 10
    y = np.concatenate([_flat_history(rng), ramp + rng.normal(0, 0.0005, k)])
    got = _cross_minutes(y)
    assert got is not None, "a leak is forecast to reach the limit"
    assert abs(got - (50 - elapsed)) <= 5.0, got


def test_without_change_point_the_backtest_choice_misses_the_leak():
    """Why the override exists: the backtest's folds end 48 h before the last row."""
    rng = np.random.default_rng(3)
    ramp = 0.066 + (1 - 0.066) * np.arange(1, 5) / 10
    y = np.concatenate([_flat_history(rng), ramp])
    spec = Spec(step=STEP, horizons=(2 * DAY,), thresholds=(1.0,), lower=0.0)
    assert _cross_minutes(y, spec) is None
    assert _cross_minutes(y) is not None


def test_slow_leak_hours_long():
    rng = np.random.default_rng(4)
    steps, k = 6 * 12, 3 * 12            # a 6-hour leak, 3 hours in
    ramp = 0.066 + (1 - 0.066) * np.arange(1, k + 1) / steps
    got = _cross_minutes(np.concatenate([_flat_history(rng), ramp + rng.normal(0, 0.0005, k)]))
    assert got is not None and abs(got - 180) <= 15


def _quiet_cases(rng) -> dict[str, np.ndarray]:
    i = np.arange(N)
    tod = i % 288
    ar = np.convolve(rng.normal(0, 0.02, N + 60), 0.9 ** np.arange(60), "valid")[:N]
    step_flat = 0.3 + rng.normal(0, 0.01, N) + np.where(i >= N - 120, 0.3, 0.0)
    fresh_step = 0.3 + rng.normal(0, 0.01, N) + np.where(i >= N - 3, 0.3, 0.0)
    spike = 0.3 + rng.normal(0, 0.01, N)
    spike[-1] += 0.5
    return {
        "flat noisy": 0.3 + rng.normal(0, 0.05, N),
        "flat heavy-tailed": 0.3 + rng.laplace(0, 0.05, N),
        "wandering (AR(1) 0.9)": 0.3 + ar,
        "diurnal": 0.4 + 0.2 * np.sin(2 * np.pi * tod / 288) + rng.normal(0, 0.02, N),
        "step-up, then flat": step_flat,
        "fresh step (3 rows)": fresh_step,
        "one spike": spike,
        # a cache/GC sawtooth: hours-long rises, then a drop, again and again
        "sawtooth": 0.3 + (i + int(rng.integers(0, 144))) % int(rng.integers(48, 200)) / 200 * 0.2
        + rng.normal(0, 0.002, N),
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_false_oom_on_series_without_a_leak(seed):
    rng = np.random.default_rng(seed)
    for name, y in _quiet_cases(rng).items():
        assert _cross_minutes(y) is None, f"{name}: a crossing predicted"


def test_the_detector_itself_stays_quiet_over_many_draws():
    """The model alone (no backtest), 20 draws of each quiet case: never a new upward trend."""
    ctx = FitContext(step=STEP)
    t = np.arange(N) * STEP
    rng = np.random.default_rng(11)
    for _ in range(20):
        for name, y in _quiet_cases(rng).items():
            m = make_model("changepoint_trend", ctx).fit(t, y)
            assert not m.detected, f"{name}: {m.change}"


def test_a_second_leak_days_after_a_first_one_is_still_a_leak():
    """The rise check (the series rose like this before?) uses a high quantile of the past rises:
    one earlier leak, restarted 3 days ago, does not hide the next one."""
    rng = np.random.default_rng(8)
    hist = _flat_history(rng)
    i0 = N - 3 * 288
    hist[i0:i0 + 10] += np.arange(1, 11) / 10 * 0.9
    ramp = 0.066 + (1 - 0.066) * np.arange(1, 5) / 10
    got = _cross_minutes(np.concatenate([hist, ramp]))
    assert got is not None and abs(got - 30) <= 5


def test_best_split_kinds():
    rng = np.random.default_rng(0)
    flat = rng.normal(0, 0.01, 200)
    assert best_split(flat, floor=1e-4)[0] == "none"
    step = flat + np.where(np.arange(200) >= 150, 1.0, 0.0)
    assert best_split(step, floor=1e-4) == ("step", 150)
    ramp = flat + np.where(np.arange(200) >= 170, (np.arange(200) - 170) * 0.1, 0.0)
    kind, k = best_split(ramp, floor=1e-4)
    assert kind == "trend" and abs(k - 170) <= 2


def test_recent_change_uses_the_last_regime():
    """A leak that stopped (ramp, then a plateau) is a step, not a trend; a leak after an earlier
    restart (a step down) is found after it."""
    rng = np.random.default_rng(1)
    x = np.arange(300)
    plateau = np.clip((x - 200) * 0.01, 0, 0.5) + rng.normal(0, 0.002, 300)   # ramp 200..250, then flat
    assert not recent_change(plateau).trend
    restart_then_leak = (np.where(x < 150, 0.6, 0.1) + np.where(x >= 270, (x - 270) * 0.02, 0.0)
                         + rng.normal(0, 0.002, 300))
    c = recent_change(restart_then_leak)
    assert c.trend and abs(c.at - 270) <= 2 and c.slope == pytest.approx(0.02, rel=0.1)


def test_forecast_change_point_config():
    from core.config import ConfigError, load_data

    assert load_data({})["forecast"]["change_point"]["kinds"] == ["memory"]
    with pytest.raises(ConfigError) as e:
        load_data({"forecast": {"change_point": {"kinds": ["ram"]}}})
    assert "forecast.change_point.kinds" in str(e.value)
