"""Alert storm on the whole native stack: intake latency, time to apply, and a 10,000-alert group.

    .venv/bin/python bench/storm_bench.py [--rate 200] [--duration 60] [--groups 300] [--alerts 10]
                                          [--closed-seconds 10] [--closed-rounds 3] [--storm 10000] [--no-storm | --only-storm]
                                          [--drain-timeout 600] [--profile] [--keep]
                                          [--noop-open-seconds 20] [--set SECTION.KEY=VALUE ...]
                                          [--intake-only]
    (or: opsstack bench storm_bench ...)

Starts the native stack (`opsstack up` in a temporary folder, tests/support/harness.py fast_config:
Prometheus, Alertmanager, exporters, demo services, embedded PostgreSQL, the receiver), so the
receiver competes with all of it for the machine. The stack's receiver program is then swapped
for the same `receiver serve` (same resolved config, gunicorn, background process, same port, so
Alertmanager still reaches it) plus a no-op route ``POST /bench/noop`` that reads the body and
answers 200: the ceiling of that server stack. Phases:

1. closed loop, --closed-rounds rounds of --closed-seconds each: 8 keep-alive clients on the no-op
   route, then on /webhook/alertmanager (goal: receiver >= 0.5 x the no-op ceiling, the median of
   the rounds' ratios);
2. open loop: its peer first, the no-op route at --rate for --noop-open-seconds (what the machine
   and the client add to the latency, in the same conditions), then /webhook/alertmanager at --rate
   notifications/s for --duration s (latency counts from the scheduled send time), each notification an Alertmanager group of --alerts alerts re-sent with its current
   state: a pool of --groups groups (group keys), each group's incident fires, has a rotating
   one in five of its alerts resolved and re-firing, then resolves whole every 10th send (about a
   quarter of the alerts sent are resolved), so incidents open, get alerts attached and resolve.
   Goals: intake p99 <= 50 ms; every notification applied within 5 s of its arrival (p99 of
   ticket_payloads.processed_at - received_at, from the database) and the queue drained within
   5 s of the last send;
3. --storm alerts of one group pushed to the stack's real Alertmanager (/api/v2/alerts): time
   until the receiver holds them all firing (one incident under receiver.incident_by: group),
   then pushed again ended (endsAt) and the time until every ticket of them is resolved.
   Goal: both together under 120 s.

Where the time goes: CPU seconds per program during phase 2 (from /proc) and the top statements
of pg_stat_statements on the stack's database. Results: a table, and bench/results/storm_bench.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import receiver_bench as rb  # noqa: E402  (the closed-loop and open-loop clients, the no-op route)

GOAL_P99_MS = 50.0
GOAL_APPLY_S = 5.0
GOAL_RATIO = 0.5
GOAL_STORM_S = 120.0
CYCLE = 10  # sends of a group per incident: 9 firing (a rotating 1 in 5 resolved), then all resolved


# ------------------------------------------------------------------ notifications
class GroupPool:
    """Alertmanager notifications of a pool of groups, each re-sent with its alerts' current
    state (thread-safe ``next()``: what rb.throughput and rb.fixed_rate call)."""

    def __init__(self, groups: int, alerts: int, seed: int = 7):
        from tests.support import receiver as T

        self.T, self.groups, self.alerts = T, groups, alerts
        self.run = hashlib.sha1(os.urandom(8)).hexdigest()[:8]
        self.order = list(range(groups))
        random.Random(seed).shuffle(self.order)
        self.sends = [0] * groups
        self.state: dict[tuple[int, int], tuple[datetime, datetime | None]] = {}  # startsAt, endsAt
        self.lock = threading.Lock()
        self.i = 0
        self.clock = None  # None: now; (wall datetime, rate): virtual send times (pre-built bodies)
        self.sent_alerts = 0
        self.sent_resolved = 0

    def timed(self, start: datetime | None = None, rate: float | None = None) -> None:
        with self.lock:
            self.clock = (start, rate, self.i) if start is not None else None

    def group_key(self, g: int) -> str:
        return '{}/{severity="critical"}:{alertname="StormBench", group="%s-%03d"}' % (self.run, g)

    def next(self) -> bytes:
        T = self.T
        with self.lock:
            i = self.i
            self.i += 1
            g = self.order[i % self.groups]
            k = self.sends[g]
            self.sends[g] += 1
            if self.clock is None:
                now = datetime.now(timezone.utc)
            else:
                start, rate, i0 = self.clock
                now = start + timedelta(seconds=(i - i0) / rate)
            c = k % CYCLE
            out = []
            for j in range(self.alerts):
                starts, ends = self.state.get((g, j), (None, None))
                resolve = c == CYCLE - 1 or (c > 0 and (j + c) % 5 == 0)
                if resolve and starts is not None:
                    ends = ends or now
                elif not resolve:
                    if starts is None or ends is not None:  # a new episode
                        starts, ends = now - timedelta(seconds=1), None
                else:
                    continue  # never fired: not in the group
                self.state[(g, j)] = (starts, ends)
                fp = hashlib.sha1(f"{self.run}/{g}/{j}".encode()).hexdigest()[:16]
                a = T.alert("StormBench", status="resolved" if ends else "firing", starts_at=starts, ends_at=ends,
                            fp=fp, service=f"storm-{g % 20:02d}", group=f"{self.run}-{g:03d}", instance=f"host-{j:02d}")
                out.append(a)
            if c == CYCLE - 1:  # the incident ended: the next send starts a new one
                for j in range(self.alerts):
                    self.state.pop((g, j), None)
            self.sent_alerts += len(out)
            self.sent_resolved += sum(a["status"] == "resolved" for a in out)
        return json.dumps(T.payload(out, group_key=self.group_key(g))).encode()


# ------------------------------------------------------------------ measuring
def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def q(url: str, sql: str, *args):
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, args or None)
        return cur.fetchall() if cur.description else []


DRAIN_TIMEOUT = [600.0]


def wait_drained(url: str, port: int | None = None) -> float:
    """Seconds until no notification waits to be applied, neither stored in the database nor in
    the receiver's spool (inf: still some after --drain-timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < DRAIN_TIMEOUT[0]:
        if q(url, "select count(*) from ticket_payloads where processed_at is null")[0][0] == 0 \
                and rb.spool_pending(port) == 0:
            return time.monotonic() - t0
        time.sleep(0.25)
    left = q(url, "select count(*) from ticket_payloads where processed_at is null")[0][0]
    print(f"(still {left} payloads unapplied after {DRAIN_TIMEOUT[0]:g}s: going on)", flush=True)
    return float("inf")


def applied(url: str, since: datetime, like: str) -> dict:
    # one not applied yet counts with its wait so far (a lower bound)
    rows = q(url, """select extract(epoch from coalesce(processed_at, clock_timestamp()) - received_at)::float8,
                            processed_at is null from ticket_payloads
                     where received_at >= %s and group_key like %s""", since, like)
    d = [r[0] for r in rows]
    [(last_rx, last_done)] = q(url, """select max(received_at), max(processed_at) from ticket_payloads
                                       where received_at >= %s and group_key like %s""", since, like)
    return {"notifications": len(d), "unapplied": sum(r[1] for r in rows), "p50_s": pct(d, 0.5), "p99_s": pct(d, 0.99), "max_s": max(d, default=float("nan")),
            "last_applied_after_last_received_s": (last_done - last_rx).total_seconds() if last_rx and last_done
            else float("nan")}


def cpu_ticks(own: set[int], stack: set[int] = frozenset()) -> dict[int, tuple[str, int]]:
    """{pid: (program, utime + stime ticks)} of every process we can read."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        name = classify(int(d), [a.decode(errors="replace") for a in argv if a], own)
        if name == "receiver" and int(d) in BACKGROUND:
            name = "receiver background (niced)" if int(fields[16]) > 0 else "receiver background"
        elif name == "receiver":
            name = "receiver web"
        elif name == "postgresql" and int(d) in stack and int(fields[16]) > 0:
            name = "postgresql niced (background's sessions)"
        if not name.startswith(("bench client", "receiver")) and int(d) not in stack:
            name = "not this stack (other sessions)"
        out[int(d)] = (name, ticks)
    return out


BACKGROUND: set[int] = set()  # the bench receiver's background process(es) and their children


def background_pids(log: Path, own: set[int]) -> set[int]:
    """The receiver's background process (its pid is logged by `receiver serve`) and its children."""
    import re

    try:
        pids = {int(m) for m in re.findall(r"event=background_process pid=(\d+)", log.read_text(errors="replace"))}
    except OSError:
        return set()
    out: set[int] = set()
    for p in pids:
        out |= own_pids(p) & own
    return out


def classify(pid: int, argv: list[str], own: set[int]) -> str:
    if pid == os.getpid():
        return "bench client"
    if pid in own:
        return "receiver"
    if not argv:
        return "other"
    a0 = os.path.basename(argv[0])
    joined = " ".join(argv)
    if a0.startswith("postgres") or "postgres:" in joined:
        return "postgresql"
    for name in ("alertmanager", "prometheus-node-exporter", "prometheus", "supervisord", "pgbouncer"):
        if name in a0:
            return name
    for sub in ("demo", "exporter", "forecast", "db", "receiver"):
        if f" {sub} " in f" {joined} " and "opsstack" in joined:
            return f"opsstack {sub}"
    return "other"


def cpu_by_program(before: dict, after: dict, own: set[int]) -> dict[str, float]:
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid, (name, ticks) in after.items():
        prev = before.get(pid, (name, 0))[1]
        out[name] = out.get(name, 0.0) + max(0, ticks - prev) / hz
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def own_pids(root: int) -> set[int]:
    """root and its descendants (the bench's receiver: gunicorn, workers, background process,
    the graph renderer it spawned)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        out.add(p)
        todo.extend(kids.get(p, []))
    return out


def handler_buckets(port: int, route: str = "/webhook/alertmanager") -> dict[str, dict[float, float]]:
    """The receiver's own histograms (cumulative counts by upper bound, from its /metrics):
    "handler", the request duration of ``route`` (inside the handler, without the client or the
    socket), and "store", the time its payloads waited to be stored (turn + commit)."""
    out: dict[str, dict[float, float]] = {"handler": {}, "store": {}}
    for smp in rb.scrape(port):
        if smp.name == "opsstack_receiver_request_duration_seconds_bucket" and smp.labels.get("route") == route:
            out["handler"][float(smp.labels["le"])] = smp.value
        elif smp.name == "opsstack_receiver_intake_store_seconds_bucket":
            out["store"][float(smp.labels["le"])] = smp.value
    return out


def handler_share(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Per histogram, the share of the observations between two scrapes within each bound."""
    res = {}
    for name, a in after.items():
        b = before.get(name, {})
        total = a.get(float("inf"), 0) - b.get(float("inf"), 0)
        res[name] = {f"le_{le * 1000:g}ms": round((a[le] - b.get(le, 0)) / total, 4)
                     for le in sorted(a) if total and le != float("inf")}
    return res


def top_statements(url: str, n: int = 8) -> list[dict]:
    try:
        rows = q(url, """select calls, total_exec_time, mean_exec_time, rows, query from pg_stat_statements
                         where dbid = (select oid from pg_database where datname = current_database())
                         order by total_exec_time desc limit %s""", n)
    except Exception as exc:  # noqa: BLE001 - a database without the extension: no profile
        return [{"error": str(exc).splitlines()[0]}]
    return [{"calls": c, "total_ms": round(t, 1), "mean_ms": round(m, 3), "rows": r,
             "query": " ".join(qq.split())[:160]} for c, t, m, r, qq in rows]


# ------------------------------------------------------------------ the 10,000-alert group
def storm_alerts(n: int, run: str, starts: datetime, ends: datetime | None = None) -> list[dict]:
    out = []
    for i in range(n):
        a = {"labels": {"alertname": "StormBench10k", "severity": "critical", "tier": "1", "service": "user-app",
                        "team": "ops", "run": run, "instance": f"host-{i:05d}"},
             "annotations": {"summary": "A host of the user app is down.",
                             "description": f"host-{i:05d} of user-app does not answer its health check."},
             "startsAt": starts.isoformat().replace("+00:00", "Z"),
             "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up"}
        if ends is not None:
            a["endsAt"] = ends.isoformat().replace("+00:00", "Z")
        out.append(a)
    return out


def big_group(am_url: str, db_url: str, n: int, timeout: float) -> dict:
    import requests

    run = os.urandom(4).hex()
    starts = datetime.now(timezone.utc) - timedelta(seconds=30)

    def firing():
        return q(db_url, """select count(*), count(distinct ticket_id) from ticket_alerts
                            where labels->>'alertname' = 'StormBench10k' and labels->>'run' = %s
                              and status = 'firing'""", run)[0]

    def unresolved():
        return q(db_url, """select (select count(*) from ticket_alerts where labels->>'alertname' = 'StormBench10k'
                                      and labels->>'run' = %s and status <> 'resolved'),
                                   (select count(*) from tickets t where t.status <> 'resolved' and t.id in (
                                      select ticket_id from ticket_alerts where labels->>'alertname' = 'StormBench10k'
                                        and labels->>'run' = %s))""", run, run)[0]

    t0 = time.monotonic()
    r = requests.post(am_url + "/api/v2/alerts", json=storm_alerts(n, run, starts), timeout=300)
    r.raise_for_status()
    pushed = time.monotonic() - t0
    deadline = t0 + timeout
    got = (0, 0)
    while time.monotonic() < deadline:
        got = firing()
        if got[0] >= n:
            break
        time.sleep(0.25)
    t_open = time.monotonic() - t0
    [(incidents,)] = q(db_url, """select count(distinct ticket_id) from ticket_alerts
                                  where labels->>'alertname' = 'StormBench10k' and labels->>'run' = %s""", run)
    if got[0] < n:  # never all firing: resolving them would measure nothing
        return {"alerts": n, "push_seconds": round(pushed, 2), "firing_applied": got[0], "incidents": incidents,
                "open_seconds": round(t_open, 2), "resolve_seconds": float("nan"), "total_seconds": float("inf"),
                "complete": False}
    t1 = time.monotonic()
    r = requests.post(am_url + "/api/v2/alerts",
                      json=storm_alerts(n, run, starts, ends=datetime.now(timezone.utc) - timedelta(seconds=1)),
                      timeout=300)
    r.raise_for_status()
    left = (n, n)
    while time.monotonic() < t1 + timeout:
        left = unresolved()
        if left == (0, 0):
            break
        time.sleep(0.25)
    t_res = time.monotonic() - t1
    return {"alerts": n, "push_seconds": round(pushed, 2), "firing_applied": got[0], "incidents": incidents,
            "open_seconds": round(t_open, 2), "resolve_seconds": round(t_res, 2),
            "unresolved_alerts_left": left[0], "unresolved_tickets_left": left[1],
            "total_seconds": round(t_open + t_res, 2),
            "complete": got[0] >= n and left == (0, 0)}


# ------------------------------------------------------------------ sampling profiler
class Sampler:
    """Where the receiver's background process (payload processor, scheduler, job pools) spends
    its wall time: every ``interval`` s, the stack of every thread (sys._current_frames), counted
    per thread kind as inclusive and leaf functions. A poor man's py-spy (not installed here)."""

    def __init__(self, path: str, interval: float = 0.01):
        self.path, self.interval = path, interval
        self.stop = threading.Event()
        self.incl: dict = {}
        self.leaf: dict = {}
        self.samples: dict = {}

    def run(self) -> None:
        import re
        import sys as _sys

        me = threading.get_ident()
        while not self.stop.wait(self.interval):
            names = {t.ident: re.sub(r"[-_]?\d+(?:_\d+)?$", "", t.name) for t in threading.enumerate()}
            for ident, frame in _sys._current_frames().items():
                if ident == me:
                    continue
                kind = names.get(ident, "?")
                self.samples[kind] = self.samples.get(kind, 0) + 1
                seen = set()
                f, first = frame, True
                while f is not None:
                    co = f.f_code
                    key = f"{Path(co.co_filename).name}:{co.co_name}"
                    if first:
                        d = self.leaf.setdefault(kind, {})
                        d[key] = d.get(key, 0) + 1
                        first = False
                    if key not in seen:
                        seen.add(key)
                        d = self.incl.setdefault(kind, {})
                        d[key] = d.get(key, 0) + 1
                    f = f.f_back

    def dump(self) -> None:
        out = {}
        for kind, n in sorted(self.samples.items(), key=lambda kv: -kv[1]):
            top = sorted(self.incl.get(kind, {}).items(), key=lambda kv: -kv[1])[:40]
            leaf = sorted(self.leaf.get(kind, {}).items(), key=lambda kv: -kv[1])[:15]
            out[kind] = {"samples": n, "inclusive": [[k, round(v / n, 3)] for k, v in top],
                         "leaf": [[k, round(v / n, 3)] for k, v in leaf]}
        Path(self.path).write_text(json.dumps(out, indent=1))


def serve_profiled(config_file: str, port: int, workers: int, threads: int, process: bool = True) -> None:
    """rb.serve, with the background process sampled when STORM_BENCH_PROFILE names a file."""
    from core.logs import setup_logging

    setup_logging("INFO")  # as the supervised `opsstack receiver serve` (its log names the background pid)
    path = os.environ.get("STORM_BENCH_PROFILE")
    if path:
        from webhook_receiver import app as app_module

        inner = app_module.run_background

        def run_background(cfg, stop=None, scheduler=True):
            sampler = Sampler(path)
            threading.Thread(target=sampler.run, name="bench-sampler", daemon=True).start()
            try:
                inner(cfg, stop, scheduler=scheduler)
            finally:
                sampler.stop.set()
                sampler.dump()
        app_module.run_background = run_background
    rb.serve(config_file, port, workers, threads, process)


# ------------------------------------------------------------------ the stack
def swap_receiver(stack, work: Path, rdir: Path, profile: str | None = None,
                  process: bool = True) -> tuple[subprocess.Popen, int]:
    """Stop the supervised receiver; run the same `receiver serve` (+ the no-op route) on its port."""
    from core.config import RESOLVED_NAME
    from core.procs import wait_http

    rpc = xmlrpc.client.ServerProxy(f"http://{stack.host}:{stack.resolved['runtime']['ports']['supervisor']}/RPC2")
    rpc.supervisor.stopProcess("receiver", True)
    port = stack.resolved["runtime"]["ports"]["receiver"]
    r = stack.resolved["receiver"]
    log = open(work / "bench-receiver.log", "ab")
    proc = subprocess.Popen([sys.executable, __file__, "serve", str(rdir / RESOLVED_NAME), str(port),
                             str(r["workers"]), str(r["threads"]), "1" if process else "0"],
                            stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=str(work),
                            env=dict(os.environ, **({"STORM_BENCH_PROFILE": profile} if profile else {})))
    wait_http(f"http://{stack.host}:{port}/readyz", timeout=120, proc=proc)
    return proc, port


def up(stack, timeout: float = 900) -> None:
    """StackHandle.up with a longer deadline (a loaded 2-core machine takes minutes)."""
    import yaml

    from core.config import RESOLVED_NAME, load, run_dir

    stack.cli("up", timeout=timeout)
    cfg = load(stack.config_file)
    rdir = run_dir(cfg) if Path(cfg["stack"]["run_dir"]).is_absolute() else \
        (stack.workdir / cfg["stack"]["run_dir"]).resolve()
    stack.resolved = yaml.safe_load((rdir / RESOLVED_NAME).read_text())
    stack.resolved["runtime"] = json.loads((rdir / "runtime.json").read_text())


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="notifications/s in the open-loop phase")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the open-loop phase")
    ap.add_argument("--groups", type=int, default=300, help="Alertmanager groups in the pool")
    ap.add_argument("--alerts", type=int, default=10, help="alerts per group")
    ap.add_argument("--closed-seconds", type=float, default=10.0, help="seconds of each closed-loop run")
    ap.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    ap.add_argument("--closed-rounds", type=int, default=3,
                    help="closed-loop rounds, each a no-op run then a receiver run (median ratio)")
    ap.add_argument("--noop-open-seconds", type=float, default=20.0,
                    help="seconds of the no-op route at --rate just before the open loop (its peer; 0 = skip)")
    ap.add_argument("--storm", type=int, default=10_000, help="alerts in the one big group (phase 3)")
    ap.add_argument("--no-storm", action="store_true", help="skip phase 3")
    ap.add_argument("--only-storm", action="store_true", help="only phase 3 (on an idle receiver)")
    ap.add_argument("--intake-only", action="store_true",
                    help="diagnostic: the bench's receiver applies nothing (no background process): the "
                         "intake in the whole stack without the processor's load (use a short --drain-timeout)")
    ap.add_argument("--drain-timeout", type=float, default=600.0,
                    help="seconds to wait for the receiver to apply what was sent, before going on")
    ap.add_argument("--keep", action="store_true", help="leave the stack's folder (logs) in place")
    ap.add_argument("--profile", action="store_true",
                    help="sample the receiver's background process (thread stacks every 10 ms) into the results")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config override of the stack (YAML value), e.g. receiver.background_nice=0 "
                         "(A/B runs of one setting in the same conditions); repeatable")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "storm_bench.json"))
    args = ap.parse_args(argv)
    DRAIN_TIMEOUT[0] = args.drain_timeout

    from core.config import load
    from tests.support.harness import StackHandle, fast_config

    work = Path(tempfile.mkdtemp(prefix="opsstack-bench-storm-"))
    rdir = work / ".run"
    import yaml

    overrides = {"stack__startup_timeout": "400s"}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            ap.error(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[key.replace(".", "__")] = yaml.safe_load(value)
    stack = StackHandle(fast_config(rdir, **overrides), work)
    results: dict = {"config": vars(args), "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    proc = None
    print(f"storm bench: starting the native stack in {work} ...", flush=True)
    t_up = time.monotonic()
    try:
        up(stack)
        results["stack_up_seconds"] = round(time.monotonic() - t_up, 1)
        cfg = load(stack.config_file)
        db = stack.resolved["database"]["url"]
        results["receiver"] = {k: stack.resolved["receiver"].get(k) for k in (
            "workers", "threads", "processing", "intake", "processing_threads", "background", "background_nice", "pool_size",
            "incident_by")}
        results["enrichment_max_per_minute"] = stack.resolved["enrichment"].get("max_per_minute")
        try:
            q(db, "create extension if not exists pg_stat_statements")
        except Exception as exc:  # noqa: BLE001
            print(f"(no pg_stat_statements: {str(exc).splitlines()[0]})")
        profile = str(work / "background-profile.json") if args.profile else None
        proc, port = swap_receiver(stack, work, rdir, profile, process=not args.intake_only)
        rb.TOKEN = stack.token
        own = own_pids(proc.pid)
        pool = GroupPool(args.groups, args.alerts)
        like = f'%group="{pool.run}-%'
        print(f"stack up in {results['stack_up_seconds']:.0f}s; receiver {results['receiver']}", flush=True)

        if not args.only_storm:
            # warm up: connections, plans, pools, every group's first incident
            for path in ("/bench/noop", "/webhook/alertmanager"):
                rb.throughput(port, path, pool, args.concurrency, 2.0)
            wait_drained(db, port)

            # 1. closed loop
            # in alternating rounds (no-op, receiver, no-op, ...): what the rest of the stack does
            # (a forecaster pass, a compaction, the processor's backlog) weighs on both alike; the
            # ratio is the median of the rounds' ratios
            closed = {"rounds": []}
            for _ in range(args.closed_rounds):
                rnd = {name: rb.throughput(port, path, pool, args.concurrency, args.closed_seconds)
                       for name, path in (("noop", "/bench/noop"), ("receiver", "/webhook/alertmanager"))}
                rnd["ratio"] = rnd["receiver"]["requests_per_second"] / rnd["noop"]["requests_per_second"]
                closed["rounds"].append(rnd)
            closed["receiver_drain_seconds"] = wait_drained(db, port)
            ratios = sorted(r["ratio"] for r in closed["rounds"])
            closed["ratio"] = statistics.median(ratios)
            for name in ("noop", "receiver"):
                closed[name] = {"requests_per_second": sum(r[name]["requests_per_second"] for r in closed["rounds"])
                                / len(closed["rounds"])}
            results["closed_loop"] = closed
            print(f"closed loop ({args.closed_rounds} rounds of {args.closed_seconds:g}s each): no-op "
                  f"{closed['noop']['requests_per_second']:.0f}/s, receiver "
                  f"{closed['receiver']['requests_per_second']:.0f}/s on average; median ratio "
                  f"{closed['ratio']:.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)})", flush=True)

            # 2. open loop; first its peer: the no-op route at the same rate, in the same conditions
            # (the processor still busy with the closed loop's backlog), so what the machine and the
            # client add to the latency shows beside what the intake adds
            if args.noop_open_seconds > 0:
                peer = rb.fixed_rate(port, "/bench/noop", GroupPool(args.groups, args.alerts, seed=8), args.rate,
                                     args.noop_open_seconds)
                results["open_loop_noop_peer"] = peer
                print(f"open loop no-op peer: {peer['ok']} at {args.rate:g}/s, p99 {peer['p99_ms']:.1f} ms "
                      f"(p50 {peer['p50_ms']:.1f})", flush=True)
            [(since,)] = q(db, "select now()")
            try:
                q(db, "select pg_stat_statements_reset()")
            except Exception:  # noqa: BLE001 - no extension: no statement profile
                pass
            own = own_pids(proc.pid)
            sup = (rdir / "supervisord.pid").read_text().split()[0] if (rdir / "supervisord.pid").exists() else "0"
            stack_pids = own_pids(int(sup)) if sup.isdigit() and int(sup) else set()
            BACKGROUND.update(background_pids(work / "bench-receiver.log", own))
            cpu0 = cpu_ticks(own, stack_pids)
            a0, r0 = pool.sent_alerts, pool.sent_resolved
            pool.timed(datetime.now(timezone.utc), args.rate)
            hb0 = handler_buckets(port)
            t0 = time.monotonic()
            fr = rb.fixed_rate(port, "/webhook/alertmanager", pool, args.rate, args.duration)
            sent_done = time.monotonic()
            fr["handler_share"] = handler_share(hb0, handler_buckets(port))
            fr["sending_seconds"] = sent_done - t0
            drain = wait_drained(db, port)
            own = own_pids(proc.pid) | own
            stack_pids |= own_pids(int(sup)) if sup.isdigit() and int(sup) else set()
            BACKGROUND.update(background_pids(work / "bench-receiver.log", own))
            cpu1 = cpu_ticks(own, stack_pids)
            pool.timed(None)
            ap_ = applied(db, since, like)
            ap_["drain_after_last_send_s"] = drain
            ap_["alerts_sent"] = pool.sent_alerts - a0
            ap_["resolved_share"] = (pool.sent_resolved - r0) / max(1, pool.sent_alerts - a0)
            counts = q(db, """select count(distinct a.ticket_id), count(*) from ticket_alerts a
                              where a.labels->>'group' like %s""", f"{pool.run}-%")[0]
            ap_["tickets"], ap_["episodes"] = counts
            # what happened to those tickets (opened, reopened, resolved, alert_attached...)
            ap_["ticket_events"] = dict(q(db, """select kind, count(*) from ticket_events where at >= %s and ticket_id in (
                                                     select ticket_id from ticket_alerts where labels->>'group' like %s)
                                                 group by 1 order by 2 desc""", since, f"{pool.run}-%"))
            results["open_loop"] = {"intake": fr, "applied": ap_,
                                    "cpu_seconds": {k: round(v, 1) for k, v in cpu_by_program(cpu0, cpu1, own).items()
                                                    if v >= 0.05},
                                    "top_statements": top_statements(db)}
            jobs = q(db, "select kind, case when payload ? 'skipped' then 'skipped' else status end, count(*) "
                         "from automation_jobs group by 1, 2 order by 1, 2") \
                if q(db, "select to_regclass('automation_jobs') is not null")[0][0] else []
            results["automation_jobs"] = [{"kind": k, "status": s, "n": n} for k, s, n in jobs]
            print(f"open loop: {fr['ok']} sent at {args.rate:g}/s, intake p99 {fr['p99_ms']:.1f} ms; applied p99 "
                  f"{ap_['p99_s']:.2f}s, drained {drain:.1f}s after the last send", flush=True)

        # 3. the 10,000-alert group through the real Alertmanager
        if not args.no_storm:
            results["backlog_before_big_group_seconds"] = wait_drained(db, port)  # start it on an idle receiver
            results["big_group"] = big_group(stack.url("alertmanager"), db, args.storm, timeout=600)
            print(f"big group: {results['big_group']}", flush=True)
        results["load_after"] = os.getloadavg()
    except Exception:
        if proc is not None:
            from core.procs import tail
            print(tail(work / "bench-receiver.log"), file=sys.stderr)
        raise
    finally:
        if proc is not None:
            stop(proc)
            if args.profile and (work / "background-profile.json").exists():
                results["background_profile"] = json.loads((work / "background-profile.json").read_text())
        stack.down()
        if not args.keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)

    report(results, args, cfg)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


def report(res: dict, args, cfg) -> None:
    rows = []
    c, o = res.get("closed_loop"), res.get("open_loop")
    if c:
        rows.append(("closed-loop receiver / no-op", f"{c['receiver']['requests_per_second']:.0f} / "
                     f"{c['noop']['requests_per_second']:.0f} notif/s = {c['ratio']:.2f}", f">= {GOAL_RATIO}",
                     c["ratio"] >= GOAL_RATIO))
    if o:
        fr, ap_ = o["intake"], o["applied"]
        rows += [
            (f"open loop {args.rate:g}/s x {args.duration:g}s: intake p99", f"{fr['p99_ms']:.1f} ms (p50 "
             f"{fr['p50_ms']:.1f}, max {fr['max_ms']:.0f}, errors {fr['errors']})", f"<= {GOAL_P99_MS:g} ms",
             fr["p99_ms"] <= GOAL_P99_MS and fr["errors"] == 0),
            ("  where the latency is", f"client sent late p99 {fr['client_late_p99_ms']:.1f} ms; " + "; ".join(
                f"{name} within " + ", ".join(f"{k[3:]} {v:.1%}" for k, v in share.items()
                                              if k in ("le_10ms", "le_25ms", "le_50ms", "le_100ms"))
                for name, share in fr.get("handler_share", {}).items()), "", None),
            ("applied - received p99", f"{ap_['p99_s']:.2f} s (p50 {ap_['p50_s']:.2f}, max {ap_['max_s']:.2f}, "
             f"n {ap_['notifications']})", f"<= {GOAL_APPLY_S:g} s", ap_["p99_s"] <= GOAL_APPLY_S),
            ("drain after the last send", f"{ap_['drain_after_last_send_s']:.1f} s", f"<= {GOAL_APPLY_S:g} s",
             ap_["drain_after_last_send_s"] <= GOAL_APPLY_S),
        ]
    if res.get("open_loop_noop_peer"):
        p = res["open_loop_noop_peer"]
        rows.append((f"  peer: no-op route at {args.rate:g}/s", f"p99 {p['p99_ms']:.1f} ms (p50 {p['p50_ms']:.1f}, max "
                     f"{p['max_ms']:.0f}, errors {p['errors']}, {args.noop_open_seconds:g}s just before)",
                     "(what the machine adds)", None))
    if "big_group" in res:
        b = res["big_group"]
        rows.append((f"{b['alerts']}-alert group via Alertmanager", f"open {b['open_seconds']:.1f} s + resolve "
                     f"{b['resolve_seconds']:.1f} s = {b['total_seconds']:.1f} s, {b['incidents']} incident(s)",
                     f"< {GOAL_STORM_S:g} s, 1 incident",
                     b["complete"] and b["total_seconds"] < GOAL_STORM_S and b["incidents"] == 1))
    print(f"\nstorm bench: whole native stack, receiver {res['receiver']}, {res['cpus']} CPUs, load before "
          f"{res['load_before'][0]:.1f} after {res.get('load_after', [float('nan')])[0]:.1f}")
    if o:
        print(f"pool: {args.groups} groups x {args.alerts} alerts, {ap_['alerts_sent']} alerts sent in the open loop, "
              f"{ap_['resolved_share']:.0%} of them resolved; {ap_['tickets']} tickets, {ap_['episodes']} alert "
              "episodes; ticket events: " + ", ".join(f"{k} {v}" for k, v in ap_["ticket_events"].items()))
    w = max((len(r[0]) for r in rows), default=10) + 2
    print(f"{'measure':<{w}}{'got':<64}{'goal':<22}")
    for name, got, goal, ok in rows:
        print(f"{name:<{w}}{got:<64}{goal:<22}{'' if ok is None else 'met' if ok else 'NOT met'}")
    if o:
        print("CPU seconds during the open loop: " + ", ".join(f"{k} {v:.1f}" for k, v in o["cpu_seconds"].items()))
        print("top statements (pg_stat_statements, open loop):")
        for st in o["top_statements"]:
            if "error" in st:
                print(f"  ({st['error']})")
                continue
            print(f"  {st['total_ms']:>10.0f} ms {st['calls']:>8} calls {st['mean_ms']:>8.3f} ms/call  {st['query'][:100]}")
    for kind, prof in (res.get("background_profile") or {}).items():
        if prof["samples"] < 50 or not kind.startswith(("receiver-processor", "receiver-scheduler", "automation-")):
            continue
        top = [f"{k} {v:.0%}" for k, v in prof["inclusive"] if not k.startswith(("threading.py:", "thread.py:"))][:8]
        print(f"background thread {kind} ({prof['samples']} samples), share of its time in: " + ", ".join(top))
    if "automation_jobs" in res:
        print("automation jobs: " + ", ".join(f"{j['kind']} {j['status']} {j['n']}" for j in res["automation_jobs"]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve_profiled(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                       len(sys.argv) < 7 or sys.argv[6] == "1")
    else:
        sys.exit(main())
