"""Replica maths and scaling policies: pure functions, no servers (docs/scaling.md).

Capacity is counted in replica "cores": a replica has ``workers`` of them and is busy while it
serves a request (the demo service's ``opsstack_demo_replica_cpu_seconds_total``); utilisation
is busy seconds per second / (replicas x workers). The target is the 70-80% band
(``forecast.scaling.band_low``/``band_high``): the fewest replicas whose utilisation at the
expected load stays at or under the band's top. With whole replicas the result may sit under
the band (one replica fewer would be over it): ``band_status`` says so.

Three policies decide the replica count of one service region, step by step:
- ``predictive``: the replicas the forecast load of the next ``lead`` seconds needs (scale out
  ahead of the ramp; in only when the whole look-ahead fits in fewer);
- ``reactive``: out when utilisation is over the top of the band (proportionally, as a target
  tracking autoscaler does), in by one when it is under ``scale_in_below`` and traffic falls,
  each after a cooldown since the last change;
- ``fixed``: never changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

BAND_LOW = 0.7
BAND_HIGH = 0.8


def utilisation(load: float, replicas: int, capacity: float) -> float:
    """Busy share of ``replicas`` of ``capacity`` each (load and capacity in the same unit:
    busy seconds per second, i.e. cores). +Inf when there is load and no capacity."""
    total = replicas * capacity
    if total <= 0:
        return math.inf if load > 0 else 0.0
    return load / total


def replicas_for(load: float, capacity: float, high: float = BAND_HIGH, min_replicas: int = 1,
                 max_replicas: int | None = None) -> int:
    """The fewest replicas (within min..max) whose utilisation at ``load`` is at most ``high``."""
    if capacity <= 0:
        raise ValueError("capacity per replica must be > 0")
    if not 0 < high <= 1:
        raise ValueError("high must be in (0, 1]")
    n = math.ceil(load / (capacity * high) - 1e-9) if load > 0 else 0
    n = max(n, min_replicas)
    if max_replicas is not None:
        n = min(n, max_replicas)
    return n


def band_status(u: float, low: float = BAND_LOW, high: float = BAND_HIGH) -> str:
    """under | in | over the band."""
    if u > high + 1e-12:
        return "over"
    if u < low - 1e-12:
        return "under"
    return "in"


@dataclass(frozen=True)
class Recommendation:
    service: str
    region: str
    current: int | None      # replicas now (None: unknown)
    recommended: int
    peak_load: float         # expected busy cores at the next peak
    capacity: float          # cores per replica
    peak_at: float | None    # unix time of the next peak
    utilisation_now: float | None

    @property
    def peak_utilisation(self) -> float:
        return utilisation(self.peak_load, self.recommended, self.capacity)

    @property
    def change(self) -> int | None:
        return None if self.current is None else self.recommended - self.current

    def as_dict(self, low: float = BAND_LOW, high: float = BAND_HIGH) -> dict:
        cur_u = None if self.current is None else utilisation(self.peak_load, self.current, self.capacity)
        return {"service": self.service, "region": self.region, "current": self.current,
                "recommended": self.recommended, "change": self.change,
                "peak_load_cores": round(self.peak_load, 4), "cores_per_replica": self.capacity,
                "peak_at": self.peak_at,
                "peak_utilisation_recommended": round(self.peak_utilisation, 4),
                "band": band_status(self.peak_utilisation, low, high),
                "peak_utilisation_current": None if cur_u is None else (round(cur_u, 4) if math.isfinite(cur_u)
                                                                        else None),
                "utilisation_now": None if self.utilisation_now is None else round(self.utilisation_now, 4)}


def recommend(service: str, region: str, *, peak_requests: float, share: float, cpu_per_request: float,
              capacity: float, current: int | None, peak_at: float | None = None,
              utilisation_now: float | None = None, high: float = BAND_HIGH, min_replicas: int = 1,
              max_replicas: int | None = None) -> Recommendation:
    """Replicas of one service region for the next peak: the platform's forecast peak request
    rate x this region's share of it x the replica CPU one request costs (measured) = busy cores
    at the peak; then ``replicas_for``."""
    load = max(0.0, peak_requests) * max(0.0, share) * max(0.0, cpu_per_request)
    n = replicas_for(load, capacity, high, min_replicas, max_replicas)
    return Recommendation(service, region, current, n, load, capacity, peak_at, utilisation_now)


# ---------------------------------------------------------------- policies (one step each)
@dataclass(frozen=True)
class Limits:
    capacity: float = 1.0          # cores per replica
    min_replicas: int = 1
    max_replicas: int = 20
    high: float = BAND_HIGH        # top of the band (scale out above it)
    target: float = 0.75           # where a scale-out aims (middle of the band)
    scale_in_below: float = 0.4    # scale in under this when traffic falls...
    cooldown: float = 600.0        # seconds between two changes
    lead: float = 1800.0           # predictive look-ahead (provisioning delay + margin)

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, n))


def reactive(current: int, util: float, traffic_falling: bool, since_change: float, lim: Limits) -> int:
    """Replicas after one reactive decision. ``util``: measured utilisation (a smoothed window),
    ``since_change``: seconds since the last change (cooldown)."""
    if since_change < lim.cooldown:
        return current
    if util > lim.high:
        # target tracking: as many as bring utilisation back to the middle of the band
        return lim.clamp(max(current + 1, math.ceil(current * util / lim.target - 1e-9)))
    if util < lim.scale_in_below and traffic_falling and current > lim.min_replicas:
        # one at a time, and only when the rest would still be under the band's top
        if current * util / (current - 1) <= lim.high:
            return lim.clamp(current - 1)
    return current


def predictive(current: int, forecast_loads: list[float], since_change: float, lim: Limits,
               util: float | None = None) -> int:
    """Replicas after one predictive decision: ``forecast_loads`` are the expected busy cores over
    the next ``lim.lead`` seconds. Out at once (no cooldown: the forecast says the load comes)
    to the fewest replicas that keep the look-ahead at or under the band's top. ``util``
    (measured): a reactive backstop when the forecast is wrong (over the band now -> out as
    reactive does).

    In only after the cooldown, and with hysteresis: to the fewest replicas that keep both the
    look-ahead and the load measured now at or under ``lim.target`` (the band's middle), never
    just under its top. Sized at exactly the top, the noise of real traffic crosses it, the
    backstop adds a replica, and the forecast took it away again after each cooldown: on the
    real demo (bench/scaling_demo_day.py) that was 34 changes a day against reactive's 12."""
    peak = max(forecast_loads) if forecast_loads else 0.0
    want = replicas_for(peak, lim.capacity, lim.high, lim.min_replicas, lim.max_replicas)
    if util is not None and util > lim.high:
        want = max(want, lim.clamp(max(current + 1, math.ceil(current * util / lim.target - 1e-9))))
    if want > current:
        return want
    if want < current and since_change >= lim.cooldown:
        fewer = replicas_for(peak, lim.capacity, lim.target, lim.min_replicas, lim.max_replicas)
        if util is not None and math.isfinite(util):
            fewer = max(fewer, lim.clamp(math.ceil(current * max(util, 0.0) / lim.target - 1e-9)))
        return min(current, max(want, fewer))
    return current
