"""When to run a playbook that may wait: the next low-traffic window before a deadline.

A playbook with a ``schedule`` block (core/schema/remediation.py SCHEDULE; the shipped
``scheduled-restart`` for MemoryLeakOomPredicted) does not act when its alert fires but at the
quietest time that still comes before the deadline (the predicted OOM): a restart at 04:00 costs
a few dropped requests, at the 14:00 peak it costs many.

The daily traffic profile is the median, over the days of the history, of each day's mean in
each bin of local time of day (``timezone``, so a 03:00-05:00 trough stays there across DST),
lightly smoothed around the clock. Its low-traffic bins are those within ``quiet_share`` of the
daily range above the minimum; a window is a run of them. The plan (``plan``, pure):

1. the deadline is less than ``min_lead`` away (or already passed): act now (``imminent``);
2. no profile (under a day of history, or traffic without a daily shape): act now;
3. now is inside a low-traffic window: act now (``quiet_now``);
4. the next window's quietest bin, if it is at least ``margin`` before the deadline; else the
   latest time of that window that is: schedule there (``scheduled``);
5. no low-traffic time before deadline - margin: act now (``no_window``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone as dtz
from zoneinfo import ZoneInfo

import numpy as np

DAY = 86400.0


@dataclass(frozen=True)
class Plan:
    at: float                    # unix seconds to act (== now: at once)
    reason: str                  # imminent | no_profile | quiet_now | scheduled | no_window
    window: tuple[float, float] | None = None   # the low-traffic window chosen (unix seconds)
    deadline: float | None = None

    @property
    def now(self) -> bool:
        return self.reason != "scheduled"


def local_seconds(t: np.ndarray, tz: str) -> np.ndarray:
    """Seconds after local midnight of each unix time (offset looked up once per distinct hour)."""
    zone = ZoneInfo(tz)
    t = np.asarray(t, float)
    hours = np.floor(t / 3600.0).astype(np.int64)
    off = {}
    for h in np.unique(hours):
        off[h] = datetime.fromtimestamp(float(h) * 3600.0, dtz.utc).astimezone(zone).utcoffset().total_seconds()
    return np.mod(t + np.array([off[h] for h in hours], float), DAY)


def daily_profile(t: np.ndarray, y: np.ndarray, tz: str, bin_seconds: float = 900.0) -> np.ndarray | None:
    """Per-bin typical traffic over the local day (length DAY / bin_seconds), or None with under a
    day of history or without a daily shape."""
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(t) < 3 or t[-1] - t[0] < DAY - bin_seconds:
        return None
    nb = int(round(DAY / bin_seconds))
    b = np.minimum((local_seconds(t, tz) // bin_seconds).astype(int), nb - 1)
    day = np.floor((t[-1] - t) / DAY).astype(int)
    sums = np.zeros((day.max() + 1, nb))
    counts = np.zeros_like(sums)
    np.add.at(sums, (day, b), y)
    np.add.at(counts, (day, b), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = np.nanmedian(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), axis=0)
    have = np.isfinite(prof)
    if have.sum() < nb / 2:
        return None
    if not have.all():
        idx = np.arange(nb)
        prof = np.interp(idx, idx[have], prof[have], period=nb)
    prof = (np.roll(prof, 1) + 2 * prof + np.roll(prof, -1)) / 4.0
    lo, hi = float(prof.min()), float(prof.max())
    if not math.isfinite(hi) or hi - lo <= 1e-9 * max(1.0, abs(hi)):
        return None
    return prof


def plan(now: float, deadline: float | None, profile: np.ndarray | None, tz: str, quiet_share: float = 0.25,
         min_lead: float = 3600.0, margin: float = 1800.0, bin_seconds: float = 900.0) -> Plan:
    """When to act (see the module docstring). ``deadline``: unix seconds of the predicted OOM
    (None: unknown, treated as far away: the next window)."""
    if deadline is not None and deadline - now < min_lead:
        return Plan(now, "imminent", deadline=deadline)
    if profile is None:
        return Plan(now, "no_profile", deadline=deadline)
    nb = len(profile)
    lo, hi = float(profile.min()), float(profile.max())
    quiet = profile <= lo + quiet_share * (hi - lo)
    latest = (deadline - margin) if deadline is not None else now + 2 * DAY
    # walk bin by bin from now up to the latest allowed time
    first_bin_start = now - (local_seconds(np.array([now]), tz)[0] % bin_seconds)
    starts = np.arange(first_bin_start, max(latest, now) + bin_seconds, bin_seconds)
    bins = np.minimum((local_seconds(starts, tz) // bin_seconds).astype(int), nb - 1)
    q = quiet[bins]
    if q[0]:
        end = starts[0]
        i = 0
        while i < len(q) and q[i]:
            end = starts[i] + bin_seconds
            i += 1
        return Plan(now, "quiet_now", window=(float(starts[0]), float(end)), deadline=deadline)
    idx = np.flatnonzero(q)
    if len(idx) == 0:
        return Plan(now, "no_window", deadline=deadline)
    i0 = int(idx[0])
    i1 = i0
    while i1 + 1 < len(q) and q[i1 + 1]:
        i1 += 1
    # the whole window (it may reach past `latest`: what lies past it is not eligible)
    full_end = starts[i1] + bin_seconds
    while True:   # extend past the walked range to report the whole window
        b = int(min(local_seconds(np.array([full_end]), tz)[0] // bin_seconds, nb - 1))
        if not quiet[b] or full_end - starts[i0] >= DAY:
            break
        full_end += bin_seconds
    eligible = [k for k in range(i0, i1 + 1) if starts[k] + bin_seconds / 2 <= latest]
    if not eligible:
        return Plan(now, "no_window", deadline=deadline)
    best = min(eligible, key=lambda k: (profile[bins[k]], k))
    at = max(now, float(starts[best] + bin_seconds / 2))   # the middle of the quietest bin
    return Plan(at, "scheduled", window=(float(starts[i0]), float(full_end)), deadline=deadline)


def hhmm(ts: float, tz: str, now: float | None = None) -> str:
    """Local HH:MM (with the date when not the same local day as ``now``) and the zone."""
    d = datetime.fromtimestamp(ts, ZoneInfo(tz))
    same = now is not None and datetime.fromtimestamp(now, ZoneInfo(tz)).date() == d.date()
    return (d.strftime("%H:%M") if same else d.strftime("%Y-%m-%d %H:%M")) + f" {tz}"
