"""Predictive vs reactive vs fixed capacity over a simulated day of the demo.

1. **Measure** one replica on the real demo service: ``opsstack demo serve`` (a real process,
   tests.support.demo.DemoProcess) with its load generator off and 1 replica of
   ``demo.replicas.workers`` workers in the home region; a closed loop of concurrent clients
   saturates it for ``--measure-seconds``; from its own /metrics: requests served, replica CPU
   seconds (``opsstack_demo_replica_cpu_seconds_total``) -> service time per request and
   requests/s one replica serves. Then it checks the knob: the same load on 2 replicas must
   serve about twice as many.
2. **Simulate** one day (1-minute steps, 24 h in well under a minute) of one service's home
   region: arrivals follow the demo model's curve (``demo.model.diurnal_factor``, the 14-16 h peak
   at 3x the mean, the model's slow ``wobble``), scaled by ``--mean-rps`` so the peak needs about
   ten replicas; the day is ``--surprise`` busier than the 7 days of history the forecast learnt
   (the forecast is never exact). Per minute: the replicas that are ready (a new replica takes
   ``--startup`` to serve), utilisation = load x service time / (replicas x workers), and latency
   from an M/M/c queue (Erlang C) with the measured service time; over capacity, the backlog
   carries into the next minute.
3. **Policies** (forecasters/scaling.py, the same functions the forecaster's recommendation uses):
   - predictive: every 5 minutes, the replicas the forecast (median daily profile of the 7
     history days, re-levelled to the last hour) of the next ``--lead`` needs at the top of the
     70-80% band; a reactive backstop when measured utilisation is over 80%; in after the cooldown;
   - reactive: scale out when the 5-minute utilisation has been over 80% for ``--alert-for``
     (the ScalingCpuHigh alert), target tracking to 75%; in by one when under 40% and traffic is
     falling (ScalingTrafficFalling); ``--cooldown`` between changes (remediation cooldown);
   - fixed: the replicas the history's peak needs at 80%, all day.

Reported side by side, for a day as the history said and a day 10% busier: peak-time
(14:00-16:00) p95 latency, the worst minute's p95 (the ramp, where reactive lags), minutes above
80% utilisation, replica-hours (cost) and mean utilisation. The M/M/c model is checked once
against the real service (1 replica, Poisson arrivals at 75%): its p95 is on the safe side (the
demo's service time is nearly constant, an M/M/c one is exponential). The policies' decisions
(``predictive_decision``, ``reactive_decision``, ``fixed_replicas``...) are shared with
bench/scaling_demo_day.py, which plays the day on three real demo services instead of the model.

    .venv/bin/python bench/scaling_bench.py [--json bench/results/scaling_bench.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo import model  # noqa: E402
from forecasters import scaling  # noqa: E402
from tests.support.demo import DemoProcess  # noqa: E402

HOME = "seoul"


# ------------------------------------------------------------------ 1. measure the real service
def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _drive(url: str, clients: int, seconds: float) -> int:
    stop = time.monotonic() + seconds
    done = [0]
    lock = threading.Lock()

    def loop():
        n = 0
        while time.monotonic() < stop:
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    r.read()
                    if r.status == 200:
                        n += 1
            except OSError:
                pass
        with lock:
            done[0] += n

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0]


def _open_loop(url: str, rate: float, seconds: float, seed: int) -> list[float]:
    """Poisson arrivals at ``rate``/s for ``seconds``; each request's response time (client side)."""
    rng = random.Random(seed)
    out: list[float] = []
    lock = threading.Lock()

    def one():
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                r.read()
        except OSError:
            return
        with lock:
            out.append(time.perf_counter() - t0)

    threads = []
    nxt = time.perf_counter()
    end = nxt + seconds
    while nxt < end:
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one)
        t.start()
        threads.append(t)
        nxt += rng.expovariate(rate)
    for t in threads:
        t.join()
    return sorted(out)


def measure(workdir: Path, seconds: float, clients: int, check: bool = True, demo: dict | None = None) -> dict:
    """1 replica then 2 under a closed loop of ``clients``; ``check``: then the queue model against
    Poisson arrivals at 75%. ``demo``: overrides of the demo config (e.g. home_latency, replicas.workers)."""
    over = dict(demo or {})
    rep = {"initial": 1, "min": 1, "max": 4, **(over.pop("replicas", None) or {})}
    demo = DemoProcess(workdir, load=False, replicas=rep, **over)
    demo.start()
    try:
        out = {}
        for replicas in (1, 2):
            status, _ = demo.admin("POST", "/admin/replicas", {"replicas": replicas, "region": HOME})
            assert status == 200
            before = demo.metrics()
            t0 = time.monotonic()
            served = _drive(demo.url(HOME, "/api/me"), clients, seconds)
            wall = time.monotonic() - t0
            after = demo.metrics()
            busy = (_metric(after, "opsstack_demo_replica_cpu_seconds_total", region=HOME)
                    - _metric(before, "opsstack_demo_replica_cpu_seconds_total", region=HOME))
            reqs = (_metric(after, "opsstack_http_requests_total", region=HOME, route="/api/me")
                    - _metric(before, "opsstack_http_requests_total", region=HOME, route="/api/me"))
            workers = int(re.search(r"opsstack_demo_replica_cpu_cores\{region=\"seoul\"\} (\S+)", after).group(1)
                          .split(".")[0]) // replicas
            out[replicas] = {"served": served, "rps": served / wall, "busy_seconds": busy,
                             "service_time": busy / reqs if reqs else float("nan"),
                             "utilisation": busy / wall / (replicas * workers), "workers": workers}
        if not check:
            return out
        # the queue model against the real service: 1 replica, Poisson arrivals at 75% of its capacity
        status, _ = demo.admin("POST", "/admin/replicas", {"replicas": 1, "region": HOME})
        s, workers = out[1]["service_time"], out[1]["workers"]
        rate = 0.75 * workers / s
        lat = _open_loop(demo.url(HOME, "/api/me"), rate, max(seconds * 3, 10.0), 7)
        out["check"] = {"rate": rate, "requests": len(lat),
                        "measured_p95": lat[int(0.95 * (len(lat) - 1))] if lat else None,
                        "model_p95": _mix_p95([(rate, s, erlang_c(workers, rate * s), workers / s - rate)])}
        return out
    finally:
        demo.stop()


# ------------------------------------------------------------------ 2. the simulated day
def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load a (< c)."""
    if a <= 0:
        return 0.0
    term, s = 1.0, 1.0
    for k in range(1, c):
        term *= a / k
        s += term
    term *= a / c
    top = term * c / (c - a)
    return top / (s + top)


def day_curve(mean_rps: float, level: float, seed: int, day: int) -> list[float]:
    """Arrivals per second for each minute of one day (the demo model's curve and wobble)."""
    out = []
    for m in range(1440):
        t = day * 86400 + m * 60
        out.append(mean_rps * level * model.diurnal_factor(m / 60.0) * model.wobble(seed, "bench", t, 0.05))
    return out


# -- the policies' decisions, shared with bench/scaling_demo_day.py (the same day on the real demo)
def history_profile(history: list[list[float]]) -> list[float]:
    """The forecast's daily profile: the median of the history days, minute by minute."""
    return [sorted(h[m] for h in history)[len(history) // 2] for m in range(1440)]


def fixed_replicas(profile: list[float], s: float, lim: scaling.Limits) -> int:
    """Fixed capacity: the replicas the history's peak needs at the band's top."""
    return scaling.replicas_for(max(profile) * s, lim.capacity, lim.high, lim.min_replicas, lim.max_replicas)


def start_replicas(rate: float, s: float, lim: scaling.Limits) -> int:
    """Replicas the scaling policies start the day with (the first minute's load + 20%)."""
    return scaling.replicas_for(rate * s * 1.2, lim.capacity, lim.high, lim.min_replicas, lim.max_replicas)


def traffic_falling(observed: list[float]) -> bool:
    """ScalingTrafficFalling's traffic test: the last 5 minutes (``observed``: arrivals/s per minute up
    to now) below the 5 minutes that ended 10 minutes earlier."""
    n = len(observed)
    return n >= 16 and sum(observed[n - 5:n]) < sum(observed[n - 16:n - 11])


def reactive_decision(total: int, util5: float, falling: bool, since: float, now: float, over_since: float | None,
                      lim: scaling.Limits, alert_for: float) -> tuple[int, float | None]:
    """One reactive evaluation: out only once the 5-minute utilisation has been over the band's top
    for ``alert_for`` (ScalingCpuHigh), in under 40% while traffic falls. Returns (replicas, over_since)."""
    over_since = (over_since if over_since is not None else now) if util5 > lim.high else None
    held = over_since is not None and now - over_since >= alert_for
    new = total if util5 > lim.high and not held else scaling.reactive(total, util5, falling, since, lim)
    return new, over_since


def predictive_decision(total: int, profile: list[float], observed: list[float], s: float, since: float,
                        lim: scaling.Limits, util5: float | None) -> int:
    """One predictive evaluation at minute len(observed) - 1: the forecast is the history's median
    profile re-levelled by the last hour of ``observed`` arrivals against it (after 30 minutes);
    the next ``lim.lead`` of it in busy cores -> scaling.predictive (``util5`` None: no reactive backstop)."""
    m = len(observed) - 1
    lo = max(0, m - 60)
    level = (sum(observed[lo:m + 1]) / max(1e-9, sum(profile[lo:m + 1]))) if m >= 30 else 1.0
    look = [profile[(m + k) % 1440] * level * s for k in range(int(lim.lead // 60) + 1)]
    return scaling.predictive(total, look, since, lim, util=util5)


def simulate(policy: str, arrivals: list[float], history: list[list[float]], s: float, workers: int,
             lim: scaling.Limits, startup: float, alert_for: float) -> dict:
    profile = history_profile(history)
    lim = dataclasses.replace(lim, capacity=workers)
    fixed = fixed_replicas(profile, s, lim)
    start_n = fixed if policy == "fixed" else start_replicas(arrivals[0], s, lim)
    ready = start_n          # replicas serving
    pending: list[tuple[float, int]] = []  # (ready at minute, count)
    last_change = -1e9
    over_since = None
    backlog = 0.0
    util_hist: list[float] = []
    replica_minutes = 0.0
    minutes_over = 0
    peak_lat: list[tuple[float, float, float, float]] = []  # (weight, s, C, rate) per peak minute
    utils = []
    worst = 0.0
    mu = 1.0 / s
    for m in range(1440):
        now = m * 60.0
        # replicas that finished starting
        for at, k in [p for p in pending if p[0] <= m]:
            ready += k
        pending = [p for p in pending if p[0] > m]
        lam = arrivals[m]
        c = ready * workers
        offered = lam * s + backlog / 60.0 * s
        u = min(1.0, offered / c) if c else 1.0
        utils.append(u)
        util_hist.append(u)
        w5 = sum(util_hist[-5:]) / len(util_hist[-5:])
        if u > lim.high:
            minutes_over += 1
        # queue: stable -> Erlang C; over capacity -> backlog grows
        cap_rps = c * mu
        backlog = max(0.0, backlog + (lam - cap_rps) * 60.0)
        if lam < cap_rps and backlog <= 0:
            part = (lam, s, erlang_c(c, lam * s), cap_rps - lam)
        else:  # overloaded: everyone waits for the backlog ahead of them
            part = (lam, s + backlog / cap_rps, 1.0, 1e9)
        worst = max(worst, _mix_p95([part]))
        if model.PEAK_START_HOUR <= m / 60.0 < model.PEAK_END_HOUR:
            peak_lat.append(part)
        replica_minutes += ready + sum(k for _, k in pending)  # starting replicas are paid for too
        # decisions every minute (reactive: alert evaluation) / every 5 minutes (predictive)
        since = now - last_change
        total = ready + sum(k for _, k in pending)
        new = total
        if policy == "reactive":
            # out only once the alert fired (over 80% for alert_for); in when under 40% and falling
            new, over_since = reactive_decision(total, w5, traffic_falling(arrivals[:m + 1]), since, now,
                                                over_since, lim, alert_for)
        elif policy == "predictive" and m % 5 == 0:
            new = predictive_decision(total, profile, arrivals[:m + 1], s, since, lim, w5)
        if new > total:
            pending.append((m + startup / 60.0, new - total))
            last_change = now
        elif new < total:
            drop = total - new
            # cancel starting ones first, then stop ready ones
            while drop and pending:
                at, k = pending.pop()
                take = min(k, drop)
                drop -= take
                if k - take:
                    pending.append((at, k - take))
            ready -= drop
            last_change = now
    return {"policy": policy, "peak_p95_seconds": _mix_p95(peak_lat), "worst_minute_p95_seconds": worst,
            "minutes_above_80": minutes_over, "replica_hours": replica_minutes / 60.0,
            "mean_utilisation": sum(utils) / len(utils), "fixed_replicas": fixed if policy == "fixed" else None}


def _mix_p95(parts: list[tuple[float, float, float, float]]) -> float:
    """95th percentile of the response time over the peak's requests (weights = arrival rates):
    each minute's response time is s + W with P(W > t) = C exp(-(c mu - lambda) t)."""
    total = sum(w for w, *_ in parts)

    def tail(x):
        acc = 0.0
        for w, s, cprob, r in parts:
            if x < s:
                acc += w
            else:
                acc += w * cprob * math.exp(-r * (x - s))
        return acc / total

    lo, hi = 0.0, 1.0
    while tail(hi) > 0.05:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if tail(mid) > 0.05:
            lo = mid
        else:
            hi = mid
    return hi


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mean-rps", type=float, default=60.0, help="daily mean arrivals/s of the simulated region")
    ap.add_argument("--surprise", type=float, nargs="+", default=[1.0, 1.10],
                    help="the simulated day's level against the history (one table row block each)")
    ap.add_argument("--startup", type=float, default=180.0, help="seconds a new replica takes to serve")
    ap.add_argument("--cooldown", type=float, default=600.0)
    ap.add_argument("--alert-for", type=float, default=300.0, help="ScalingCpuHigh `for:` (reactive)")
    ap.add_argument("--lead", type=float, default=1800.0, help="predictive look-ahead")
    ap.add_argument("--min-replicas", type=int, default=2, help="floor of every policy (demo.replicas.min)")
    ap.add_argument("--measure-seconds", type=float, default=4.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="scaling-bench-") as tmp:
        meas = measure(Path(tmp), args.measure_seconds, args.clients)
    one, two, chk = meas[1], meas[2], meas["check"]
    s, workers = one["service_time"], one["workers"]
    print(f"measured on the demo service ({HOME}, {workers} workers/replica): service time {s * 1000:.1f} ms, "
          f"1 replica {one['rps']:.1f} req/s (utilisation {one['utilisation']:.2f}), "
          f"2 replicas {two['rps']:.1f} req/s (x{two['rps'] / one['rps']:.2f})")
    print(f"queue model check, 1 replica at 75% ({chk['rate']:.1f} req/s Poisson, {chk['requests']} requests): "
          f"p95 measured {chk['measured_p95'] * 1000:.0f} ms, M/M/c model {chk['model_p95'] * 1000:.0f} ms")

    rng = random.Random(args.seed)
    history = [day_curve(args.mean_rps, rng.gauss(1.0, 0.03), args.seed, d) for d in range(7)]
    lim = scaling.Limits(capacity=workers, min_replicas=args.min_replicas, max_replicas=64, cooldown=args.cooldown,
                         lead=args.lead)
    rows = []
    lines = ["| day | policy | peak (14-16 h) p95 latency | worst minute's p95 | minutes > 80% CPU | "
             "replica-hours (cost) | vs fixed | mean utilisation |", "|---|---|---|---|---|---|---|---|"]
    for surprise in args.surprise:
        today = day_curve(args.mean_rps, surprise, args.seed, 7)
        day = [simulate(p, today, history, s, workers, lim, args.startup, args.alert_for) | {"surprise": surprise}
               for p in ("predictive", "reactive", "fixed")]
        base = next(r for r in day if r["policy"] == "fixed")
        for r in day:
            name = r["policy"] + (f" ({r['fixed_replicas']} replicas)" if r["fixed_replicas"] else "")
            lines.append(f"| {'as forecast' if surprise == 1.0 else f'{surprise - 1:+.0%} vs history'} | {name} | "
                         f"{r['peak_p95_seconds'] * 1000:.0f} ms | {r['worst_minute_p95_seconds'] * 1000:.0f} ms | "
                         f"{r['minutes_above_80']} | "
                         f"{r['replica_hours']:.1f} | {r['replica_hours'] / base['replica_hours']:.2f}x | "
                         f"{r['mean_utilisation']:.2f} |")
        rows += day
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "measured": {str(k): v for k, v in meas.items()},
                                               "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
