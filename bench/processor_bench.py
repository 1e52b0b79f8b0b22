"""The receiver's payload processor alone: how fast queued notifications are applied.

    .venv/bin/python bench/processor_bench.py [--payloads 2000] [--groups 300] [--alerts 10] [--threads 4]

No HTTP and no stack: a fresh database (receiver_bench.database(): 127.0.0.1:5432 or an embedded
cluster, dropped afterwards), the receiver app of tests/support/receiver.config (its hooks and
automation subscribed), --payloads notifications of storm_bench.GroupPool (groups of --alerts
alerts that fire, get alerts resolved and re-firing, and resolve) stored in ticket_payloads as the
webhook stores them, then drained. Two runs in the same process, each on payloads of its own:

- peer: one thread applying one payload per transaction (tickets.process_next);
- processor: --threads threads running scheduler.process_pending (tickets.process_batch: a batch
  of up to 250 payloads per transaction, the ingest locks taken once per batch, applied in waves
  of one payload per group with set-based statements), like the receiver's Processor (whose
  default is one thread: receiver.processing_threads).

Reported: notifications/s and alerts/s of each, their ratio, and how many processor errors
(e.g. "deadlock detected") were logged. Results also go to bench/results/processor_bench.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import receiver_bench as rb  # noqa: E402  (database())
from storm_bench import GroupPool  # noqa: E402


class Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.n = 0
        self.deadlocks = 0

    def emit(self, record):
        self.n += 1
        if "deadlock" in record.getMessage():
            self.deadlocks += 1


def enqueue(st, pool: GroupPool, n: int) -> int:
    from webhook_receiver import payload, tickets

    items, alerts = [], 0
    for _ in range(n):
        body = pool.next().decode()
        note = payload.parse_obj(json.loads(body))
        alerts += len(note.alerts)
        items.append((note, body))
    with st.db.connection() as conn:
        for i in range(0, len(items), 500):
            with conn.transaction():
                tickets.enqueue_payloads(conn, items[i:i + 500])
    return alerts


def pending(st) -> int:
    with st.db.connection() as conn:
        return conn.execute("select count(*) n from ticket_payloads where processed_at is null").fetchone()["n"]


def drain(st, threads: int, one_by_one: bool) -> float:
    from webhook_receiver import scheduler, tickets

    def work():
        if one_by_one:
            with st.db.connection() as conn:
                while tickets.process_next(st.ctx, conn) is not None:
                    pass
        else:
            while scheduler.process_pending(st):
                pass

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    while pending(st):  # a payload skipped by a busy batch: drained by one more pass
        work()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payloads", type=int, default=2000, help="notifications drained by the processor run")
    ap.add_argument("--peer-payloads", type=int, default=500, help="notifications drained by the peer run")
    ap.add_argument("--groups", type=int, default=300)
    ap.add_argument("--alerts", type=int, default=10)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "processor_bench.json"))
    args = ap.parse_args(argv)

    from tests.support import receiver as T
    from webhook_receiver.app import create_app
    from webhook_receiver.state import state

    errors = Errors()
    logging.getLogger("webhook_receiver").addHandler(errors)
    url, drop = rb.database()
    try:
        app = create_app(T.config(url, receiver={"pool_size": args.threads + 4}))
        st = state(app)
        st.db.ensure_migrated()
        out = {"args": vars(args)}
        for name, n, threads, one in (("peer", args.peer_payloads, 1, True),
                                      ("processor", args.payloads, args.threads, False)):
            alerts = enqueue(st, GroupPool(args.groups, args.alerts), n)
            before = errors.n, errors.deadlocks
            secs = drain(st, threads, one)
            out[name] = {"payloads": n, "alerts": alerts, "threads": threads, "seconds": round(secs, 2),
                         "notifications_per_s": round(n / secs, 1), "alerts_per_s": round(alerts / secs, 1),
                         "warnings": errors.n - before[0], "deadlocks": errors.deadlocks - before[1]}
            print(name, json.dumps(out[name]), flush=True)
        out["ratio"] = round(out["processor"]["notifications_per_s"] / out["peer"]["notifications_per_s"], 2)
        print("processor / peer:", out["ratio"])
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    finally:
        drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
