"""How early and how right is the predicted OOM time of the demo's memory-leak fault?

The setting is the one a fresh demo stack is in: 14 days of backfilled, flat memory history
(demo/history.py's memory model: ~34 MiB of the 512 MiB limit growing 0.75 MiB a day, 256 KiB of
noise), then a memory-leak fault that takes the service from there to its limit in
``--leak-minutes`` (default 50). The leak follows the demo's own fault model at the Prometheus
scrape interval (15 s): ``demo.faults.leak_target`` (rate x elapsed), which is what
`opsstack demo serve` retains on every tick, on top of its resident memory. The demo clock's
acceleration does not apply to fault rates, so instead of waiting 50 minutes the whole series
(history + leak) is written into a real Prometheus with promtool as past data, and every
measurement is made "as of" a past time: the real forecaster (`Forecaster.run_once(now=t)`, the
default memory target and settings: 5-minute step, 14 days, the backtest candidates) and
Prometheus' own `predict_linear`/`deriv` evaluated at that time (`/api/v1/query?time=t`).

At every ``--every`` minutes of the leak it records, against the real OOM time (the leak model
reaching the limit):

- ``forecaster``: opsstack's OOM time (forecast.change_point on, the default);
- ``forecaster_no_cp``: the same forecaster with forecast.change_point.kinds [] (the forecast
  before the change-point path: the backtest's choice alone);
- ``predict_linear_15m`` / ``predict_linear_1h``: what a plain Prometheus user has: the least-
  squares line of the raw samples over the alert's ``for`` window (15m) and over 1h, extrapolated
  to the limit: (limit - predict_linear(mem[w], 0)) / deriv(mem[w]).

The error is predicted minus real OOM time in minutes (negative = early); "none" = no OOM
predicted within the memory horizon (48 h), counted as missing.

    .venv/bin/python bench/oom_eta_bench.py [--leak-minutes 50] [--every 5] [--json bench/results/oom_eta_bench.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.config import load_data, view  # noqa: E402
from demo import faults as F  # noqa: E402
from demo.history import GAUGE_STEP, MEMORY_END_BYTES, load_factor, memory_bytes  # noqa: E402
from forecasters.backfill import create_blocks, openmetrics  # noqa: E402
from forecasters.service import Forecaster  # noqa: E402
from forecasters.targets import build  # noqa: E402
from tests.support.servers import Prometheus  # noqa: E402

SERVICE = "user-app"
DAY = 86400.0
NOISE = 256 * 1024          # demo/history.py's resident-memory noise


def series(cfg: dict, leak_start: float, leak_seconds: float, history: float, scrape: float, seed: int):
    """(t, resident bytes, limit, oom_at): history at the backfill's gauge step, then the leak at
    the scrape interval until past the OOM."""
    demo = view(cfg, "demo")
    svc = next(s for s in view(cfg, "platform").services if s.name == SERVICE)
    limit = float(svc.memory_limit_bytes)
    rng = np.random.default_rng(seed)
    th = np.arange(leak_start - history, leak_start, GAUGE_STEP)
    mh = memory_bytes(th, leak_start, load_factor(demo, th), demo.peak_factor) + rng.normal(0, NOISE, len(th))
    rate = (limit - MEMORY_END_BYTES) / leak_seconds            # bytes/s: the limit in leak_seconds
    fault = F.Fault(kind="memory-leak", region=None, rate=rate, started=leak_start,
                    expires=leak_start + 2 * leak_seconds)
    limits = F.Limits.from_config(demo, svc)
    limits = dataclasses.replace(limits, memory_leak_max_bytes=int(2 * limit))  # the OOM, not the cap
    tl = np.arange(leak_start, leak_start + leak_seconds + 300, scrape)
    base = MEMORY_END_BYTES + rng.normal(0, NOISE, len(tl))
    ml = base + np.array([F.leak_target(fault, limits, x) for x in tl], float)
    oom_at = leak_start + (limit - MEMORY_END_BYTES) / rate
    return np.concatenate([th, tl]), np.concatenate([mh, ml]), limit, oom_at


def _query(url: str, q: str, at: float) -> float | None:
    r = requests.get(f"{url}/api/v1/query", params={"query": q, "time": f"{at:.3f}"}, timeout=60)
    r.raise_for_status()
    res = r.json()["data"]["result"]
    if not res:
        return None
    v = float(res[0]["value"][1])
    return v if np.isfinite(v) else None


def prom_eta(url: str, window: str, at: float) -> float | None:
    """Seconds to the limit from the least-squares line over ``window`` (None: not rising)."""
    sel = f'job="platform",service="{SERVICE}"'
    slope = _query(url, f"max(deriv(process_resident_memory_bytes{{{sel}}}[{window}]))", at)
    if slope is None or slope <= 0:
        return None
    now = _query(url, f"max(predict_linear(process_resident_memory_bytes{{{sel}}}[{window}], 0))", at)
    limit = _query(url, f"max(opsstack_service_memory_limit_bytes{{{sel}}})", at)
    return max(0.0, (limit - now) / slope)


def forecaster_eta(fc: Forecaster, at: float | None) -> tuple[float | None, str, float]:
    """(seconds from ``at`` to the predicted OOM or None, model, CPU seconds); at None = now."""
    t0 = time.process_time()
    now = time.time() if at is None else at
    res = fc.run_once(now=now)[f"memory-{SERVICE}"]
    cpu = time.process_time() - t0
    if isinstance(res, Exception):
        raise res
    cross = res.crossings[1.0].at
    return (None if cross is None or cross - now > 48 * 3600 else max(0.0, cross - now)), res.model, cpu


def _forecasters(base: dict, url: str) -> list[Forecaster]:
    out = []
    for cp in (True, False):
        c = load_data({**base, "forecast": {"workers": 1, "store": False, "prometheus_url": url,
                                            "change_point": {"kinds": ["memory"] if cp else []}}})
        out.append(Forecaster.from_config(c, targets=[x for x in build(c) if x.name == f"memory-{SERVICE}"]))
    return out


def _measure(fcs: list[Forecaster], url: str, at: float | None) -> dict:
    """Predicted OOM (absolute unix seconds, None = none within 48 h) of every method as of ``at``
    (None: now, the live run)."""
    when = time.time() if at is None else at
    row: dict = {"at": when}
    for name, fc in (("forecaster", fcs[0]), ("forecaster_no_cp", fcs[1])):
        eta, model, cpu = forecaster_eta(fc, when)
        row[name] = None if eta is None else when + eta
        row[f"{name}_model"] = model
        row[f"{name}_cpu_s"] = round(cpu, 3)
    for w in ("15m", "1h"):
        eta = prom_eta(url, w, when)
        row[f"predict_linear_{w}"] = None if eta is None else when + eta
    return row


def live(args, work: Path, base: dict, cfg: dict) -> tuple[list[dict], float, float]:
    """The real demo service (`opsstack demo serve`, its load generator on) scraped by a real
    Prometheus that holds the backfilled flat history; the leak is the real fault, its OOM time is
    when Prometheus sees the resident memory reach the limit. Takes the leak's duration."""
    from tests.support.demo import DemoProcess  # heavy: only the live run starts a demo process

    limit = int(args.live_limit_mib * 1024 ** 2)
    svc = {"name": SERVICE, "team": "ops", "memory_limit_bytes": limit}
    base["platform"] = {"services": [svc]}
    demo = DemoProcess(work / "demo", service=SERVICE, services=[svc],
                       faults={"memory_leak_max_bytes": limit, "max_duration": "2h"}).start(timeout=120)
    prom = None
    fcs: list[Forecaster] = []
    try:
        end = time.time() - 60
        history_cfg = load_data({**base, "demo": {"enabled": True}})
        t, mem, _lim, _ = series(history_cfg, end, 1.0, args.history_days * DAY, 15.0, args.seed)
        keep = t < end
        _write_blocks(work, t[keep], mem[keep], float(limit))
        prom = Prometheus({"global": {"scrape_interval": "15s"}, "scrape_configs": [{
            "job_name": "platform", "static_configs": [{"targets": [f"127.0.0.1:{demo.ports['admin']}"],
                                                        "labels": {"service": SERVICE, "team": "ops"}}]}]},
                          workdir=work / "prom", extra_args=["--storage.tsdb.retention.time=30d"])
        prom.start(timeout=300)
        sel = f'job="platform",service="{SERVICE}"'
        deadline = time.monotonic() + args.settle * 60 + 120
        while time.monotonic() < deadline and _query(prom.url, f"max(process_resident_memory_bytes{{{sel}}})",
                                                     time.time()) is None:
            time.sleep(2)
        time.sleep(args.settle * 60)
        fcs = _forecasters(base, prom.url)
        rss = _query(prom.url, f"max(process_resident_memory_bytes{{{sel}}})", time.time())
        rate = (limit - rss) / (args.leak_minutes * 60)
        code, body = demo.admin("POST", "/admin/faults", {"kind": "memory-leak", "rate": rate,
                                                           "duration": args.leak_minutes * 60 + 900})
        assert code == 201, body
        started = float(body["fault"]["started"])
        print(f"live: resident {rss / 2**20:.1f} MiB of {limit / 2**20:.0f} MiB, leak {rate / 1024:.1f} KiB/s "
              f"(the limit in {args.leak_minutes:g} min)", flush=True)
        rows = []
        k = args.every
        oom = None
        while oom is None:
            now = time.time()
            if k <= args.leak_minutes + 1e-9 and now >= started + k * 60:
                row = _measure(fcs, prom.url, None)
                row["minutes_into_leak"] = round((row["at"] - started) / 60, 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
                k += args.every
            v = _query(prom.url, f"max(process_resident_memory_bytes{{{sel}}}) >= {limit}", now)
            if v is not None:
                res = requests.get(f"{prom.url}/api/v1/query_range", timeout=60, params={
                    "query": f"max(process_resident_memory_bytes{{{sel}}})", "start": started, "end": now + 1,
                    "step": 1}).json()["data"]["result"][0]["values"]
                oom = next(float(ts) for ts, val in res if float(val) >= limit)
            elif now > started + 3 * args.leak_minutes * 60:
                raise RuntimeError("the process never reached its limit")
            time.sleep(5)
        return rows, started, oom
    finally:
        for fc in fcs:
            fc.close()
        if prom is not None:
            prom.stop()
        demo.stop()


def _write_blocks(work: Path, t: np.ndarray, mem: np.ndarray, limit: float) -> None:
    labels = {"job": "platform", "service": SERVICE, "team": "ops", "instance": "127.0.0.1:9999"}
    (work / "prom" / "data").mkdir(parents=True, exist_ok=True)
    chunk = 18 * 3600.0
    for lo in np.arange(t[0], t[-1] + 1, chunk):  # one block per window (promtool reads its input once)
        sel = (t >= lo) & (t < lo + chunk)
        if sel.any():
            create_blocks(openmetrics([("process_resident_memory_bytes", labels, t[sel], mem[sel]),
                                       ("opsstack_service_memory_limit_bytes", labels, t[sel],
                                        np.full(sel.sum(), limit))]),
                          work / "prom" / "data", workdir=work, max_block_duration="18h")


def false_alarms(fcs: list[Forecaster], url: str, start: float, end: float, points: int) -> dict:
    """Share of times in the flat history (no leak) at which each method predicts an OOM within
    48 h: the forecaster at ``points`` times spread over [start, end], predict_linear at every
    5 minutes (a range query)."""
    out: dict = {}
    ats = np.linspace(start, end, points)
    for name, fc in (("forecaster", fcs[0]), ("forecaster_no_cp", fcs[1])):
        hits = sum(forecaster_eta(fc, float(a))[0] is not None for a in ats)
        out[name] = {"alarms": int(hits), "of": points}
    sel = f'job="platform",service="{SERVICE}"'
    for w in ("15m", "1h"):
        q = (f"(max(opsstack_service_memory_limit_bytes{{{sel}}}) - max(predict_linear(process_resident_memory_bytes"
             f"{{{sel}}}[{w}], 0))) / max(deriv(process_resident_memory_bytes{{{sel}}}[{w}])) < 172800 "
             f"and max(deriv(process_resident_memory_bytes{{{sel}}}[{w}])) > 0")
        n_all = int((end - start) // 300) + 1
        hits = 0
        for lo in np.arange(start, end, 10000 * 300):   # Prometheus' 11000 points per query
            r = requests.get(f"{url}/api/v1/query_range", timeout=120, params={
                "query": q, "start": lo, "end": min(end, lo + 9999 * 300), "step": 300}).json()["data"]["result"]
            hits += sum(len(x["values"]) for x in r)
        out[f"predict_linear_{w}"] = {"alarms": hits, "of": n_all}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leak-minutes", type=float, default=50.0)
    ap.add_argument("--every", type=float, default=5.0, help="minutes between measurements")
    ap.add_argument("--history-days", type=float, default=14.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--false-alarm-points", type=int, default=24,
                    help="forecaster runs over the flat history counting OOM predictions (0 = skip)")
    ap.add_argument("--live", action="store_true",
                    help="the real demo service and its real leak (takes the leak's duration)")
    ap.add_argument("--live-limit-mib", type=float, default=256.0, help="the live service's memory limit")
    ap.add_argument("--settle", type=float, default=5.0, help="live: minutes of live data before the leak")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="oom-eta-"))
    leak_s = args.leak_minutes * 60
    base = {"platform": {"services": [{"name": SERVICE, "team": "ops"}]}, "demo": {"enabled": True}}
    cfg = load_data(base)
    fa = None
    try:
        if args.live:
            rows, leak_start, oom_at = live(args, work, base, cfg)
        else:
            now = time.time()
            leak_start = now - leak_s - 900      # the whole leak is in the past (backfill writes the past only)
            scrape = view(cfg, "stack").scrape_interval
            t, mem, limit, oom_at = series(cfg, leak_start, leak_s, args.history_days * DAY, scrape, args.seed)
            t0 = time.monotonic()
            _write_blocks(work, t, mem, limit)
            prom = Prometheus({"global": {"scrape_interval": "15s"}, "scrape_configs": []}, workdir=work / "prom",
                              extra_args=["--storage.tsdb.retention.time=30d"])
            fcs = []
            try:
                prom.start(timeout=300)
                print(f"backfilled {len(t)} samples ({args.history_days:g} days + a {args.leak_minutes:g}-minute "
                      f"leak) in {time.monotonic() - t0:.0f}s", flush=True)
                fcs = _forecasters(base, prom.url)
                rows = []
                k = args.every
                while k <= args.leak_minutes + 1e-9:
                    row = _measure(fcs, prom.url, leak_start + k * 60)
                    row["minutes_into_leak"] = k
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    k += args.every
                if args.false_alarm_points:
                    # the last 7 days of flat history (a full 7-day backtest window behind each point)
                    fa = false_alarms(fcs, prom.url, leak_start - 7 * DAY, leak_start - 300, args.false_alarm_points)
            finally:
                for fc in fcs:
                    fc.close()
                prom.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    methods = ("forecaster", "forecaster_no_cp", "predict_linear_15m", "predict_linear_1h")
    for r in rows:
        r["real_oom_in_minutes"] = round((oom_at - r["at"]) / 60, 2)
        for m in methods:
            r[f"{m}_error_min"] = None if r[m] is None else round((r[m] - oom_at) / 60, 2)
    print(f"\nPredicted minus real OOM time, minutes ({'live demo service' if args.live else 'demo leak model'}; "
          f"leak of {(oom_at - leak_start) / 60:.1f} min; 'none' = no OOM predicted within 48h)\n")
    print("| minutes into the leak | real OOM in | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 2) + "|")
    for r in rows:
        cells = ["none" if r[f"{m}_error_min"] is None else f"{r[f'{m}_error_min']:+.1f}" for m in methods]
        print(f"| {r['minutes_into_leak']:g} | {r['real_oom_in_minutes']:.1f} | " + " | ".join(cells) + " |")
    summary = {}
    for m in methods:
        errs = [abs(r[f"{m}_error_min"]) for r in rows if r[f"{m}_error_min"] is not None]
        summary[m] = {"predicted_at": len(errs), "of": len(rows),
                      "mean_abs_error_min": round(float(np.mean(errs)), 2) if errs else None,
                      "false_alarms_on_flat_history": (fa or {}).get(m)}
    print("\n" + json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"mode": "live" if args.live else "model", "leak_minutes": args.leak_minutes,
                                         "every": args.every, "history_days": args.history_days,
                                         "seed": args.seed, "leak_start": leak_start, "oom_at": oom_at,
                                         "rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
