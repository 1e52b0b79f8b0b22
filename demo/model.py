"""The demo platform's traffic model: pure functions, no servers.

- ``diurnal_factor(hour)``: load relative to the daily average; a plateau at 14:00-16:00
  local time at ``peak_factor`` (3x by default), a quiet night, mean over the day exactly 1.
- ``region_shares``: the home region (Seoul) serves capital + provinces users, the other
  regions share the overseas users.
- ``sessions``: active sessions per (region, client) for one service, ~``peak_sessions``
  across the whole platform at the peak.
- ``SimClock``: simulated time, ``time_acceleration`` simulated seconds per real second.
"""
from __future__ import annotations

import math
import random
import time
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

PEAK_START_HOUR = 14.0
PEAK_END_HOUR = 16.0
_SHAPE_POWER = 6  # steepness of the ramp towards the peak plateau (night ~0.18x)
CLIENTS = ("mobile", "web")
GEOS = ("capital", "provinces", "overseas")


def _shape(hour: float) -> float:
    """1 on the 14:00-16:00 plateau, falling smoothly to 0 at the opposite side of the day."""
    center = (PEAK_START_HOUR + PEAK_END_HOUR) / 2
    half = (PEAK_END_HOUR - PEAK_START_HOUR) / 2
    d = abs(((hour - center) + 12.0) % 24.0 - 12.0)  # circular distance to the centre, 0..12 h
    d = max(0.0, d - half)  # distance to the plateau
    span = 12.0 - half
    return ((1.0 + math.cos(math.pi * d / span)) / 2.0) ** _SHAPE_POWER


@lru_cache(maxsize=None)
def _shape_mean() -> float:
    n = 24 * 60
    return sum(_shape(24.0 * i / n) for i in range(n)) / n


def diurnal_factor(hour: float, peak_factor: float = 3.0) -> float:
    """Load at local ``hour`` (0..24) relative to the daily mean (mean 1, peak ``peak_factor``).

    factor = base + amp * shape(hour) with mean(shape) = m: base + amp*m = 1 and
    base + amp = peak_factor.
    """
    m = _shape_mean()
    amp = (peak_factor - 1.0) / (1.0 - m)
    base = peak_factor - amp
    return max(0.0, base + amp * _shape(hour))


def local_hour(epoch: float, tz: str) -> float:
    dt = datetime.fromtimestamp(epoch, timezone.utc).astimezone(ZoneInfo(tz))
    return dt.hour + dt.minute / 60.0 + dt.second / 3600.0


def region_shares(regions: list[str], home: str, geo_mix: dict) -> dict[str, float]:
    """Share of a service's users each region serves (sums to 1)."""
    overseas = [r for r in regions if r != home]
    if not overseas:
        return {home: 1.0}
    out = {home: geo_mix["capital"] + geo_mix["provinces"]}
    for r in overseas:
        out[r] = geo_mix["overseas"] / len(overseas)
    return out


def geo_mix_for_region(region: str, home: str, geo_mix: dict, only_region: bool = False) -> dict[str, float]:
    """Where the users a region serves come from."""
    if region == home and not only_region:
        dom = geo_mix["capital"] + geo_mix["provinces"]
        if dom <= 0:
            return {"overseas": 1.0}
        return {"capital": geo_mix["capital"] / dom, "provinces": geo_mix["provinces"] / dom}
    if only_region:  # one region serves everyone
        return dict(geo_mix)
    return {"overseas": 1.0}


def service_share(services, name: str) -> float:
    """The share of the platform's users service ``name`` has (``services``: the views of
    platform.services[], each with its traffic_weight)."""
    total = sum(s.traffic_weight for s in services)
    if total <= 0:
        return 0.0
    me = next(s for s in services if s.name == name)
    return me.traffic_weight / total


def wobble(seed: int, key: str, t: float, amplitude: float = 0.03) -> float:
    """Deterministic slow noise around 1 (a few sines with phases from seed and key)."""
    r = random.Random(f"{seed}:{key}")
    v = 0.0
    for period in (611.0, 1733.0, 4099.0):
        v += math.sin(2 * math.pi * t / period + r.uniform(0, 2 * math.pi))
    return 1.0 + amplitude * v / 3.0


def sessions(*, peak_sessions: int, peak_factor: float, hour: float, svc_share: float,
             shares: dict[str, float], client_mix: dict, seed: int = 0, key: str = "",
             t: float = 0.0) -> dict[tuple[str, str], float]:
    """Active sessions per (region, client) for one service at local ``hour``."""
    level = peak_sessions * diurnal_factor(hour, peak_factor) / peak_factor * svc_share
    out = {}
    for region, share in shares.items():
        for client in CLIENTS:
            w = wobble(seed, f"{key}/{region}/{client}", t) if seed is not None else 1.0
            out[(region, client)] = round(level * share * client_mix[client] * w)
    return out


def reroute(shares: dict[str, float], healthy: set[str]) -> dict[str, float]:
    """Move the share of regions outside ``healthy`` onto the healthy ones (proportionally)."""
    ok = {r: s for r, s in shares.items() if r in healthy}
    if not ok or len(ok) == len(shares):
        return dict(shares)
    moved = sum(s for r, s in shares.items() if r not in healthy)
    total_ok = sum(ok.values())
    out = {r: 0.0 for r in shares}
    for r, s in ok.items():
        out[r] = s + moved * (s / total_ok if total_ok > 0 else 1.0 / len(ok))
    return out


def pick(rng: random.Random, mix: dict[str, float]) -> str:
    """Weighted choice of a key of ``mix``."""
    x = rng.random() * sum(mix.values())
    acc = 0.0
    last = None
    for k, w in mix.items():
        acc += w
        last = k
        if x < acc:
            return k
    return last  # type: ignore[return-value]


class UserSampler:
    """Draws simulated users: (origin region, geography, client type), deterministic per rng."""

    def __init__(self, regions: list[str], home: str, geo_mix: dict, client_mix: dict):
        self.home = home
        self.shares = region_shares(regions, home, geo_mix)
        single = len(self.shares) == 1
        self.geo_by_region = {r: geo_mix_for_region(r, home, geo_mix, only_region=single) for r in self.shares}
        self.client_mix = dict(client_mix)

    def draw(self, rng: random.Random) -> tuple[str, str, str]:
        origin = pick(rng, self.shares)
        return origin, pick(rng, self.geo_by_region[origin]), pick(rng, self.client_mix)


class SimClock:
    """Simulated wall time: starts at the real time, runs ``acceleration`` times faster."""

    def __init__(self, acceleration: float = 1.0, start: float | None = None):
        self.acceleration = acceleration
        self.start = time.time() if start is None else start
        self._m0 = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._m0) * self.acceleration
