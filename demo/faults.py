"""Fault kinds of the demo platform and their bounds: pure logic, no servers.

A fault is applied to one service process (optionally one region of it) with a
``rate`` whose meaning depends on the kind (see KINDS). Every parameter is clamped to
the configured bounds and every fault expires after at most ``demo.faults.max_duration``.
The effects themselves live in demo/service.py.
"""
from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field

from core.config import parse_duration

# kind -> (what it does, what --rate means, default rate description)
KINDS: dict[str, tuple[str, str]] = {
    "service-down": ("the service's region listeners close their sockets (connections refused); "
                     "heal reopens them", "unused"),
    "error-burst": ("a share of requests answer 500/503", "share of failing requests, 0..1 (default 0.5)"),
    "latency-spike": ("every request waits an extra delay", "extra delay, e.g. 500ms or 0.5 (default 500ms)"),
    "region-outage": ("one region's instance fails: every request and /health answer 503 "
                      "(--region, default the home region)", "unused"),
    "cpu-ramp": ("a thread burns CPU at a duty cycle rising from 10% to the cap",
                 "duty-cycle increase per second, cores/s (default: cap reached in demo.faults.cpu_ramp_seconds)"),
    "memory-leak": ("the process retains memory at a rate up to the cap (resident memory grows)",
                    "bytes per second, e.g. 4MiB (default: cap reached in ~2 minutes)"),
    "disk-fill": ("real files fill the service's data volume up to the cap",
                  "bytes per second, e.g. 2MiB (default: cap reached in ~2 minutes)"),
    "cache-miss-storm": ("the response cache is purged and bypassed: every lookup misses",
                         "share of lookups that bypass the cache, 0..1 (default 1)"),
    "origin-overload": ("the origin is overloaded: a share of requests stall past the edge's first-byte "
                        "timeout or fail fast with 503 (Varnish sees fetch failures and 5xx)",
                        "share of affected requests, 0..1 (default 0.6)"),
}

REGION_KINDS = {"service-down", "error-burst", "latency-spike", "region-outage", "cache-miss-storm",
                "origin-overload"}
PROCESS_KINDS = {"cpu-ramp", "memory-leak", "disk-fill"}

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "ki": 1024, "kib": 1024, "mi": 1024 ** 2, "mib": 1024 ** 2, "gi": 1024 ** 3, "gib": 1024 ** 3,
          "ms": 1e-3, "s": 1, "%": 0.01}
_QTY = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z%]*)\s*$")


def parse_quantity(value) -> float:
    """'4MiB' -> 4194304, '500ms' -> 0.5, '50%' -> 0.5, 0.3 -> 0.3."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    m = _QTY.match(str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a number with an optional unit (KiB, MiB, ms, s, %), got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_seconds(value) -> float:
    """A duration: a number of seconds or a Prometheus-style string ('90s', '5m', '1h')."""
    try:
        return parse_quantity(value) if isinstance(value, (int, float)) else float(value)
    except (TypeError, ValueError):
        return parse_duration(value)


@dataclass(frozen=True)
class Limits:
    """The bounds that apply to one service process."""

    max_duration: float = 3600.0
    memory_leak_max_bytes: int = 512 * 1024 ** 2
    cpu_ramp_max_cores: float = 0.95
    cpu_ramp_seconds: float = 120.0
    max_latency: float = 5.0
    disk_fill_max_bytes: int = 256 * 1024 ** 2

    @classmethod
    def from_config(cls, demo, service) -> "Limits":
        """The limits of ``service`` (a view of platform.services[]) under ``demo`` (the view
        of the demo section)."""
        f = demo.faults
        return cls(
            max_duration=f.max_duration,
            memory_leak_max_bytes=int(min(f.memory_leak_max_bytes, service.memory_limit_bytes)),
            cpu_ramp_max_cores=min(f.cpu_ramp_max_cores, service.cpu_limit_cores, 1.0),
            cpu_ramp_seconds=f.cpu_ramp_seconds,
            max_latency=f.max_latency,
            disk_fill_max_bytes=int(demo.volume_capacity_bytes * f.disk_fill_max_ratio),
        )


_ids = itertools.count(1)


@dataclass
class Fault:
    kind: str
    region: str | None  # None: every region of the service
    rate: float
    started: float = field(default_factory=time.time)
    expires: float = 0.0
    id: int = field(default_factory=lambda: next(_ids))

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "region": self.region, "rate": self.rate,
                "started": self.started, "expires": self.expires}

    def covers(self, region: str) -> bool:
        return self.region is None or self.region == region


RAMP_START_DUTY = 0.10
_FILL_SECONDS = 120.0  # default memory-leak / disk-fill rates reach their cap in ~2 minutes


def make_fault(kind: str, *, region: str | None, rate=None, duration=None, limits: Limits,
               regions: list[str], home_region: str, now: float | None = None) -> Fault:
    """A validated, bounded fault; ValueError with a clear message otherwise."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r} (kinds: {', '.join(KINDS)})")
    if region is not None and region not in regions:
        raise ValueError(f"unknown region {region!r} (regions: {', '.join(regions)})")
    if kind in PROCESS_KINDS and region is not None:
        raise ValueError(f"{kind} acts on the whole process; do not give a region")
    if kind == "region-outage" and region is None:
        region = home_region
    r = None if rate is None or rate == "" else parse_quantity(rate)
    if kind == "error-burst":
        r = 0.5 if r is None else r
        if r > 1:
            raise ValueError("error-burst rate is a share of requests between 0 and 1")
    elif kind == "cache-miss-storm":
        r = 1.0 if r is None else r
        if r > 1:
            raise ValueError("cache-miss-storm rate is a share of lookups between 0 and 1")
    elif kind == "origin-overload":
        r = 0.6 if r is None else r
        if r > 1:
            raise ValueError("origin-overload rate is a share of requests between 0 and 1")
    elif kind == "latency-spike":
        r = min(0.5 if r is None else r, limits.max_latency)
    elif kind == "cpu-ramp":
        default = (limits.cpu_ramp_max_cores - RAMP_START_DUTY) / max(limits.cpu_ramp_seconds, 1e-9)
        r = default if r is None else r
    elif kind == "memory-leak":
        r = limits.memory_leak_max_bytes / _FILL_SECONDS if r is None else r
    elif kind == "disk-fill":
        r = limits.disk_fill_max_bytes / _FILL_SECONDS if r is None else r
    else:
        r = 0.0
    d = limits.max_duration if duration in (None, "") else parse_seconds(duration)
    if d <= 0:
        raise ValueError("duration must be > 0")
    d = min(d, limits.max_duration)
    now = time.time() if now is None else now
    return Fault(kind=kind, region=region, rate=float(r), started=now, expires=now + d)


def cpu_duty(fault: Fault, limits: Limits, now: float) -> float:
    """Duty cycle (0..cap) of a cpu-ramp fault ``now``: rises linearly, capped."""
    cap = limits.cpu_ramp_max_cores
    return max(0.0, min(cap, min(RAMP_START_DUTY, cap) + fault.rate * max(0.0, now - fault.started)))


def leak_target(fault: Fault, limits: Limits, now: float) -> int:
    """Bytes a memory-leak fault should retain ``now`` (rate x elapsed, capped)."""
    return int(min(limits.memory_leak_max_bytes, fault.rate * max(0.0, now - fault.started)))


def fill_step(fault: Fault, limits: Limits, dt: float, used: int, fs_free: int, min_free: int) -> int:
    """Bytes a disk-fill fault writes in the next ``dt`` seconds.

    A writer at ``rate`` bytes/s until the volume holds the cap (counting every file on it)
    and never leaving the real filesystem with less than ``min_free`` bytes free. Files
    deleted from outside are not rewritten at once: the writer just keeps its pace.
    """
    want = int(fault.rate * max(0.0, dt))
    room = max(0, limits.disk_fill_max_bytes - used)
    fs_room = max(0, fs_free - min_free)
    return max(0, min(want, room, fs_room))
