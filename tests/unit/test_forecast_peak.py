"""forecasters/peak.py: the next daily peak of a synthetic diurnal series (the demo's 14-16 h plateau)."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from forecasters.peak import DAY, daily_peak, local_seconds

SEOUL = "Asia/Seoul"


def _plateau(hour: np.ndarray) -> np.ndarray:
    """1 on 14:00-16:00 local, falling linearly to 0.2 twelve hours away (the demo's shape)."""
    d = np.abs(((hour - 15.0) + 12.0) % 24.0 - 12.0)          # circular distance to 15:00, 0..12 h
    return np.where(d <= 1.0, 1.0, 1.0 - 0.8 * (d - 1.0) / 11.0)


def _series(now: float, days: float, tz: str, step: float = 300.0, growth: float = 0.0, noise: float = 2.0):
    t = np.arange(now - days * DAY, now, step)
    hour = local_seconds(t, tz) / 3600.0
    y = 1000.0 * _plateau(hour) * (1 + growth * (t - t[0]) / DAY)
    y = y + np.random.default_rng(7).normal(0, noise, len(t))
    return t, y


def _local(ts: float, tz: str) -> datetime:
    return datetime.fromtimestamp(ts, ZoneInfo(tz))


def test_peak_of_a_diurnal_series_is_in_the_14_to_16_plateau():
    now = datetime(2026, 11, 20, 9, 30, tzinfo=ZoneInfo(SEOUL)).timestamp()
    t, y = _series(now, 7, SEOUL)
    p = daily_peak(t, y, SEOUL)
    assert p is not None and p.timezone == SEOUL
    assert 14.0 <= p.hour <= 16.0
    # the window is the plateau (within 10% of the peak-to-trough range: about 13:00 .. 17:00)
    assert 12.5 <= p.start / 3600 <= 14.0 and 16.0 <= p.end / 3600 <= 17.5
    assert p.value == pytest.approx(1000, rel=0.02)
    start, at, end = p.next_after(now)
    # now is 09:30 local: the next peak is today's, between 14:00 and 16:00 local
    assert _local(at, SEOUL).date() == _local(now, SEOUL).date()
    assert 14 <= _local(at, SEOUL).hour < 16 and start < at < end
    assert at - now < DAY


def test_after_today_s_peak_the_next_one_is_tomorrow():
    now = datetime(2026, 11, 20, 18, 0, tzinfo=ZoneInfo(SEOUL)).timestamp()
    t, y = _series(now, 4, SEOUL)
    _, at, _ = daily_peak(t, y, SEOUL).next_after(now)
    assert _local(at, SEOUL).day == 21 and 14 <= _local(at, SEOUL).hour < 16


def test_growing_traffic_gives_a_higher_next_peak():
    now = datetime(2026, 11, 20, 6, 0, tzinfo=ZoneInfo(SEOUL)).timestamp()
    t, y = _series(now, 7, SEOUL, growth=0.05)                 # +5% a day
    p = daily_peak(t, y, SEOUL)
    # the last day's peak was ~1000 * (1 + 0.05 * 6.6); the 7-day median profile alone says ~1150
    assert p.value == pytest.approx(1000 * (1 + 0.05 * 6.6), rel=0.05)


def test_one_odd_day_does_not_move_the_peak():
    now = datetime(2026, 11, 20, 6, 0, tzinfo=ZoneInfo(SEOUL)).timestamp()
    t, y = _series(now, 7, SEOUL)
    hour = local_seconds(t, SEOUL) / 3600
    odd = (t > now - 4 * DAY) & (t < now - 3 * DAY) & (np.abs(hour - 3) < 0.5)
    y = np.where(odd, 5000.0, y)                                 # one night of a batch job
    assert 14.0 <= daily_peak(t, y, SEOUL).hour <= 16.0


def test_peak_follows_local_time_across_a_dst_change():
    tz = "Europe/Berlin"                                         # DST ends 2026-10-25
    now = datetime(2026, 10, 28, 8, 0, tzinfo=ZoneInfo(tz)).timestamp()
    t, y = _series(now, 7, tz)
    p = daily_peak(t, y, tz)
    assert 14.0 <= p.hour <= 16.0
    assert 14 <= _local(p.next_after(now)[1], tz).hour < 16


def test_no_peak_without_a_whole_day_or_without_a_daily_shape():
    now = 1.8e9
    t, y = _series(now, 0.5, "UTC")
    assert daily_peak(t, y, "UTC") is None                       # half a day: not enough
    t = np.arange(now - 3 * DAY, now, 300.0)
    assert daily_peak(t, np.full(len(t), 42.0), "UTC") is None   # flat: no peak to speak of
