"""One demo service process: region instances, admin API, faults, metrics, load.

``DemoService(demo, platform, stack, name).start()`` (the views of those config sections, see
core.config.view; ``DemoService.from_config(cfg, name)`` builds them) listens on
``demo.ports[name]["admin"]`` (admin API,
/health, /metrics for the whole process) and on ``demo.ports[name][region]`` for each
region (the region instance: API routes + /health). The admin API is documented in
docs/demo.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import random
import re
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core import logship
from core.config import run_dir, view
from demo import eventreq
from demo import faults as F
from demo import model
from demo.http import Listener, Request, Response
from demo.loadgen import EVENT_IDS, LoadGenerator
from demo.rcache import RedisCache
from demo.replicas import Overloaded, ReplicaPool

log = logging.getLogger("opsstack.demo")

# fine around 0.1 (Seoul) and 0.2 (overseas, the p95 target) so quantiles near them are exact
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.09, 0.1, 0.11, 0.125, 0.15, 0.175, 0.19, 0.2, 0.21,
                   0.225, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
# Event pages change rarely and are invalidated by tag purge, so entries live long: a warm
# cache hits ~90% of lookups even at the demo's low per-region request rates.
CACHE_TTL = 1800.0
# Each entry lives CACHE_TTL x a factor drawn in [1 - CACHE_TTL_SPREAD, 1 + CACHE_TTL_SPREAD]:
# entries put together (the warm-up at start) do not all expire together, half an hour later,
# in a wave of misses that would look like a cold cache (CacheHitRatioLow) at quiet hours.
CACHE_TTL_SPREAD = 0.5
CACHE_MAX_ENTRIES = 2000
# relative standard deviation of an instance's latency: overseas (160 ms) keeps its p95
# near 170 ms, under the 200 ms target, until a fault pushes it over. (At 180 ms, p95 ~190 ms,
# an overseas region's few requests a minute at night put p95 near the largest of them: two
# requests late by 10 ms in 5 minutes, a busy moment of the machine, made ServiceLatencyHigh
# pending on a fault-free stack.)
JITTER = 0.025
# Extra seconds a lookup that bypasses the cache (cache-miss-storm) costs: the origin is
# suddenly loaded. Ordinary misses are part of the region's mean latency.
CACHE_BYPASS_PENALTY = 0.05
# the edge (demo/edge.py): TTL of an entry in the shared Redis cache (a cache-miss storm writes
# them for a second only), of a gate's status there, and how long an origin-overload stall
# holds a request (over Varnish's first-byte timeout: a fetch failure, a 503 of Varnish)
REDIS_TTL = 1800.0
REDIS_GATE_TTL = 30.0
OVERLOAD_STALL = 8.0
VOLUME_NAME = "data"
FILL_FILE_MAX = 64 * 1024 * 1024
FILL_PREFIX = "fill-"
TICK = 0.25
ERROR_LOGS_PER_SECOND = 20  # request-failure lines a service logs at most per second (the rest: suppressed=)

# (method, path regex, route label, cache tags template or None)
ROUTES = [
    ("GET", re.compile(r"^/health$"), "/health", None),
    ("GET", re.compile(r"^/api/events$"), "/api/events", ("events",)),
    ("GET", re.compile(r"^/api/events/(\d{1,9})$"), "/api/events/:id", ("events", "event:{0}")),
    ("GET", re.compile(r"^/api/gates/(\d{1,9})/status$"), "/api/gates/:id/status", None),
    ("POST", re.compile(r"^/api/sessions$"), "/api/sessions", None),
    ("GET", re.compile(r"^/api/me$"), "/api/me", None),
]
ROUTE_LABELS = [r[2] for r in ROUTES] + ["other"]


def volume_dir(platform, stack, service: str) -> Path:
    """<run_dir>/demo-volumes/<service> of a service of the platform (``platform``, ``stack``: the
    views of those sections); anything else (a name with '/' or '..', an unknown service) is
    refused, so no caller can point a volume elsewhere."""
    known = [s.name for s in platform.services]
    if service not in known:
        raise ValueError(f"no demo volume for {service[:80]!r} (services: {', '.join(known)})")
    base = run_dir(stack) / "demo-volumes"
    path = base / service
    if path.resolve().parent != base.resolve():
        raise ValueError(f"demo volume of {service!r} would be outside {base}")
    return path


class TagCache:
    """A small LRU response cache whose entries carry tags (purge by tag)."""

    def __init__(self, max_entries: int = CACHE_MAX_ENTRIES, ttl: float = CACHE_TTL,
                 spread: float = CACHE_TTL_SPREAD):
        self.max_entries = max_entries
        self.ttl = ttl
        self.spread = spread
        self._d: OrderedDict[str, tuple[float, bytes, frozenset]] = OrderedDict()
        self._lock = threading.Lock()
        self._rng = random.Random()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._d.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._d[key]
                return None
            self._d.move_to_end(key)
            return item[1]

    def put(self, key: str, value: bytes, tags) -> None:
        with self._lock:
            ttl = self.ttl * self._rng.uniform(1 - self.spread, 1 + self.spread)
            self._d[key] = (time.monotonic() + ttl, value, frozenset(tags))
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def purge(self, tags=None) -> int:
        with self._lock:
            if not tags:
                n = len(self._d)
                self._d.clear()
                return n
            tags = set(tags)
            doomed = [k for k, (_, _, t) in self._d.items() if t & tags]
            for k in doomed:
                del self._d[k]
            return len(doomed)

    def __len__(self) -> int:
        return len(self._d)


class Volume:
    """The service's demo data volume: a folder with a configured capacity."""

    def __init__(self, path: Path, capacity: int, file_max: int = FILL_FILE_MAX):
        self.path = path
        self.capacity = capacity
        self.file_max = file_max
        self.path.mkdir(parents=True, exist_ok=True)

    def used(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.path):
            for f in files:
                try:
                    total += os.stat(os.path.join(root, f)).st_size
                except OSError:
                    pass
        return total

    def fill_files(self) -> list[Path]:
        return sorted(self.path.glob(f"{FILL_PREFIX}*.bin"))

    def filled(self) -> int:
        total = 0
        for p in self.fill_files():
            try:
                total += p.stat().st_size
            except OSError:  # removed meanwhile (the cleanup playbook)
                pass
        return total

    def _next_file(self) -> Path:
        """A new fill file, numbered after the highest one there (files may have been deleted
        in between: the count of files is not a free number)."""
        last = 0
        for p in self.fill_files():
            digits = p.stem[len(FILL_PREFIX):]
            if digits.isdigit():
                last = max(last, int(digits))
        return self.path / f"{FILL_PREFIX}{last + 1:05d}.bin"

    def write(self, nbytes: int, chunk: bytes) -> int:
        """Append ``nbytes`` of real data to the fill files; returns bytes written."""
        if not chunk:
            return 0
        done = 0
        files = self.fill_files()
        cur = files[-1] if files else None
        while done < nbytes:
            size = cur.stat().st_size if cur is not None and cur.exists() else 0
            if cur is None or size >= self.file_max:
                cur, size = self._next_file(), 0
            n = min(nbytes - done, self.file_max - size, len(chunk))
            with open(cur, "ab") as f:
                f.write(chunk[:n])
            done += n
        return done

    def cleanup(self) -> int:
        freed = 0
        for p in self.fill_files():
            try:
                freed += p.stat().st_size
                p.unlink()
            except OSError:
                pass
        return freed


def _resident_block(n: int, pattern: bytes) -> mmap.mmap:
    """An anonymous mapping of ``n`` bytes, written through so every page is resident."""
    block = mmap.mmap(-1, n)
    for off in range(0, n, len(pattern)):
        k = min(len(pattern), n - off)
        block[off:off + k] = pattern[:k]
    return block


class DemoService:
    """One service ``name`` of the platform; ``demo``, ``platform``, ``stack``: the views of
    those config sections (core.config.view)."""

    def __init__(self, demo, platform, stack, name: str, database=None):
        self.platform = platform
        self.name = name
        svc = next((s for s in platform.services if s.name == name), None)
        if svc is None:
            raise ValueError(f"unknown service {name!r} (services: "
                             f"{', '.join(s.name for s in platform.services)})")
        self.svc = svc
        d = demo
        self.demo = d
        self.regions: list[str] = list(platform.regions)
        self.home = d.home_region
        ports = d.ports.get(name) or {}
        missing = [k for k in ["admin", *self.regions] if not ports.get(k)]
        if missing:
            raise ValueError(f"demo.ports.{name} has no port for {', '.join(missing)} "
                             "(run the demo through `opsstack up`, or set demo.ports)")
        self.host = stack.host
        self.ports = {k: int(v) for k, v in ports.items()}
        self.limits = F.Limits.from_config(d, svc)
        self.clock = model.SimClock(d.time_acceleration)
        self.rng = random.Random(f"{d.seed}:{name}:server")
        self._errlog_lock = threading.Lock()  # _log_failure's rate bound
        self._errlog_window, self._errlog_count, self._errlog_suppressed = 0.0, 0, 0
        self._lock = threading.RLock()  # the fault list
        self._effects = threading.Lock()  # memory held and files written by faults
        self.faults: list[F.Fault] = []
        self.healthy: set[str] = set(self.regions)  # traffic router
        self.caches = {r: self._warm_cache() for r in self.regions}
        self.rcache = RedisCache.from_views(d, stack, name)  # None without the edge
        self.run_dir = run_dir(stack)
        self.replacements = {r: 0 for r in self.regions}
        rep = d.replicas  # the capacity knob (demo/replicas.py, POST /admin/replicas)
        self.pools = {r: ReplicaPool(rep.initial, rep.workers, rep.min, rep.max, rep.queue_timeout)
                      for r in self.regions}
        self.volume = Volume(volume_dir(platform, stack, name), d.volume_capacity_bytes)
        self._leak: list[mmap.mmap] = []
        self._leak_bytes = 0
        self._cpu_duty = 0.0
        # cpu-ramp accounting (opsstack_service_cpu_seconds_total): CPU the burner really got,
        # and the CPU its duty cycle asked for (duty x wall time), whatever the machine gave it
        self._burn_used = 0.0
        self._burn_demand = 0.0
        self._cpu_lock = threading.Lock()
        self._cpu_reported = 0.0
        self._burner: threading.Thread | None = None
        self._fill_chunk = b"\xa5" * (1024 * 1024)
        self._stop = threading.Event()
        self._last_tick = time.time()
        self._build_metrics()
        self.listeners = {r: Listener(f"{name}/{r}", self.host, self.ports[r], self._region_app(r))
                          for r in self.regions}
        self.admin = Listener(f"{name}/admin", self.host, self.ports["admin"], self._admin_app)
        self.loadgen = None
        # the event-request API of the Event Management service (demo/eventreq.py): ``database``,
        # the view of that section; None without one (its routes then answer 503)
        self.eventreq = (eventreq.from_views(d, database, stack, self.ports["admin"])
                         if eventreq.serves(svc) and database is not None else None)

    @classmethod
    def from_config(cls, cfg: dict, name: str) -> "DemoService":
        """The service ``name`` of a validated config."""
        return cls(view(cfg, "demo"), view(cfg, "platform"), view(cfg, "stack"), name, view(cfg, "database"))

    # ------------------------------------------------------------------ metrics
    def _build_metrics(self) -> None:
        reg = self.registry = CollectorRegistry(auto_describe=True)
        reg.register(logship.LogShipCollector())  # opsstack_logship_* when it ships its logs (docs/logs.md)
        ProcessCollector(registry=reg)
        self.m_requests = Counter("opsstack_http_requests", "HTTP requests served by the region instances.",
                                  ["region", "route", "code"], registry=reg)
        self.m_duration = Histogram("opsstack_http_request_duration_seconds",
                                    "Time to serve a request, as seen by the region instance.",
                                    ["region", "route"], buckets=REQUEST_BUCKETS, registry=reg)
        self.m_user = Counter("opsstack_user_requests", "Requests of (simulated) users by client type "
                              "and user geography.", ["region", "client", "geo"], registry=reg)
        self.m_cache = Counter("opsstack_cache_requests", "Response cache lookups by result (hit|miss).",
                               ["region", "result"], registry=reg)
        self.m_replace = Counter("opsstack_demo_instance_replacements",
                                 "Times a region instance was replaced (POST /admin/replace).",
                                 ["region"], registry=reg)
        for r in self.regions:
            for result in ("hit", "miss"):
                self.m_cache.labels(r, result)
            self.m_replace.labels(r)
        reg.register(_StateCollector(self))

    def service_cpu_seconds(self) -> float:
        """CPU seconds of the service as it accounts its own work (opsstack_service_cpu_seconds_total):
        the process's CPU time, with the cpu-ramp burner counted at the duty cycle it was asked for
        instead of what a busy machine let it have, so the fault and ServiceCpuHigh agree on any
        machine. Never goes down (the two clocks are read at slightly different moments)."""
        t = os.times()
        with self._cpu_lock:
            value = t.user + t.system - self._burn_used + self._burn_demand
            self._cpu_reported = max(self._cpu_reported, value)
            return self._cpu_reported

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ lifecycle
    def start(self, load: bool | None = None) -> "DemoService":
        self.admin.open()
        self._sync_listeners()
        threading.Thread(target=self._ticker, name="demo-ticker", daemon=True).start()
        if self.demo.load if load is None else load:
            self.loadgen = LoadGenerator(self)
            self.loadgen.start()
        log.info("event=service_started service=%s admin=%s:%d regions=%s", self.name, self.host,
                 self.ports["admin"], ",".join(f"{r}:{self.ports[r]}" for r in self.regions))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.loadgen:
            self.loadgen.stop()
        for lst in self.listeners.values():
            lst.close()
        self.admin.close()
        with self._effects:
            self._free_leak()

    # ------------------------------------------------------------------ faults
    def active(self, kind: str, region: str | None = None) -> F.Fault | None:
        for f in self.faults:
            if f.kind == kind and (region is None or f.covers(region)):
                return f
        return None

    def apply_fault(self, kind: str, region: str | None = None, rate=None, duration=None) -> F.Fault:
        fault = F.make_fault(kind, region=region, rate=rate, duration=duration, limits=self.limits,
                             regions=self.regions, home_region=self.home)
        with self._lock:
            # the same kind on the same scope replaces the previous one
            self.faults = [f for f in self.faults if not (f.kind == fault.kind and f.region == fault.region)]
            self.faults.append(fault)
        if kind == "cache-miss-storm":
            for r in self.regions:
                if fault.covers(r):
                    self.caches[r].purge()
        if kind == "cpu-ramp":
            self._ensure_burner()
        self._sync_listeners()
        log.info("event=fault_applied service=%s kind=%s region=%s rate=%g expires_in=%.0fs", self.name, kind,
                 fault.region or "all", fault.rate, fault.expires - fault.started)
        return fault

    def heal(self, kind: str | None = None, region: str | None = None) -> list[F.Fault]:
        with self._lock:
            gone = [f for f in self.faults if (kind is None or f.kind == kind)
                    and (region is None or f.region in (None, region))]
            self.faults = [f for f in self.faults if f not in gone]
        self._after_removal(gone)
        return gone

    def _after_removal(self, gone: list[F.Fault]) -> None:
        kinds = {f.kind for f in gone}
        with self._effects:
            if "memory-leak" in kinds and not self.active("memory-leak"):
                self._free_leak()
            if "disk-fill" in kinds and not self.active("disk-fill"):
                self.volume.cleanup()
        self._sync_listeners()
        for f in gone:
            log.info("event=fault_healed service=%s kind=%s region=%s", self.name, f.kind, f.region or "all")

    def _free_leak(self) -> None:
        leak, self._leak = self._leak, []
        self._leak_bytes = 0
        for block in leak:
            block.close()  # munmap: the memory goes back to the system at once

    def _sync_listeners(self) -> None:
        if self._stop.is_set():
            return
        for r, lst in self.listeners.items():
            down = self.active("service-down", r) is not None
            try:
                if down and lst.is_open:
                    lst.close()
                elif not down and not lst.is_open:
                    lst.open()
            except OSError as exc:  # port taken meanwhile: the ticker retries
                log.warning("event=listener_error service=%s region=%s error=%r", self.name, r, str(exc))

    def replace(self, region: str) -> None:
        """Replace a region's instance: new listener, cold cache, instance faults gone."""
        if region not in self.regions:
            raise ValueError(f"unknown region {region!r} (regions: {', '.join(self.regions)})")
        gone = []
        with self._lock:
            kept = []
            for f in self.faults:
                if f.kind not in F.REGION_KINDS or not f.covers(region):
                    kept.append(f)
                elif f.region == region:
                    gone.append(f)
                else:  # a service-wide instance fault keeps hitting the other regions
                    for other in self.regions:
                        if other != region:
                            kept.append(F.Fault(f.kind, other, f.rate, f.started, f.expires))
            self.faults = kept
            self.replacements[region] += 1
        self.listeners[region].close()
        self.caches[region] = self._warm_cache()
        self.m_replace.labels(region).inc()
        self._after_removal(gone)
        self._sync_listeners()
        log.info("event=instance_replaced service=%s region=%s", self.name, region)

    def set_route(self, healthy: list[str] | None) -> set[str]:
        if healthy is None:
            new = set(self.regions)
        else:
            unknown = [r for r in healthy if r not in self.regions]
            if unknown:
                raise ValueError(f"unknown region {unknown[0]!r} (regions: {', '.join(self.regions)})")
            if not healthy:
                raise ValueError("at least one region must stay healthy")
            new = set(healthy)
        self.healthy = new
        log.info("event=route_set service=%s healthy=%s", self.name, ",".join(sorted(new)))
        return new

    def serving_region(self, region: str) -> str:
        """Where the traffic router sends a request that arrived at ``region``."""
        if region in self.healthy or not self.healthy:
            return region
        return self.home if self.home in self.healthy else sorted(self.healthy)[0]

    # ------------------------------------------------------------------ effects
    def _ticker(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self._tick()
            except Exception:
                log.exception("event=tick_error service=%s", self.name)

    def _tick(self) -> None:
        now = time.time()
        with self._lock:
            expired = [f for f in self.faults if f.expires <= now]
            self.faults = [f for f in self.faults if f not in expired]
        if expired:
            self._after_removal(expired)
        self._sync_listeners()
        dt, self._last_tick = now - self._last_tick, now
        with self._effects:  # heal frees under the same lock: nothing grows back after it
            leak = self.active("memory-leak")
            if leak:
                target = F.leak_target(leak, self.limits, now)
                while self._leak_bytes < target:
                    n = min(target - self._leak_bytes, 4 * 1024 * 1024)
                    self._leak.append(_resident_block(n, self._fill_chunk))
                    self._leak_bytes += n
            fill = self.active("disk-fill")
            if fill:
                dt = min(dt, now - fill.started, 2.0)
                n = F.fill_step(fill, self.limits, dt, self.volume.used(),
                                shutil.disk_usage(self.volume.path).free, self.demo.faults.disk_min_free_bytes)
                if n > 0:
                    self.volume.write(n, self._fill_chunk)

    def _ensure_burner(self) -> None:
        if self._burner is None or not self._burner.is_alive():
            self._burner = threading.Thread(target=self._burn, name="cpu-ramp", daemon=True)
            self._burner.start()

    def _burn(self) -> None:
        """Burn CPU at the ramp's duty cycle in 100 ms periods (hashlib releases the GIL)."""
        buf = b"\x00" * (256 * 1024)
        period = 0.1
        while not self._stop.is_set():
            fault = self.active("cpu-ramp")
            if fault is None:  # idle until the next cpu-ramp (the thread stays, no start/stop race)
                self._cpu_duty = 0.0
                self._stop.wait(0.2)
                continue
            duty = F.cpu_duty(fault, self.limits, time.time())
            self._cpu_duty = duty
            start_wall, start_cpu = time.monotonic(), time.thread_time()
            while time.thread_time() - start_cpu < duty * period and time.monotonic() - start_wall < period:
                hashlib.sha256(buf).digest()
            rest = period - (time.monotonic() - start_wall)
            if rest > 0:
                time.sleep(rest)
            with self._cpu_lock:
                self._burn_used += time.thread_time() - start_cpu
                self._burn_demand += duty * (time.monotonic() - start_wall)
        self._cpu_duty = 0.0

    # ------------------------------------------------------------------ region instance
    def _region_app(self, region: str):
        def app(req: Request) -> Response:
            return self.handle(region, req)
        return app

    def latency_of(self, region: str) -> float:
        return self.demo.home_latency if region == self.home else self.demo.overseas_latency

    def handle(self, edge: str, req: Request) -> Response:
        t0 = time.perf_counter()
        region = self.serving_region(edge)
        route, match, tags = "other", None, None
        for method, rx, label, tg in ROUTES:
            m = rx.match(req.path)
            if m:
                route, match, tags = label, m, tg
                if req.method not in (method, "HEAD" if method == "GET" else method):
                    route = "other"
                break
        if route == "/health":  # shallow: probes do not queue for a worker
            status, body = self._serve(region, route, req, match, tags)
        else:
            pool = self.pools[region]
            try:
                taken = pool.acquire()
            except Overloaded as exc:
                status, body = 503, {"error": "overloaded", "detail": str(exc)}
            else:
                try:
                    status, body = self._serve(region, route, req, match, tags, network_spike=False)
                finally:
                    pool.release(taken)
                # latency-spike is network delay between the user and the region: it slows the
                # answer, not the replica (no worker is held while it passes)
                spike = self.active("latency-spike", region)
                if spike:
                    time.sleep(spike.rate)
        headers = {"X-Served-By": f"{self.name}/{region}", **self.cache_headers(region, route, status, match, tags)}
        self.m_requests.labels(region, route, str(status)).inc()
        self.m_duration.labels(region, route).observe(time.perf_counter() - t0)
        client = req.headers.get("X-Opsstack-Client")
        if client is not None:
            geo = req.headers.get("X-Opsstack-Geo")
            client = client if client in model.CLIENTS else "unknown"
            geo = geo if geo in model.GEOS else "unknown"
            self.m_user.labels(region, client, geo).inc()
        return Response(status, body, headers=headers)

    def cache_headers(self, region: str, route: str, status: int, match, tags) -> dict:
        """What the edge's Varnish caches by (demo/varnish/opsstack.vcl): the content class, the
        tags (xkey, and Cache-Tag as Cloudflare reads them); errors, per-user answers and every
        answer during a cache-miss storm (the TTLs broken) are not cached (class none)."""
        if status >= 400 or self.active("cache-miss-storm", region):
            return {"X-Cache-Class": "none", "Cache-Control": "no-store"}
        if tags is not None and match is not None:
            names = [t.format(*match.groups()) for t in tags]
            return {"X-Cache-Class": "api", "xkey": " ".join(names), "Cache-Tag": ",".join(names)}
        if route == "/api/gates/:id/status":
            return {"X-Cache-Class": "dynamic"}
        return {"X-Cache-Class": "dynamic", "Cache-Control": "private, no-store"}

    def _serve(self, region: str, route: str, req: Request, match, tags,
               network_spike: bool = True) -> tuple[int, dict]:
        rng = self.rng
        overload = self.active("origin-overload", region)
        if overload and route != "/health" and rng.random() < overload.rate:
            # an overloaded origin: half of the hit requests stall past Varnish's first-byte
            # timeout, the other half fail fast
            if rng.random() < 0.5:
                time.sleep(OVERLOAD_STALL)
            else:
                time.sleep(0.05)
            return 503, {"error": "origin overloaded", "region": region}
        if self.active("region-outage", region):
            time.sleep(0.005)
            return 503, {"error": "instance unavailable", "region": region}
        # network + processing time of the region, a little jitter
        delay = self.latency_of(region) * max(0.5, rng.gauss(1.0, JITTER))
        spike = self.active("latency-spike", region) if network_spike else None
        if spike:
            delay += spike.rate
        burst = self.active("error-burst", region)
        if route == "other":
            time.sleep(delay)
            return 404, {"error": "not found"}
        body: dict = {"service": self.name, "region": region}
        if tags is not None and req.method in ("GET", "HEAD"):
            key = req.path
            storm = self.active("cache-miss-storm", region)
            cache = self.caches[region]
            bypass = storm is not None and rng.random() < storm.rate
            cached = None if bypass else cache.get(key)
            if cached is not None:
                self.m_cache.labels(region, "hit").inc()
                body.update(json.loads(cached))
            else:
                self.m_cache.labels(region, "miss").inc()
                if bypass:
                    delay += CACHE_BYPASS_PENALTY
                data = None if bypass or self.rcache is None else self.rcache.get(tags[0], region, key)
                if data is None:
                    data = self._backend(route, match)
                    if self.rcache is not None:
                        self.rcache.put(tags[0], region, key, data, [t.format(*match.groups()) for t in tags],
                                        ttl=1.0 if storm else REDIS_TTL)
                cache.put(key, json.dumps(data).encode(), [t.format(*match.groups()) for t in tags])
                body.update(data)
        elif route == "/api/gates/:id/status" and self.rcache is not None:
            body.update(self.rcache.get_or_fill("gates", region, req.path, lambda: self._backend(route, match),
                                                REDIS_GATE_TTL))
        elif route != "/health":
            body.update(self._backend(route, match))
        else:
            body["status"] = "ok"
        time.sleep(delay)
        if burst and route != "/health" and rng.random() < burst.rate:  # /health stays shallow
            code = 503 if rng.random() < 0.3 else 500
            self._log_failure(region, route, code, "error-burst")
            return code, {"error": "internal error"}
        return 200, body

    def _log_failure(self, region: str, route: str, code: int, fault: str) -> None:
        """One ERROR line per failed request, as a real service logs its 5xx (the log alert
        LogErrorSurge sees them in Loki, docs/logs.md), at most ERROR_LOGS_PER_SECOND: the rest
        are counted in the next line's suppressed=."""
        now = time.monotonic()
        with self._errlog_lock:
            if now - self._errlog_window >= 1.0:
                self._errlog_window, self._errlog_count = now, 0
            if self._errlog_count >= ERROR_LOGS_PER_SECOND:
                self._errlog_suppressed += 1
                return
            self._errlog_count += 1
            suppressed, self._errlog_suppressed = self._errlog_suppressed, 0
        log.error("event=request_failed service=%s region=%s route=%s code=%d fault=%s suppressed=%d",
                  self.name, region, route, code, fault, suppressed, extra={"region": region})

    def _warm_cache(self) -> TagCache:
        """A region instance's cache as it starts: warmed with the pages on sale (the event
        list and the EVENT_IDS event pages the load asks for), as a service warms its cache
        before it takes traffic. A cold cache would miss most lookups for minutes at the
        demo's low request rates: CacheHitRatioLow on every fresh start or restart, no fault."""
        cache = TagCache()
        for path in ["/api/events", *(f"/api/events/{i}" for i in range(EVENT_IDS))]:
            _, rx, route, tags = next(r for r in ROUTES if r[0] == "GET" and r[1].match(path))
            match = rx.match(path)
            cache.put(path, json.dumps(self._backend(route, match)).encode(),
                      [t.format(*match.groups()) for t in tags])
        return cache

    def _backend(self, route: str, match) -> dict:
        """The work behind a cache miss / an uncached route (small but real)."""
        if route == "/api/events":
            return {"events": [{"id": i, "name": f"event-{i}"} for i in range(20)]}
        if route == "/api/events/:id":
            i = int(match.group(1))
            return {"id": i, "name": f"event-{i}", "seats": (i * 7919) % 5000,
                    "digest": hashlib.sha256(str(i).encode()).hexdigest()}
        if route == "/api/gates/:id/status":
            return {"gate": int(match.group(1)), "open": True}
        if route == "/api/sessions":
            return {"session": hashlib.sha256(os.urandom(16)).hexdigest()[:16]}
        return {"user": "me"}

    # ------------------------------------------------------------------ admin API
    def state(self) -> dict:
        return {
            "service": self.name,
            "regions": {r: {"port": self.ports[r], "listening": self.listeners[r].is_open,
                            "routed": r in self.healthy, "replacements": self.replacements[r],
                            "cache_entries": len(self.caches[r])} for r in self.regions},
            "faults": [f.as_dict() for f in self.faults],
            "route": {"healthy": sorted(self.healthy)},
            "memory_leak_bytes": self._leak_bytes,
            "cpu_ramp_duty": self._cpu_duty,
            "volume": {"path": str(self.volume.path), "used_bytes": self.volume.used(),
                       "capacity_bytes": self.volume.capacity},
            "limits": self.limits.__dict__,
            "replicas": {r: p.snapshot() for r, p in self.pools.items()},
        }

    def set_replicas(self, data: dict) -> dict:
        """POST /admin/replicas: {"replicas": N} or {"change": +-K}, optional "region" (else every
        region); clamped to demo.replicas.min..max. Returns region -> {before, after}."""
        if ("replicas" in data) == ("change" in data):
            raise ValueError("give exactly one of 'replicas' (a count) or 'change' (+-K)")
        key = "replicas" if "replicas" in data else "change"
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, str) and v.lstrip("+-").isdigit()):
            raise ValueError(f"'{key}' must be a whole number, got {v!r}")
        v = int(v)
        regions = [data["region"]] if data.get("region") else list(self.regions)
        for r in regions:
            if r not in self.pools:
                raise ValueError(f"unknown region {r!r}")
        out = {}
        for r in regions:
            pool = self.pools[r]
            before, after = pool.set(v if key == "replicas" else pool.replicas + v)
            out[r] = {"before": before, "after": after}
            log.info("event=replicas_set service=%s region=%s before=%d after=%d", self.name, r, before, after)
        return out

    def _admin_app(self, req: Request) -> Response:
        p, m = req.path.rstrip("/") or "/", req.method
        try:
            if p == "/health":
                return Response(200, {"status": "ok", "service": self.name})
            if p == "/metrics":
                return Response(200, self.metrics_text(), content_type=CONTENT_TYPE_LATEST)
            if p in ("/admin", "/admin/state") and m == "GET":
                return Response(200, self.state())
            if p == "/admin/faults" and m == "GET":
                return Response(200, {"active": [f.as_dict() for f in self.faults],
                                      "kinds": {k: v[0] for k, v in F.KINDS.items()}})
            if p == "/admin/faults" and m == "POST":
                data = req.json()
                if "kind" not in data:
                    raise ValueError("missing 'kind'")
                f = self.apply_fault(str(data["kind"]), data.get("region"), data.get("rate"), data.get("duration"))
                return Response(201, {"fault": f.as_dict()})
            if (p == "/admin/heal" and m == "POST") or (p == "/admin/faults" and m == "DELETE"):
                data = req.json()
                gone = self.heal(data.get("kind"), data.get("region"))
                return Response(200, {"healed": [f.as_dict() for f in gone]})
            if p == "/admin/route" and m == "GET":
                return Response(200, {"healthy": sorted(self.healthy), "regions": self.regions})
            if p == "/admin/route" and m == "POST":
                data = req.json()
                if "healthy" not in data:
                    raise ValueError("missing 'healthy' (a list of regions, or null to restore)")
                h = data["healthy"]
                if h is not None and (not isinstance(h, list) or not all(isinstance(x, str) for x in h)):
                    raise ValueError("'healthy' must be a list of region names or null")
                return Response(200, {"healthy": sorted(self.set_route(h))})
            if (p == "/admin/route/restore" and m == "POST") or (p == "/admin/route" and m == "DELETE"):
                return Response(200, {"healthy": sorted(self.set_route(None))})
            if p == "/admin/cache/purge" and m == "POST":
                data = req.json()
                tags = data.get("tags")
                if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
                    raise ValueError("'tags' must be a list of strings")
                regions = [data["region"]] if data.get("region") else self.regions
                for r in regions:
                    if r not in self.caches:
                        raise ValueError(f"unknown region {r!r}")
                n = sum(self.caches[r].purge(tags) for r in regions)
                log.info("event=cache_purged service=%s tags=%s entries=%d", self.name, tags or "all", n)
                return Response(200, {"purged": n})
            if p == "/admin/replace" and m == "POST":
                data = req.json()
                regions = [data["region"]] if data.get("region") else list(self.regions)
                for r in regions:
                    self.replace(r)
                return Response(200, {"replaced": regions})
            if p == "/admin/replicas" and m == "GET":
                return Response(200, {r: pool.snapshot() for r, pool in self.pools.items()})
            if p == "/admin/replicas" and m == "POST":
                return Response(200, {"replicas": self.set_replicas(req.json())})
            if p == eventreq.PREFIX or p.startswith(eventreq.PREFIX + "/"):
                if self.eventreq is None:
                    return Response(404 if not eventreq.serves(self.svc) else 503,
                                    {"error": "the event-request API is served by the Event Management service"
                                     if not eventreq.serves(self.svc) else "no database configured (database.url)"})
                return self.eventreq.handle(req)
            if p == "/admin/volume/cleanup" and m == "POST":
                freed = self.volume.filled()
                self.heal("disk-fill")
                with self._effects:
                    self.volume.cleanup()
                return Response(200, {"freed_bytes": freed})
        except ValueError as exc:
            return Response(400, {"error": str(exc)})
        return Response(404, {"error": f"no {m} {p}; see docs/demo.md"})


class _StateCollector:
    """Gauges read from the service's state at scrape time."""

    def __init__(self, svc: DemoService):
        self.svc = svc

    def describe(self):
        return []

    def collect(self):
        s = self.svc
        d = s.demo
        now = s.clock.now()
        hour = model.local_hour(now, d.timezone)
        shares = model.reroute(model.region_shares(s.regions, s.home, d.geo_mix), s.healthy)
        sess = model.sessions(peak_sessions=d.peak_sessions, peak_factor=d.peak_factor, hour=hour,
                              svc_share=model.service_share(s.platform.services, s.name),
                              shares=shares, client_mix=d.client_mix, seed=d.seed, key=s.name, t=now)
        g = GaugeMetricFamily("opsstack_active_sessions", "Active user sessions by region and client type.",
                              labels=["region", "client"])
        for (region, client), v in sorted(sess.items()):
            g.add_metric([region, client], v)
        yield g
        yield GaugeMetricFamily("opsstack_service_memory_limit_bytes", "Memory the service may use.",
                                value=s.svc.memory_limit_bytes)
        yield GaugeMetricFamily("opsstack_service_cpu_limit_cores", "CPU cores the service may use.",
                                value=s.svc.cpu_limit_cores)
        yield CounterMetricFamily("opsstack_service_cpu_seconds", "CPU seconds of the service's work: "
                                  "process CPU time with the cpu-ramp burn counted at its duty cycle.",
                                  value=s.service_cpu_seconds())
        used = GaugeMetricFamily("opsstack_volume_used_bytes", "Bytes used on the service's data volume.",
                                 labels=["volume"])
        used.add_metric([VOLUME_NAME], s.volume.used())
        yield used
        cap = GaugeMetricFamily("opsstack_volume_capacity_bytes", "Capacity of the service's data volume.",
                                labels=["volume"])
        cap.add_metric([VOLUME_NAME], s.volume.capacity)
        yield cap
        fa = GaugeMetricFamily("opsstack_demo_fault_active", "1 while an injected fault of this kind is "
                               "active (region=all: every region of the service).", labels=["kind", "region"])
        faults = list(s.faults)
        for kind in F.KINDS:
            scopes = ["all"] + (s.regions if kind in F.REGION_KINDS else [])
            for scope in scopes:
                on = any(f.kind == kind and (f.region or "all") == scope for f in faults)
                fa.add_metric([kind, scope], 1.0 if on else 0.0)
        yield fa
        rt = GaugeMetricFamily("opsstack_demo_route_healthy", "1 when the traffic router sends the region "
                               "its own traffic, 0 when it is routed elsewhere.", labels=["region"])
        up = GaugeMetricFamily("opsstack_demo_listener_up", "1 when the region instance accepts connections.",
                               labels=["region"])
        ce = GaugeMetricFamily("opsstack_cache_entries", "Entries in the region's response cache.",
                               labels=["region"])
        for r in s.regions:
            rt.add_metric([r], 1.0 if r in s.healthy else 0.0)
            up.add_metric([r], 1.0 if s.listeners[r].is_open else 0.0)
            ce.add_metric([r], len(s.caches[r]))
        yield rt
        yield up
        yield ce
        rep = GaugeMetricFamily("opsstack_demo_replicas", "Replicas of the region instance (POST /admin/replicas).",
                                labels=["region"])
        cores = GaugeMetricFamily("opsstack_demo_replica_cpu_cores", "Workers of the region instance "
                                  "(replicas x demo.replicas.workers): its replica CPU capacity.", labels=["region"])
        busy = CounterMetricFamily("opsstack_demo_replica_cpu_seconds", "Seconds the region's replica workers "
                                   "were busy serving requests (replica CPU).", labels=["region"])
        rej = CounterMetricFamily("opsstack_demo_replica_rejected_requests", "Requests answered 503 because no "
                                  "replica worker became free within demo.replicas.queue_timeout.", labels=["region"])
        for r in s.regions:
            snap = s.pools[r].snapshot()
            rep.add_metric([r], snap["replicas"])
            cores.add_metric([r], snap["replicas"] * snap["workers"])
            busy.add_metric([r], snap["busy_seconds"])
            rej.add_metric([r], snap["rejected"])
        yield rep
        yield cores
        yield busy
        yield rej
        yield GaugeMetricFamily("opsstack_demo_replicas_min", "Fewest replicas the knob allows (demo.replicas.min).",
                                value=d.replicas.min)
        yield GaugeMetricFamily("opsstack_demo_replicas_max", "Most replicas the knob allows (demo.replicas.max).",
                                value=d.replicas.max)
        yield GaugeMetricFamily("opsstack_demo_memory_leak_bytes", "Bytes retained by the memory-leak fault.",
                                value=s._leak_bytes)
        yield GaugeMetricFamily("opsstack_demo_cpu_ramp_duty_ratio", "Duty cycle of the cpu-ramp burner "
                                "thread (0..1 of a core).", value=s._cpu_duty)
        yield GaugeMetricFamily("opsstack_demo_load_factor", "Diurnal load factor now (1 = daily average).",
                                value=model.diurnal_factor(hour, d.peak_factor))
