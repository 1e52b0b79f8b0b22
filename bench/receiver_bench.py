"""Webhook receiver throughput and latency, beside a no-op endpoint on the same server stack.

    .venv/bin/python bench/receiver_bench.py [--duration 5] [--concurrency 8] [--rate 200]
                                             [--workers 2] [--threads 8] [--alerts 10] [--intake-only]

One gunicorn (gthread) serving create_app(cfg) plus a no-op route ``POST /bench/noop`` that
reads the body and answers 200 (the ceiling of this server stack: same process, same
workers, same HTTP client). Each notification is an Alertmanager v4 payload of --alerts new
alerts (so every request opens --alerts tickets: raw payload, group, tickets, episodes,
events, in one transaction). Phases, each --duration seconds, on 127.0.0.1 only:

1. sustained throughput: --concurrency closed-loop clients, keep-alive connections;
2. latency at a fixed rate (--rate notifications/s, open loop: latency counts from the
   scheduled send time, so a slow server cannot hide queueing), p50/p99.

The database is a fresh one on OPSSTACK_DATABASE_URL's server, else 127.0.0.1:5432, else an
embedded cluster; it is dropped afterwards. Results also go to bench/results/receiver_bench.json.
Goal (issue 5): >= half the no-op throughput, p99 < 50 ms at 200 notifications/s.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
TOKEN = "bench-token"


# ------------------------------------------------------------------ server (own process)
def serve(config_file: str, port: int, workers: int, threads: int, process: bool = True) -> None:
    """`opsstack receiver serve` itself (gunicorn, background process), plus the no-op route."""
    from core.config import load
    from webhook_receiver import cli

    cfg = load(config_file)

    def add_noop(app):
        from flask import request

        @app.post("/bench/noop")
        def noop():
            request.get_data()
            return "", 200

    # --intake-only: nothing turns payloads into tickets (processor and scheduler off)
    cli.serve(cfg, f"{HOST}:{port}", workers, scheduler=process, configure_app=add_noop, processor=process)


# ------------------------------------------------------------------ client
class Bodies:
    """A new group of N new alerts per call (thread-safe)."""

    def __init__(self, n: int):
        from tests.support import receiver as T

        self.T, self.n = T, n
        self.lock = threading.Lock()
        self.i = 0
        self.run = uuid.uuid4().hex[:8]
        self.starts = datetime.now(timezone.utc)

    def next(self) -> bytes:
        with self.lock:
            self.i += 1
            i = self.i
        T = self.T
        alerts = [T.alert("BenchAlert", starts_at=self.starts, service=f"svc-{j}", instance=f"{self.run}-{i}-{j}",
                          fp=f"{self.run}{i:08x}{j:02x}") for j in range(self.n)]
        return json.dumps(T.payload(alerts, group_key=f"bench/{self.run}/{i}")).encode()


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {TOKEN}"})
    r = conn.getresponse()
    r.read()
    return r.status


def throughput(port: int, path: str, bodies: Bodies, concurrency: int, duration: float) -> dict:
    stop = time.monotonic() + duration
    ok, bad = [0] * concurrency, [0] * concurrency

    def client(k: int):
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        while time.monotonic() < stop:
            try:
                st = post(conn, path, bodies.next())
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
                bad[k] += 1
                continue
            if 200 <= st < 300:
                ok[k] += 1
            else:
                bad[k] += 1
        conn.close()
    t0 = time.monotonic()
    ts = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - t0
    return {"requests_per_second": sum(ok) / elapsed, "ok": sum(ok), "errors": sum(bad), "seconds": elapsed}


def fixed_rate(port: int, path: str, bodies: Bodies, rate: float, duration: float, senders: int = 32) -> dict:
    n = int(rate * duration)
    pre = [bodies.next() for _ in range(n)]  # no JSON encoding inside the timed loop
    q: queue.Queue = queue.Queue()
    lat: list[float] = []
    late: list[float] = []  # how late the client itself sent (its own share of the latency)
    errors = [0]
    lock = threading.Lock()
    t0 = time.monotonic() + 0.2

    def sender():
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        while True:
            item = q.get()
            if item is None:
                break
            due, body = item
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic() - due
            try:
                st = post(conn, path, body)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
                st = 0
            took = time.monotonic() - due
            with lock:
                late.append(sent)
                if 200 <= st < 300:
                    lat.append(took)
                else:
                    errors[0] += 1
        conn.close()
    ts = [threading.Thread(target=sender) for _ in range(senders)]
    for t in ts:
        t.start()
    for i, body in enumerate(pre):
        due = t0 + i / rate
        # hand the request over shortly before it is due (senders sleep until then)
        while due - time.monotonic() > 0.05:
            time.sleep(0.01)
        q.put((due, body))
    for _ in ts:
        q.put(None)
    for t in ts:
        t.join()
    lat.sort()
    late.sort()

    def pct(p, xs=lat):
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")
    return {"rate": rate, "sent": n, "ok": len(lat), "errors": errors[0], "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000 if lat else float("nan"), "mean_ms": statistics.fmean(lat) * 1000 if lat else 0,
            "client_late_p50_ms": pct(0.50, late), "client_late_p99_ms": pct(0.99, late)}


def scrape(port: int):
    """The receiver's /metrics, parsed: its sample objects (name, labels, value)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return [smp for fam in text_string_to_metric_families(text) for smp in fam.samples]


def spool_pending(port: int | None) -> float:
    """Bytes the receiver answered from its spool and has not loaded into the database yet (its
    /metrics; 0 with receiver.intake: database, or without a port)."""
    if port is None:
        return 0.0
    return next((smp.value for smp in scrape(port) if smp.name == "opsstack_receiver_spool_pending_bytes"), 0.0)


def drain(url: str, since: float = 0.0, timeout: float = 600, port: int | None = None) -> dict:
    """Wait until every notification answered was applied (none waiting in the database, nor in
    the receiver's spool when ``port`` is given); seconds = since + the wait."""
    import psycopg

    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as c:
        left = 0
        while time.monotonic() - t0 < timeout:
            left = c.execute("select count(*) from ticket_payloads where processed_at is null").fetchone()[0]
            if left == 0 and spool_pending(port) == 0:
                break
            time.sleep(0.05)
    return {"seconds": since + time.monotonic() - t0, "waited": time.monotonic() - t0, "left": left}


# ------------------------------------------------------------------ database
def database():
    import psycopg

    from core.pg import with_dbname
    from stack.pgcluster import Cluster
    from core.procs import free_port

    admin = os.environ.get("OPSSTACK_DATABASE_URL")
    cluster = None
    if not admin:
        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        try:
            psycopg.connect(admin, connect_timeout=2).close()
        except psycopg.OperationalError:
            cluster = Cluster(Path(tempfile.mkdtemp(prefix="receiver-bench-pg-")) / "data", port=free_port(), preload=())
            cluster.start()
            admin = cluster.url()
    name = f"receiver_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'create database "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'drop database if exists "{name}" with (force)')
        if cluster:
            cluster.stop()
    return with_dbname(admin, name), drop


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=float, default=200.0)
    from core.config import defaults

    rd = defaults()["receiver"]
    ap.add_argument("--workers", type=int, default=rd["workers"], help="default: receiver.workers")
    ap.add_argument("--threads", type=int, default=rd["threads"], help="default: receiver.threads")
    ap.add_argument("--alerts", type=int, default=10, help="alerts per notification")
    ap.add_argument("--background", choices=("process", "workers"), default=rd["background"],
                    help="where payloads are applied (receiver.background)")
    ap.add_argument("--intake-only", action="store_true",
                    help="diagnostic: no processor threads (payloads stay queued; measures the intake alone)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "receiver_bench.json"))
    args = ap.parse_args(argv)

    import yaml

    from core.procs import free_port, tail, wait_http

    url, drop = database()
    work = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    cfg_file = work / "receiver.yaml"
    cfg_file.write_text(yaml.safe_dump({"database": {"url": url}, "receiver": {
        "token": TOKEN, "pool_size": args.threads, "threads": args.threads, "workers": args.workers,
        "background": args.background}, "stack": {"run_dir": str(work / "run")}}))
    port = free_port()
    log = open(work / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, __file__, "serve", str(cfg_file), str(port), str(args.workers),
                             str(args.threads), "0" if args.intake_only else "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    results: dict = {"config": vars(args), "cpus": os.cpu_count()}
    try:
        wait_http(f"http://{HOST}:{port}/readyz", timeout=30, proc=proc)
        bodies = Bodies(args.alerts)
        for path in ("/bench/noop", "/webhook/alertmanager"):  # warm up: connections, plans, pools
            throughput(port, path, bodies, args.concurrency, 1.0)
        if not args.intake_only:
            drain(url, port=port)
        for name, path in (("noop", "/bench/noop"), ("receiver", "/webhook/alertmanager")):
            res = {"throughput": throughput(port, path, bodies, args.concurrency, args.duration)}
            if name == "receiver" and not args.intake_only:  # tickets made from the burst, and how long
                res["processing"] = drain(url, since=res["throughput"]["seconds"], port=port)
                res["processing"]["notifications"] = res["throughput"]["ok"]
                res["processing"]["per_second"] = res["throughput"]["ok"] / res["processing"]["seconds"]
            res["fixed_rate"] = fixed_rate(port, path, bodies, args.rate, args.duration)
            if name == "receiver" and not args.intake_only:
                res["fixed_rate"]["backlog_after"] = drain(url, since=args.duration, port=port)
            results[name] = res
    except Exception:
        print(tail(work / "server.log"), file=sys.stderr)
        raise
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)  # its own session: gunicorn, its workers, the background process
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        drop()

    n, r = results["noop"], results["receiver"]
    ratio = r["throughput"]["requests_per_second"] / n["throughput"]["requests_per_second"]
    results["ratio_receiver_to_noop"] = ratio
    print(f"receiver bench: {args.workers} gunicorn workers x {args.threads} threads, {args.alerts} alerts per "
          f"notification, {args.concurrency} clients, {args.duration:g}s per phase, {os.cpu_count()} CPUs (shared "
          "with the client and PostgreSQL)")
    print(f"{'endpoint':<22}{'notif/s':>10}{'errors':>8}   at {args.rate:g}/s: {'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
          f"{'errors':>8}")
    for name, res in (("no-op (ceiling)", n), ("/webhook/alertmanager", r)):
        t, f = res["throughput"], res["fixed_rate"]
        print(f"{name:<22}{t['requests_per_second']:>10.0f}{t['errors']:>8}   {'':>{len(str(args.rate)) + 6}}"
              f"{f['p50_ms']:>8.1f}{f['p99_ms']:>8.1f}{f['max_ms']:>8.1f}{f['errors']:>8}")
    p = r.get("processing") or {"notifications": 0, "waited": 0, "per_second": 0}
    if not args.intake_only:
        print(f"tickets: the {p['notifications']} notifications of the burst ({p['notifications'] * args.alerts} alerts) "
              f"were all applied {p['waited']:.1f}s after it ended: {p['per_second']:.0f} notifications/s processed "
              f"end to end; after the fixed-rate phase the queue drained in "
              f"{r['fixed_rate']['backlog_after']['waited']:.1f}s")
    goal_t = ratio >= 0.5
    goal_l = r["fixed_rate"]["p99_ms"] < 50
    print(f"receiver / ceiling throughput: {ratio:.2f} (goal >= 0.50: {'met' if goal_t else 'NOT met'}); "
          f"p99 at {args.rate:g}/s: {r['fixed_rate']['p99_ms']:.1f} ms (goal < 50 ms: {'met' if goal_l else 'NOT met'})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1")
    else:
        sys.exit(main())
