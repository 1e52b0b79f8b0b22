"""`opsstack demo db-workload` (also `opsstack db workload`): seed the demo schema, run the workload.

Runs until SIGTERM/SIGINT; the launcher supervises it as `demo-db-workload`. `run_tool(args, cfg)`
is the entry point: it builds the config views (database, demo) once and hands them down.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import psycopg
from psycopg import conninfo

from core.config import parse_duration, view
from core.pg import PostgresUnavailable, ensure_database
from demo.db import faults
from demo.db.faults import KINDS
from demo.db.seed import apply_schema, seed
from demo.db.workload import Workload

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


def database_url(args, database) -> str | None:
    """--database-url, else database.url (``database``: the view of that section), else
    $OPSSTACK_DATABASE_URL; the database is created when missing."""
    url = getattr(args, "database_url", None) or database.url or os.environ.get("OPSSTACK_DATABASE_URL")
    if not url:
        return None
    name = conninfo.conninfo_to_dict(url).get("dbname") or database.name
    return ensure_database(url, name)


def run(args, database, demo) -> int:
    """The workload (``database``, ``demo``: the views of those sections)."""
    try:
        url = database_url(args, database)
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
                 skip_partitions=args.skip_partitions, seed=demo.seed)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: w.stop.set())
    log.info("event=demo_db_workload_started rate=%s threads=%s", args.rate, args.threads)
    w.run()
    log.info("event=demo_db_workload_stopped counts=%s errors=%d", w.counts, w.errors)
    return 0


# --- `opsstack db workload|seed|fault|heal|faults` (wired by stack/commands/db.py) ----------


def add_tool_arguments(sub) -> None:
    """The demo database's subcommands of `opsstack db`."""
    w = sub.add_parser("workload", help="seed the demo schema and run the demo workload (supervised)")
    add_arguments(w)
    s = sub.add_parser("seed", help="create and seed the demo schema, then exit")
    s.add_argument("--database-url")
    s.add_argument("--scale", type=float, default=2.0)
    s.add_argument("--reseed", action="store_true")
    f = sub.add_parser("fault", help="inject a demo database fault (the workload applies it)")
    f.add_argument("kind", choices=sorted(KINDS))
    f.add_argument("--rate", type=float, help="slow-queries: share 0..1; deadlocks: per minute")
    f.add_argument("--duration", help="heal by itself after this long (e.g. 10m)")
    f.add_argument("--database-url")
    h = sub.add_parser("heal", help="remove demo database faults")
    h.add_argument("--kind", choices=sorted(KINDS))
    h.add_argument("--database-url")
    fl = sub.add_parser("faults", help="list the demo database fault kinds and the active ones")
    fl.add_argument("--database-url")


TOOL_ACTIONS = ("workload", "seed", "fault", "heal", "faults")


def run_tool(args, cfg) -> int:
    database, demo = view(cfg, "database"), view(cfg, "demo")
    if args.action == "workload":
        return run(args, database, demo)
    if args.action == "seed":
        args.seed_only = True
        return run(args, database, demo) if database_url(args, database) else 2
    return _faults(args, database)


def _faults(args, database) -> int:
    url = database_url(args, database)
    if not url:
        print("opsstack db: no database: set database.url or pass --database-url", file=sys.stderr)
        return 2
    with psycopg.connect(url, autocommit=True) as conn:
        apply_schema(conn, partitions=False)  # a partition-missing fault stays missing
        if args.action == "fault":
            duration = parse_duration(args.duration) if args.duration else None
            faults.inject(conn, args.kind, args.rate, duration)
            print(f"fault {args.kind} injected; the demo workload applies it within seconds")
        elif args.action == "heal":
            n = faults.heal(conn, args.kind)
            print(f"healed {n} fault(s)")
        else:
            act = faults.active(conn)
            for k, (what, default) in faults.KINDS.items():
                state = f"ACTIVE rate={act[k]:g}" if k in act else "-"
                print(f"{k:<18} {state:<18} {what} (default rate {default:g})")
    return 0
