"""`opsstack demo db-workload` (also `opsstack db workload`): seed the demo schema, run the workload.

Runs until SIGTERM/SIGINT; the launcher supervises it as `demo-db-workload`.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

log = logging.getLogger("opsstack.demo.db")


def add_arguments(p) -> None:
    p.add_argument("--database-url", help="default: database.url of the config ($OPSSTACK_DATABASE_URL)")
    p.add_argument("--scale", type=float, default=2.0, help="seed volume (1.0 = 100k participants); default 2")
    p.add_argument("--rate", type=float, default=20.0, help="statements per second (default 20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slow-ratio", type=float, default=0.0, help="share of extra > 2 s reports (fault)")
    p.add_argument("--skip-partitions", action="store_true", help="do not create upcoming partitions (fault)")
    p.add_argument("--seed-only", action="store_true", help="create and seed the schema, then exit")
    p.add_argument("--reseed", action="store_true", help="truncate and seed again")


def database_url(args, cfg) -> str | None:
    url = getattr(args, "database_url", None) or cfg["database"]["url"] or os.environ.get("OPSSTACK_DATABASE_URL")
    if not url:
        return None
    from psycopg import conninfo

    from stack.pgcluster import ensure_database

    name = conninfo.conninfo_to_dict(url).get("dbname") or cfg["database"]["name"]
    return ensure_database(url, name)


def run(args, cfg) -> int:
    from demo.db.seed import seed
    from demo.db.workload import Workload
    from stack.pgcluster import PostgresUnavailable

    try:
        url = database_url(args, cfg)
    except PostgresUnavailable as exc:
        print(f"opsstack: {exc}", file=sys.stderr)
        return 1
    if not url:
        print("opsstack: no database: set database.url, OPSSTACK_DATABASE_URL or --database-url", file=sys.stderr)
        return 2
    seed(url, scale=args.scale, force=args.reseed)
    if args.seed_only:
        return 0
    w = Workload(url, rate=args.rate, threads=args.threads, slow_ratio=args.slow_ratio,
                 skip_partitions=args.skip_partitions, seed=cfg["demo"]["seed"])
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: w.stop.set())
    log.info("event=demo_db_workload_started rate=%s threads=%s", args.rate, args.threads)
    w.run()
    log.info("event=demo_db_workload_stopped counts=%s errors=%d", w.counts, w.errors)
    return 0
