"""Past history of the demo platform, generated from the same model the demo runs.

``history(demo, platform, start, end, instances=..., probe=...)`` yields, one ``WINDOW``
(18h, epoch-aligned) at a time, the series a Prometheus scraping the demo would hold for that window:
(metric name, labels, timestamps, values), with the metric names and labels the demo
services export (demo/service.py) plus the target labels Prometheus attaches (``job``,
``instance`` and the static ``service``/``team`` labels of the `platform` job, given in
``instances``), and the probe exporter's ``opsstack_probe_up`` (``probe``). The stack feeds
them to promtool (stack/backfill.py) so that a fresh stack starts with weeks of history.

What follows the model:
- request rates: ``demo.requests_per_second`` x traffic weight x ``model.diurnal_factor`` of the
  local hour, split by region (``model.region_shares``), route (``loadgen.ROUTE_MIX``), client
  and user geography exactly as the load generator draws them; Poisson counts per step.
- latency histogram: the region's latency (home/overseas) with the service's jitter; only the
  buckets that carry information are written (the empty ones are dropped, as are the full
  ones above the first full one), so quantiles come out as the live histogram gives them; it
  stops HISTOGRAM_GAP before the end (no rate window mixes its bucket set with the live one).
- active sessions: ``model.sessions`` itself (with its wobble).
- cache lookups (~90% hits), CPU seconds rising with the load, the limits, routing/listener
  gauges at 1. Left out (nothing happened in the past): the fault gauges, the load generator's
  own counters, process_* other than CPU and resident memory.
- resident memory and the data volume grow slowly (``MEMORY_GROWTH_PER_DAY``,
  ``DISK_GROWTH_PER_DAY``): a visible trend that stays far from the OOM and disk-full
  thresholds at the forecast horizons (tests/unit/test_demo_history.py holds it to that).

Timestamps are in the past only (the caller passes ``end`` <= now). Counters run on
``COUNTER_STEP`` (rate()[5m] needs two samples in every 5-minute window), gauges on
``GAUGE_STEP``. Simulated time is wall time here (``demo.time_acceleration`` is not applied).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from demo import model
from demo.loadgen import ROUTE_MIX
from demo.service import JITTER, REQUEST_BUCKETS, VOLUME_NAME

DAY = 86400.0
# history is cut into windows of this size, aligned on its multiples since the epoch: one
# TSDB block each (promtool rounds --max-block-duration down to 2h x 3^k, 18h is one of them)
WINDOW = 18 * 3600.0
COUNTER_STEP = 150.0   # <= 5m / 2: every rate(...[5m]) window holds two samples
GAUGE_STEP = 240.0     # < the 5m lookback: a gauge never has a gap
# the demo's own request handling on top of the region latency (routing, JSON, the cache)
OVERHEAD_SECONDS = 0.0015
# the latency histogram stops this long before the end: its history has fewer buckets than the
# live one (see bucket_fractions), and a rate() window holding both would mix bucket sets into
# a non-monotonic histogram (a p95 of seconds for 5 minutes); with the gap no 5m window does
HISTOGRAM_GAP = 360.0
CACHE_HIT_RATIO = 0.9
CACHE_ENTRIES = 41     # /api/events + the 40 event pages a warm cache holds
# CPU of a demo process: a floor (threads, the ticker, scrapes) + a cost per request
CPU_IDLE_CORES = 0.01
CPU_SECONDS_PER_REQUEST = 0.003
# resident memory: where it ends (about what a fresh demo process holds) and its slow growth
MEMORY_END_BYTES = 34 * 1024 ** 2  # `opsstack demo serve` holds ~34 MB under load
MEMORY_GROWTH_PER_DAY = 0.75 * 1024 ** 2
MEMORY_DIURNAL_BYTES = 2 * 1024 ** 2  # a little more at the peak (buffers, sessions)
# the data volume: used share of the capacity at the end, and its growth per day
DISK_END_RATIO = 0.12
DISK_GROWTH_PER_DAY = 0.003
# every metric name history() writes
METRICS = (
    "opsstack_http_requests_total", "opsstack_http_request_duration_seconds_bucket",
    "opsstack_http_request_duration_seconds_count", "opsstack_http_request_duration_seconds_sum",
    "opsstack_cache_requests_total", "opsstack_user_requests_total", "process_cpu_seconds_total",
    "opsstack_service_cpu_seconds_total", "opsstack_active_sessions", "opsstack_service_memory_limit_bytes",
    "opsstack_service_cpu_limit_cores", "process_resident_memory_bytes", "opsstack_volume_used_bytes",
    "opsstack_volume_capacity_bytes", "opsstack_demo_route_healthy", "opsstack_demo_listener_up",
    "opsstack_cache_entries", "opsstack_demo_load_factor", "opsstack_probe_up",
)


def _route_label(path: str) -> str:
    return path.replace("{id}", ":id")


# (route label, share of the requests, cached (a lookup per request) or not)
ROUTES = [(_route_label(path), share, path.startswith("/api/events"))
          for (_method, path), share in ROUTE_MIX.items()]


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict
    t: np.ndarray
    y: np.ndarray

    def as_tuple(self) -> tuple[str, dict, np.ndarray, np.ndarray]:
        return self.name, self.labels, self.t, self.y


def windows(start: float, end: float, size: float = WINDOW) -> list[tuple[float, float]]:
    """[start, end) cut at the multiples of ``size`` (one promtool block each)."""
    out = []
    a = start
    while a < end:
        b = min(end, (math.floor(a / size) + 1) * size)
        out.append((a, b))
        a = b
    return out


def grid(start: float, end: float, step: float) -> np.ndarray:
    """Timestamps on multiples of ``step`` in [start, end)."""
    first = math.ceil(start / step) * step
    return np.arange(first, end, step, dtype=float)


def load_factor(demo, t: np.ndarray) -> np.ndarray:
    """model.diurnal_factor at the local hour of each timestamp."""
    return np.array([model.diurnal_factor(model.local_hour(x, demo.timezone), demo.peak_factor) for x in t])


def bucket_fractions(latency: float) -> list[tuple[str, float]]:
    """(le, share of requests at or below it) of the buckets worth writing for a region whose
    requests take ``latency`` (+ overhead) with relative jitter JITTER; ends with +Inf."""
    mean = latency + OVERHEAD_SECONDS
    sd = max(latency * JITTER, 1e-6)
    fr = [(le, 0.5 * (1.0 + math.erf((le - mean) / (sd * math.sqrt(2.0))))) for le in REQUEST_BUCKETS]
    out = []
    for le, f in fr:
        if f < 1e-6:
            continue
        if f > 1.0 - 1e-6:
            out.append((f"{le:g}", 1.0))  # the first full bucket closes the distribution
            break
        out.append((f"{le:g}", f))
    out.append(("+Inf", 1.0))
    return out


def memory_bytes(t: np.ndarray, end: float, factor: np.ndarray, peak_factor: float) -> np.ndarray:
    return (MEMORY_END_BYTES - MEMORY_GROWTH_PER_DAY * (end - t) / DAY
            + MEMORY_DIURNAL_BYTES * (factor / peak_factor - 0.5))


def disk_ratio(t: np.ndarray, end: float) -> np.ndarray:
    return np.maximum(0.0, DISK_END_RATIO - DISK_GROWTH_PER_DAY * (end - t) / DAY)


class _Counters:
    """Running counter values carried from one day window to the next."""

    def __init__(self):
        self.v: dict[tuple, float] = {}

    def run(self, key: tuple, increments: np.ndarray) -> np.ndarray:
        base = self.v.get(key, 0.0)
        out = base + np.cumsum(increments)
        if len(out):
            self.v[key] = float(out[-1])
        return out


def history(demo, platform, start: float, end: float, instances: dict[str, dict],
            probe: dict | None = None) -> Iterator[tuple[tuple[float, float], list[Series]]]:
    """((window start, end), series) per WINDOW of [start, end); see the module doc.

    ``demo``, ``platform``: the views of those sections; ``instances``: service -> the target
    labels Prometheus attaches to its admin /metrics (job, instance, service, team); ``probe``:
    the probe exporter's target labels (job, instance), or None to leave opsstack_probe_up out.
    """
    rng = np.random.default_rng(demo.seed)  # deterministic for a seed, like the demo
    counters = _Counters()
    regions = list(platform.regions)
    home = demo.home_region
    shares = model.region_shares(regions, home, demo.geo_mix)
    single = len(shares) == 1
    services = [s for s in platform.services if s.name in instances]
    for (a, b) in windows(start, end):
        tc, tg = grid(a, b, COUNTER_STEP), grid(a, b, GAUGE_STEP)
        fc, fg = load_factor(demo, tc), load_factor(demo, tg)
        out: list[Series] = []
        for svc in services:
            base = dict(instances[svc.name])
            w = svc.traffic_weight
            rate = demo.requests_per_second * w * fc          # requests/s of the service
            total_inc = np.zeros(len(tc))
            for region in regions:
                lab = dict(base, region=region)
                r_rate = rate * shares.get(region, 0.0)
                latency = demo.home_latency if region == home else demo.overseas_latency
                fracs = bucket_fractions(latency)
                region_inc = np.zeros(len(tc))
                lookups = np.zeros(len(tc))
                for route, share, cached in ROUTES:
                    inc = rng.poisson(r_rate * share * COUNTER_STEP).astype(float)
                    region_inc += inc
                    if cached:
                        lookups += inc
                    key = (svc.name, region, route)
                    out.append(Series("opsstack_http_requests_total", dict(lab, route=route, code="200"),
                                      tc, counters.run(key + ("req",), inc)))
                    cum = out[-1].y
                    hl = dict(lab, route=route)
                    total_sum = counters.run(key + ("sum",), inc * (latency + OVERHEAD_SECONDS))
                    hm = tc < end - HISTOGRAM_GAP
                    if hm.any():
                        th = tc[hm]
                        for le, f in fracs:
                            out.append(Series("opsstack_http_request_duration_seconds_bucket", dict(hl, le=le),
                                              th, np.round(cum[hm] * f)))
                        out.append(Series("opsstack_http_request_duration_seconds_count", hl, th, cum[hm]))
                        out.append(Series("opsstack_http_request_duration_seconds_sum", hl, th, total_sum[hm]))
                total_inc += region_inc
                hits = np.round(lookups * CACHE_HIT_RATIO)
                out.append(Series("opsstack_cache_requests_total", dict(lab, result="hit"), tc,
                                  counters.run((svc.name, region, "hit"), hits)))
                out.append(Series("opsstack_cache_requests_total", dict(lab, result="miss"), tc,
                                  counters.run((svc.name, region, "miss"), lookups - hits)))
                geos = model.geo_mix_for_region(region, home, demo.geo_mix, only_region=single)
                for client in model.CLIENTS:
                    for geo, gshare in geos.items():
                        if gshare <= 0:
                            continue
                        inc = np.round(region_inc * demo.client_mix[client] * gshare)
                        out.append(Series("opsstack_user_requests_total", dict(lab, client=client, geo=geo), tc,
                                          counters.run((svc.name, region, client, geo), inc)))
            cpu = counters.run((svc.name, "cpu"), CPU_IDLE_CORES * COUNTER_STEP + CPU_SECONDS_PER_REQUEST * total_inc)
            out.append(Series("process_cpu_seconds_total", base, tc, cpu))
            out.append(Series("opsstack_service_cpu_seconds_total", base, tc, cpu.copy()))
            out.extend(_gauges(demo, platform, svc, base, tg, fg, end, rng))
        if probe is not None:
            for svc in services:
                for region in regions:
                    out.append(Series("opsstack_probe_up", dict(probe, service=svc.name, region=region),
                                      tg, np.ones(len(tg))))
        yield (a, b), out


def _gauges(demo, platform, svc, base: dict, tg: np.ndarray, fg: np.ndarray, end: float,
            rng: np.random.Generator) -> list[Series]:
    regions = list(platform.regions)
    ones = np.ones(len(tg))
    out = []
    sshare = model.service_share(platform.services, svc.name)
    shares = model.region_shares(regions, demo.home_region, demo.geo_mix)
    sess: dict[tuple[str, str], list[float]] = {}
    for x in tg:
        hour = model.local_hour(x, demo.timezone)
        for k, v in model.sessions(peak_sessions=demo.peak_sessions, peak_factor=demo.peak_factor, hour=hour,
                                   svc_share=sshare, shares=shares, client_mix=demo.client_mix, seed=demo.seed,
                                   key=svc.name, t=x).items():
            sess.setdefault(k, []).append(v)
    for (region, client), vals in sorted(sess.items()):
        out.append(Series("opsstack_active_sessions", dict(base, region=region, client=client), tg, np.array(vals)))
    out.append(Series("opsstack_service_memory_limit_bytes", base, tg, ones * svc.memory_limit_bytes))
    out.append(Series("opsstack_service_cpu_limit_cores", base, tg, ones * svc.cpu_limit_cores))
    mem = memory_bytes(tg, end, fg, demo.peak_factor) + rng.normal(0, 256 * 1024, len(tg))
    out.append(Series("process_resident_memory_bytes", base, tg, np.round(mem)))
    vol = dict(base, volume=VOLUME_NAME)
    used = np.round(disk_ratio(tg, end) * demo.volume_capacity_bytes)
    out.append(Series("opsstack_volume_used_bytes", vol, tg, used))
    out.append(Series("opsstack_volume_capacity_bytes", vol, tg, ones * demo.volume_capacity_bytes))
    for region in regions:
        lab = dict(base, region=region)
        out.append(Series("opsstack_demo_route_healthy", lab, tg, ones))
        out.append(Series("opsstack_demo_listener_up", lab, tg, ones))
        out.append(Series("opsstack_cache_entries", lab, tg, ones * CACHE_ENTRIES))
    out.append(Series("opsstack_demo_load_factor", base, tg, fg))
    return out


def volume_used_at_end(demo) -> int:
    """Bytes the data volume holds at the end of the history (the stack leaves that much in the
    volume, so the live series continues where the history stops)."""
    return int(round(DISK_END_RATIO * demo.volume_capacity_bytes))
