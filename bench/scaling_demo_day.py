"""Predictive vs reactive vs fixed scaling on the real demo service over a time-accelerated day.

bench/scaling_bench.py measures one replica of the demo service and then *simulates* a day with
a queue model. This bench plays the day for real:

1. **Measure** one replica (scaling_bench.measure: closed-loop saturation of 1 then 2 replicas
   of a real ``opsstack demo serve``) -> the replica CPU seconds a request costs (``s``) and the
   workers per replica. The demo's service time is a sleep while the request holds a worker
   (demo/replicas.py), so concurrency is cheap and the machine's CPU is not what limits a region:
   its replicas are. ``--service-time`` (demo.home_latency, default 0.2 s) keeps the request rate
   that fills N replicas low enough for three services and their clients on 2 cores.
2. **One day, compressed**: 24 h of the demo model's curve (``demo.model.diurnal_factor``, the
   14-16 h plateau at 3x the mean, its ``wobble``: scaling_bench.day_curve) played in
   ``--day-minutes`` of real time; the arrival rate (real requests/s) is sized so the history's
   peak needs about ``--peak-replicas`` replicas at 80%. Three demo processes (load generator off),
   one per policy, run AT THE SAME TIME and get the SAME open-loop Poisson arrival sequence: every
   arrival is one real HTTP request (asyncio, HTTP/1.0, client-side latency; 503s are answered
   failures, counted apart) to each service's home region.
3. **Policies** act through the real knob (``POST /admin/replicas`` on each service's admin port)
   once per model minute (at least every 0.2 s real), with the same decision functions as
   scaling_bench's simulation (scaling_bench.predictive_decision / reactive_decision ->
   forecasters/scaling.py): predictive = every 5 model minutes, the replicas the next ``--lead``
   of the forecast needs (median daily profile of 7 history days, re-levelled by the last hour of
   the requests the service counted); reactive = utilisation read from the service's own /metrics
   (rate of ``opsstack_demo_replica_cpu_seconds_total`` over the last 5 model minutes /
   ``opsstack_demo_replica_cpu_cores``), out once it has been over 80% for ``--alert-for``,
   in under 40% while traffic falls, ``--cooldown`` between changes; fixed = the history peak's
   replicas. A scale-out serves after ``--startup`` (model time; the replicas are paid for while
   they start); a scale-in is at once.

Reported per policy: p95 latency of the requests sent in the 14:00-16:00 model window, the worst
``--window``-model-minute window's p95 (a model minute is well under a second of real time, too
few requests for a p95 of its own), model minutes with the 5-minute utilisation over 80% (what
ScalingCpuHigh sees) and with the 1-tick utilisation over 80%, replica-hours (model time) and the
ratio to fixed, 503s and failed requests, and the machine's load while it ran.

    .venv/bin/python bench/scaling_demo_day.py [--json /tmp/scaling_day.json] [--surprise 1.1]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import scaling_bench as sb  # noqa: E402
from demo import model  # noqa: E402
from forecasters import scaling  # noqa: E402
from tests.support.demo import DemoProcess  # noqa: E402

HOME = sb.HOME
POLICIES = ("predictive", "reactive", "fixed")
DAY = 86400.0
MIN_TICK = 0.2  # real seconds: the policies' controllers tick at most this often
PATH = "/api/me"


@dataclasses.dataclass(frozen=True)
class Settings:
    day_seconds: float = 600.0      # real seconds the 24 h model day lasts
    service_time: float = 0.2       # demo.home_latency: seconds a request holds a worker
    workers: int = 2                # demo.replicas.workers
    queue_timeout: float = 10.0     # demo.replicas.queue_timeout (then 503)
    min_replicas: int = 2           # floor of every policy
    max_replicas: int = 64
    startup: float = 180.0          # model seconds before a new replica serves
    cooldown: float = 600.0         # model seconds between two changes
    alert_for: float = 300.0        # ScalingCpuHigh `for:` (model seconds)
    lead: float = 1800.0            # predictive look-ahead (model seconds)
    window: int = 10                # model minutes of the worst-window p95
    request_timeout: float = 60.0   # real seconds a client waits for an answer

    @property
    def accel(self) -> float:
        return DAY / self.day_seconds

    @property
    def tick(self) -> float:
        return max(MIN_TICK, self.day_seconds / 1440.0)

    def limits(self, workers: int) -> scaling.Limits:
        return scaling.Limits(capacity=workers, min_replicas=self.min_replicas, max_replicas=self.max_replicas,
                              cooldown=self.cooldown, lead=self.lead)

    def demo_config(self, initial: int = 1, max_replicas: int = 4) -> dict:
        return {"home_latency": self.service_time,
                "replicas": {"initial": initial, "min": 1, "max": max_replicas, "workers": self.workers,
                             "queue_timeout": self.queue_timeout}}


# ------------------------------------------------------------------ the client side
async def http(host: str, port: int, method: str, path: str, body: dict | None = None,
               timeout: float = 30.0) -> tuple[int, bytes]:
    """One HTTP/1.0 request (the demo answers Connection: close): (status, body)."""
    async def go():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            data = b"" if body is None else json.dumps(body).encode()
            head = f"{method} {path} HTTP/1.0\r\nHost: {host}\r\n"
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            writer.write(head.encode() + b"\r\n" + data)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        line, _, rest = raw.partition(b"\r\n")
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"not an HTTP answer: {line[:80]!r}")
        return int(parts[1]), rest.partition(b"\r\n\r\n")[2]
    return await asyncio.wait_for(go(), timeout)


def arrival_times(rates: list[float], day_seconds: float, seed: int) -> list[float]:
    """Open-loop Poisson arrivals (real seconds from the start of the day) for per-model-minute
    rates in real requests/s."""
    rng = random.Random(seed)
    minute = day_seconds / len(rates)
    out = []
    for m, lam in enumerate(rates):
        if lam <= 0:
            continue
        t, end = m * minute, (m + 1) * minute
        while True:
            t += rng.expovariate(lam)
            if t >= end:
                break
            out.append(t)
    return out


def p95(xs: list[float]) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[int(0.95 * (len(xs) - 1))]


# ------------------------------------------------------------------ one policy on one service
class Arm:
    """One policy driving the replica knob of one real demo process."""

    def __init__(self, policy: str, demo: DemoProcess, lim: scaling.Limits, settings: Settings,
                 profile: list[float], s: float, start_n: int):
        self.policy, self.demo, self.lim, self.settings = policy, demo, lim, settings
        self.profile, self.s = profile, s
        self.host, self.admin_port, self.port = demo.host, demo.ports["admin"], demo.ports[HOME]
        self.start_n = start_n
        self.ready = start_n                 # replicas serving (the knob)
        self.pending: list[list[float]] = []  # [model time it serves, count]
        self.last_change = -1e18
        self.over_since: float | None = None
        self.last_block = -1
        self.samples: list[tuple[float, float, float, float, float]] = []  # model t, real t, busy, reqs, slots
        self.observed: list[float] = []   # requests/s the service counted, per finished model minute
        self.util5: list[float] = []      # per model minute: utilisation over the last 5 model minutes
        self.util1: list[float] = []      # per model minute: utilisation since the previous tick
        self.replicas: list[int] = []     # per model minute: replicas serving
        self.events: list[dict] = []
        self.replica_seconds = 0.0        # model seconds x replicas (serving + starting)
        self.last_t = 0.0
        self.process_cpu = 0.0
        self.req_t: list[float] = []      # model time each request was sent
        self.req_lat: list[float] = []
        self.req_code: list[int] = []     # 0: no answer (connection error, timeout)

    @property
    def total(self) -> int:
        return self.ready + int(sum(k for _, k in self.pending))

    async def request(self, t_model: float) -> None:
        t0 = time.perf_counter()
        try:
            code, _ = await http(self.host, self.port, "GET", PATH, timeout=self.settings.request_timeout)
        except (OSError, asyncio.TimeoutError, ValueError):
            code = 0
        self.req_t.append(t_model)
        self.req_lat.append(time.perf_counter() - t0)
        self.req_code.append(code)

    async def _knob(self, n: int) -> dict:
        status, body = await http(self.host, self.admin_port, "POST", "/admin/replicas",
                                  {"replicas": n, "region": HOME})
        if status != 200:
            raise RuntimeError(f"{self.policy}: POST /admin/replicas {n} -> {status} {body[:200]!r}")
        return json.loads(body)["replicas"][HOME]

    def _util_since(self, t_from: float, real: float, busy: float, slots: float) -> float:
        """Utilisation from the latest sample at or before model time ``t_from`` to now (as a
        Prometheus rate over that window / the capacity gauge now)."""
        old = self.samples[0]
        for smp in reversed(self.samples):
            if smp[0] <= t_from:
                old = smp
                break
        dt = real - old[1]
        return (busy - old[2]) / dt / slots if dt > 0 and slots > 0 else 0.0

    async def tick(self, now: float) -> None:
        """One controller step at model time ``now``: scrape, account, apply, decide."""
        status, text = await http(self.host, self.admin_port, "GET", "/metrics")
        real = time.monotonic()
        if status != 200:
            raise RuntimeError(f"{self.policy}: /metrics -> {status}")
        text = text.decode()
        busy = sb._metric(text, "opsstack_demo_replica_cpu_seconds_total", region=HOME)
        reqs = sb._metric(text, "opsstack_http_requests_total", region=HOME, route=PATH)
        slots = sb._metric(text, "opsstack_demo_replica_cpu_cores", region=HOME)
        self.process_cpu = sb._metric(text, "process_cpu_seconds_total")
        self.replica_seconds += self.total * max(0.0, now - self.last_t)
        self.last_t = now
        if self.samples:
            prev = self.samples[-1]
            # the 5-minute rate (at least two ticks: a tiny day's tick is longer than 5 model minutes)
            u5 = self._util_since(now - max(300.0, 2 * self.settings.tick * self.settings.accel), real, busy, slots)
            dt = real - prev[1]
            u1 = (busy - prev[2]) / dt / slots if dt > 0 and slots > 0 else 0.0
            rate = (reqs - prev[3]) / dt if dt > 0 else 0.0
            for _ in range(len(self.observed), min(1440, int(now // 60))):  # minutes finished since
                self.observed.append(rate)
                self.util5.append(u5)
                self.util1.append(u1)
                self.replicas.append(self.ready)
        else:
            u5 = 0.0
        self.samples.append((now, real, busy, reqs, slots))
        if now >= DAY:
            return
        # replicas that finished starting
        done = [p for p in self.pending if p[0] <= now]
        if done:
            self.pending = [p for p in self.pending if p[0] > now]
            self.ready += int(sum(k for _, k in done))
            knob = await self._knob(self.ready)
            self.events.append({"t": now, "kind": "ready", "ready": self.ready, "knob": knob})
        total = self.total
        since = now - self.last_change
        new, forecast = total, None
        if self.policy == "reactive":
            new, self.over_since = sb.reactive_decision(total, u5, sb.traffic_falling(self.observed), since, now,
                                                        self.over_since, self.lim, self.settings.alert_for)
        elif self.policy == "predictive" and int(now // 300) != self.last_block and self.observed:
            self.last_block = int(now // 300)
            new = sb.predictive_decision(total, self.profile, self.observed, self.s, since, self.lim, u5)
            # what the forecast alone asks (without the reactive backstop): says which one acted
            forecast = sb.predictive_decision(total, self.profile, self.observed, self.s, since, self.lim, None)
        if new == total:
            return
        event = {"t": now, "kind": "out" if new > total else "in", "before": total, "after": new,
                 "util5": u5, "over_since": self.over_since, "forecast_wants": forecast}
        self.last_change = now
        if new > total:
            self.pending.append([now + self.settings.startup, new - total])
        else:
            drop = total - new
            while drop and self.pending:  # cancel starting ones first, then stop serving ones
                p = self.pending.pop()
                take = min(int(p[1]), drop)
                drop -= take
                if p[1] - take:
                    self.pending.append([p[0], p[1] - take])
            if drop:
                self.ready -= drop
                event["knob"] = await self._knob(self.ready)
        self.events.append(event)

    def summary(self, window: int) -> dict:
        answered = [(t, lat) for t, lat, c in zip(self.req_t, self.req_lat, self.req_code) if c in (200, 503)]
        lo, hi = model.PEAK_START_HOUR * 3600, model.PEAK_END_HOUR * 3600
        peak = [lat for t, lat in answered if lo <= t < hi]
        by_window: dict[int, list[float]] = {}
        by_minute: dict[int, list[float]] = {}
        for t, lat in answered:
            by_window.setdefault(int(t // (window * 60)), []).append(lat)
            by_minute.setdefault(int(t // 60), []).append(lat)
        worst = max((p95(v) for v in by_window.values() if len(v) >= 20), default=None)
        worst_at = None
        if worst is not None:
            worst_at = next(k for k, v in by_window.items() if len(v) >= 20 and p95(v) == worst) * window * 60
        first = self.samples[0] if self.samples else None
        last = self.samples[-1] if self.samples else None
        cap = sum((b[1] - a[1]) * a[4] for a, b in zip(self.samples, self.samples[1:]))
        outs = [e for e in self.events if e["kind"] == "out"]
        return {
            "policy": self.policy, "start_replicas": self.start_n,
            "requests": len(self.req_code), "ok": self.req_code.count(200), "http_503": self.req_code.count(503),
            "failed": sum(1 for c in self.req_code if c not in (200, 503)),
            "peak_requests": len(peak), "peak_p95_seconds": p95(peak),
            "worst_window_p95_seconds": worst, "worst_window_at": worst_at,
            "minutes_above_80_util5": sum(1 for u in self.util5 if u > self.lim.high),
            "minutes_above_80_util1": sum(1 for u in self.util1 if u > self.lim.high),
            "replica_hours": self.replica_seconds / 3600.0,
            "mean_utilisation": (last[2] - first[2]) / cap if cap > 0 else None,
            "max_replicas": max(self.replicas, default=self.start_n),
            "changes": len([e for e in self.events if e["kind"] in ("out", "in")]),
            "first_scale_out_at": outs[0]["t"] if outs else None,
            "process_cpu_seconds": self.process_cpu,
            "events": self.events,
            "minutes": {"replicas": self.replicas, "util5": [round(u, 4) for u in self.util5],
                        "observed_rps": [round(r, 3) for r in self.observed],
                        "p95": [None if len(by_minute.get(m, [])) < 5 else round(p95(by_minute[m]), 4)
                                for m in range(1440)]},
        }


# ------------------------------------------------------------------ the day
async def _play(arms: list[Arm], arrivals: list[float], settings: Settings, progress) -> dict:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    loads: list[float] = [os.getloadavg()[0]]
    lag = {"max": 0.0, "sum": 0.0, "n": 0}
    stop = asyncio.Event()
    for arm in arms:  # the first sample, at model 00:00
        await arm.tick(0.0)

    async def controller():
        while True:
            # the next tick boundary (a late tick does not make the next ones run back to back)
            k = int((loop.time() - t0) / settings.tick) + 1
            await asyncio.sleep(max(0.0, t0 + k * settings.tick - loop.time()))
            now = min(DAY, (loop.time() - t0) * settings.accel)
            await asyncio.gather(*(arm.tick(now) for arm in arms))
            if progress and int(now // 10800) != int((now - settings.tick * settings.accel) // 10800):
                progress(f"  {now / 3600:5.1f} h  " + "  ".join(f"{a.policy} {a.ready}+{a.total - a.ready}"
                                                              for a in arms) + f"  load {os.getloadavg()[0]:.1f}")
            if now >= DAY:
                return

    async def machine():
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 5.0)
            except asyncio.TimeoutError:
                loads.append(os.getloadavg()[0])

    ctl = asyncio.create_task(controller())
    mon = asyncio.create_task(machine())
    inflight: set[asyncio.Task] = set()
    for at in arrivals:
        delay = t0 + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(0.0, loop.time() - t0 - at)
        lag["max"] = max(lag["max"], late)
        lag["sum"] += late
        lag["n"] += 1
        for arm in arms:
            task = asyncio.create_task(arm.request(at * settings.accel))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
    await ctl
    if inflight:
        await asyncio.wait(set(inflight), timeout=settings.request_timeout + 10)
    stop.set()
    await mon
    return {"wall_seconds": loop.time() - t0, "load1": {"min": min(loads), "max": max(loads),
                                                        "mean": sum(loads) / len(loads), "samples": len(loads)},
            "send_lag_seconds": {"max": lag["max"], "mean": lag["sum"] / max(1, lag["n"])}}


def run_day(workdir: Path, settings: Settings, rates: list[float], profile: list[float], s: float,
            workers: int, seed: int = 42, progress=None) -> dict:
    """Play one day of ``rates`` (real requests/s per model minute) on three real demo processes at
    once, one per policy, with the same arrivals; returns the per-policy results and the run's
    conditions. ``profile``: the forecast's history profile (same unit); ``s``: replica seconds
    per request (measured); ``workers``: workers per replica."""
    lim = settings.limits(workers)
    start = {"fixed": sb.fixed_replicas(profile, s, lim)}
    start["predictive"] = start["reactive"] = sb.start_replicas(rates[0], s, lim)
    arrivals = arrival_times(rates, settings.day_seconds, seed)
    procs: dict[str, DemoProcess] = {}
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        for p in POLICIES:
            procs[p] = DemoProcess(Path(workdir) / p, load=False,
                                   **settings.demo_config(start[p], settings.max_replicas))
            procs[p].start(timeout=120)
        arms = [Arm(p, procs[p], lim, settings, profile, s, start[p]) for p in POLICIES]
        cond = asyncio.run(_play(arms, arrivals, settings, progress))
        final = {}
        for arm in arms:
            status, body = arm.demo.admin("GET", "/admin/replicas")
            final[arm.policy] = body[HOME]["replicas"] if status == 200 else None
    finally:
        for d in procs.values():
            d.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rows = [a.summary(settings.window) for a in arms]
    base = next(r for r in rows if r["policy"] == "fixed")
    for r in rows:
        r["vs_fixed"] = r["replica_hours"] / base["replica_hours"] if base["replica_hours"] else None
        r["knob_at_end"] = final[r["policy"]]
    cond["bench_cpu_seconds"] = (usage.ru_utime + usage.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    cond["cpus"] = os.cpu_count()
    cond["arrivals"] = len(arrivals)
    return {"settings": dataclasses.asdict(settings), "service_time": s, "workers": workers,
            "fixed_replicas": start["fixed"], "start_replicas": start["predictive"], "conditions": cond,
            "rows": rows}


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def table(result: dict) -> str:
    w = result["settings"]["window"]
    lines = [f"| policy | peak (14-16 h) p95 | worst {w}-min p95 | minutes > 80% CPU (5-min rate) | "
             "minutes > 80% (1 tick) | replica-hours | vs fixed | 503s | failed | requests |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = r["policy"] + (f" ({result['fixed_replicas']} replicas)" if r["policy"] == "fixed" else "")
        lines.append(f"| {name} | {_ms(r['peak_p95_seconds'])} | {_ms(r['worst_window_p95_seconds'])} | "
                     f"{r['minutes_above_80_util5']} | {r['minutes_above_80_util1']} | {r['replica_hours']:.1f} | "
                     f"{r['vs_fixed']:.2f}x | {r['http_503']} | {r['failed']} | {r['requests']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--day-minutes", type=float, default=10.0, help="real minutes the 24 h day lasts")
    ap.add_argument("--peak-replicas", type=int, default=8, help="replicas the history's peak needs at 80%%")
    ap.add_argument("--mean-rps", type=float, help="daily mean arrivals/s (default: sized by --peak-replicas)")
    ap.add_argument("--surprise", type=float, default=1.0, help="the day's level against the history")
    ap.add_argument("--service-time", type=float, default=0.2, help="demo.home_latency, seconds")
    ap.add_argument("--workers", type=int, default=2, help="demo.replicas.workers")
    ap.add_argument("--queue-timeout", type=float, default=10.0, help="demo.replicas.queue_timeout, seconds")
    ap.add_argument("--startup", type=float, default=180.0, help="model seconds a new replica takes to serve")
    ap.add_argument("--cooldown", type=float, default=600.0, help="model seconds")
    ap.add_argument("--alert-for", type=float, default=300.0, help="ScalingCpuHigh `for:`, model seconds")
    ap.add_argument("--lead", type=float, default=1800.0, help="predictive look-ahead, model seconds")
    ap.add_argument("--min-replicas", type=int, default=2)
    ap.add_argument("--window", type=int, default=10, help="model minutes of the worst-window p95")
    ap.add_argument("--measure-seconds", type=float, default=4.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    settings = Settings(day_seconds=args.day_minutes * 60, service_time=args.service_time, workers=args.workers,
                        queue_timeout=args.queue_timeout, min_replicas=args.min_replicas, startup=args.startup,
                        cooldown=args.cooldown, alert_for=args.alert_for, lead=args.lead, window=args.window)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="scaling-day-") as tmp:
        meas = sb.measure(Path(tmp) / "measure", args.measure_seconds, args.clients, check=False,
                          demo=settings.demo_config())
        one, two = meas[1], meas[2]
        s, workers = one["service_time"], one["workers"]
        print(f"measured on the demo service ({HOME}, {workers} workers/replica, home_latency {args.service_time:g}s): "
              f"{s * 1000:.1f} ms of replica CPU per request, 1 replica {one['rps']:.1f} req/s, "
              f"2 replicas {two['rps']:.1f} req/s (x{two['rps'] / one['rps']:.2f})")
        lim = settings.limits(workers)
        mean_rps = args.mean_rps or (args.peak_replicas - 0.5) * workers * lim.high / (3.0 * s)
        rng = random.Random(args.seed)
        history = [sb.day_curve(mean_rps, rng.gauss(1.0, 0.03), args.seed, d) for d in range(7)]
        profile = sb.history_profile(history)
        today = sb.day_curve(mean_rps, args.surprise, args.seed, 7)
        print(f"day: mean {mean_rps:.1f} req/s (peak {max(today):.1f}) per service, x{args.surprise:g} the history, "
              f"24 h in {args.day_minutes:g} min (1 model minute = {settings.day_seconds / 1440:.2f} s), "
              f"3 services at once; load before {load0[0]:.2f}", flush=True)
        result = run_day(Path(tmp) / "day", settings, today, profile, s, workers, args.seed,
                         progress=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:  # first: the run took minutes
        result.update({"args": vars(args), "measured": {str(k): v for k, v in meas.items()}, "mean_rps": mean_rps,
                       "load_before": load0})
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    c = result["conditions"]
    print(table(result))
    print(f"machine: {c['cpus']} cores, load1 during the run min {c['load1']['min']:.2f} mean {c['load1']['mean']:.2f} "
          f"max {c['load1']['max']:.2f}; bench client {c['bench_cpu_seconds']:.0f} CPU s, demo services "
          + ", ".join(f"{r['policy']} {r['process_cpu_seconds']:.0f}" for r in result["rows"])
          + f" CPU s in {c['wall_seconds']:.0f} s; request send lag max {c['send_lag_seconds']['max'] * 1000:.0f} ms "
          f"mean {c['send_lag_seconds']['mean'] * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
