"""When is the next daily peak of a request-rate or concurrent-users target, and how high.

A seasonal-profile forecast, cheap enough to run on every pass in the forecaster's own process:
the history's last `days` days are cut into bins of local time of day (`timezone`, so a 14:00-16:00
peak stays at 14:00-16:00 across DST); each bin's value is the median over the days of the
day's mean in that bin (one odd day does not move it), lightly smoothed around the clock. The peak
is the highest bin, its window the contiguous bins around it within `window_share` of the
peak-to-trough range, and its expected value the profile's peak plus the level of the last day
relative to the profile (so growing traffic gives a higher next peak). Needs a whole day of history.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta, timezone as dtz
from zoneinfo import ZoneInfo

import numpy as np

DAY = 86400.0


@dataclass(frozen=True)
class DailyPeak:
    tod: float          # seconds after local midnight of the peak
    start: float        # seconds after local midnight where the peak window starts
    end: float          # ... and ends (end < start: the window wraps midnight)
    value: float        # expected value at the next peak
    days: float         # days of history the profile used
    timezone: str = "UTC"

    @property
    def hour(self) -> float:
        """Local hour of day of the peak (14.5 = 14:30)."""
        return self.tod / 3600.0

    def next_after(self, now: float) -> tuple[float, float, float]:
        """(window start, peak, window end) unix seconds of the first peak after ``now``."""
        tz = ZoneInfo(self.timezone)
        today = datetime.fromtimestamp(now, tz).date()
        for d in (today - timedelta(days=1), today, today + timedelta(days=1), today + timedelta(days=2)):
            peak = _at(d, self.tod, tz)
            if peak > now:
                before = (self.tod - self.start) % DAY
                after = (self.end - self.tod) % DAY
                return peak - before, peak, peak + after
        raise AssertionError("unreachable: a peak within two days")


def _at(d: date, tod: float, tz: ZoneInfo) -> float:
    """Unix time of local wall-clock time ``tod`` (seconds after midnight) on day ``d``."""
    return (datetime.combine(d, dtime(0)) + timedelta(seconds=tod)).replace(tzinfo=tz).timestamp()


def local_seconds(t: np.ndarray, tz: str) -> np.ndarray:
    """Seconds after local midnight of each unix time (zone offset looked up once per hour)."""
    zone = ZoneInfo(tz)
    hours = np.floor(t / 3600.0).astype(np.int64)
    offsets = {}
    for h in np.unique(hours):
        offsets[h] = datetime.fromtimestamp(float(h) * 3600.0, dtz.utc).astimezone(zone).utcoffset().total_seconds()
    off = np.array([offsets[h] for h in hours], float)
    return np.mod(t + off, DAY)


def daily_peak(t: np.ndarray, y: np.ndarray, tz: str = "UTC", bin_seconds: float = 900.0, days: float = 7.0,
               window_share: float = 0.1) -> DailyPeak | None:
    """The daily peak of the series (t unix seconds, y values); None with less than a day of history
    or without a daily shape (flat)."""
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(t) < 3 or t[-1] - t[0] < DAY - bin_seconds:
        return None
    keep = t > t[-1] - days * DAY
    t, y = t[keep], y[keep]
    nb = int(round(DAY / bin_seconds))
    tod = local_seconds(t, tz)
    b = np.minimum((tod // bin_seconds).astype(int), nb - 1)
    # the local day of each sample, counted back from the last one (0 = the last 24 h)
    day = np.floor((t[-1] - t) / DAY).astype(int)
    ndays = int(day.max()) + 1
    sums = np.zeros((ndays, nb))
    counts = np.zeros((ndays, nb))
    np.add.at(sums, (day, b), y)
    np.add.at(counts, (day, b), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    with warnings.catch_warnings():   # an all-empty bin is a NaN, filled below
        warnings.simplefilter("ignore", RuntimeWarning)
        profile = np.nanmedian(means, axis=0)
    have = np.isfinite(profile)
    if have.sum() < nb / 2:
        return None
    if not have.all():   # fill empty bins around the clock from their neighbours
        idx = np.arange(nb)
        profile = np.interp(idx, idx[have], profile[have], period=nb)
    smooth = (np.roll(profile, 1) + 2 * profile + np.roll(profile, -1)) / 4.0
    top = int(np.argmax(smooth))
    hi, lo = float(smooth[top]), float(np.min(smooth))
    if not math.isfinite(hi) or hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return None
    cut = hi - window_share * (hi - lo)
    left = top
    while smooth[(left - 1) % nb] >= cut and (top - left) < nb - 1:
        left -= 1
    right = top
    while smooth[(right + 1) % nb] >= cut and (right - left) < nb - 1:
        right += 1
    # the level of the last day against the profile (growth since the profile's days)
    last = day == 0
    level = float(np.mean(y[last] - smooth[b[last]])) if last.any() else 0.0
    return DailyPeak(tod=(top + 0.5) * bin_seconds, start=(left % nb) * bin_seconds,
                     end=((right + 1) % nb) * bin_seconds, value=hi + level,
                     days=float(min(ndays, (t[-1] - t[0]) / DAY)), timezone=tz)
