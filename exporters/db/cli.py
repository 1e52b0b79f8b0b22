"""`opsstack db ...`: database tools.

    opsstack db advise [--json] [--target NAME] [--database DB] [--url URL]
        index advisor: missing indexes proven with HypoPG (never creates one)
    opsstack db workload [...]     the demo database workload (same as `opsstack demo db-workload`)
    opsstack db seed [--scale X]   create and seed the demo schema, then exit
    opsstack db fault KIND [--rate X] [--duration D]   break the demo database on purpose
    opsstack db heal [--kind KIND]                     undo it
    opsstack db faults                                 list fault kinds and the active ones
"""
from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    a = sub.add_parser("advise", help="suggest missing indexes, proven by plan cost with HypoPG")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("--target", help="exporters.db.targets[].name (default: every target)")
    a.add_argument("--database", help="only this database of the target")
    a.add_argument("--url", help="a libpq URL instead of the configured targets")
    a.add_argument("--min-cost-drop", type=float, help="override exporters.db.advisor.min_cost_drop")
    a.add_argument("--statements", type=int, help="override exporters.db.advisor.statements")
    from demo.db import cli as demo_cli

    w = sub.add_parser("workload", help="seed the demo schema and run the demo workload (supervised)")
    demo_cli.add_arguments(w)
    s = sub.add_parser("seed", help="create and seed the demo schema, then exit")
    s.add_argument("--database-url")
    s.add_argument("--scale", type=float, default=2.0)
    s.add_argument("--reseed", action="store_true")
    from demo.db.faults import KINDS

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


def _jobs(args, cfg) -> list[tuple[str, str, str]]:
    """(server, database URL, URL where pg_stat_statements is read) to advise on."""
    from exporters.db.advisor import AdvisorCache
    from exporters.db.conn import target_url, with_dbname

    if args.url:
        return [("cli", args.url, args.url)]
    if args.database:
        out = []
        for t in cfg["exporters"]["db"]["targets"]:
            url = target_url(t, cfg)
            if url and (not args.target or t["name"] == args.target):
                out.append((t["name"], with_dbname(url, args.database), url))
        return out
    return [j for j in AdvisorCache(cfg).targets() if not args.target or j[0] == args.target]


def format_report(server: str, rep) -> str:
    lines = [f"== {server} / {rep.database}: {rep.examined} statement(s) examined in {rep.seconds:.2f}s"
             f" (hypopg: {'yes' if rep.hypopg else 'no'}, pg_qualstats: {'yes' if rep.qualstats else 'no'})"]
    if rep.problem:
        lines.append(f"   cannot advise: {rep.problem}")
        return "\n".join(lines)
    if not rep.suggestions:
        lines.append("   no missing index proven (nothing cuts a plan's cost enough)")
    for i, s in enumerate(rep.suggestions, 1):
        lines.append(f"\n{i}. index on {s.table} ({', '.join(s.columns)})"
                     f"{' [partitioned]' if s.partitioned else ''}: plan cost -{s.cost_drop_ratio:.1%}, "
                     f"~{s.saved_seconds_per_second * 1000:.1f} ms of execution saved per second")
        ddl = s.ddl
        if s.partitioned and len(ddl) > 5:
            parts = (len(ddl) - 1) // 2
            lines.append(f"   {ddl[0]}")
            lines.append(f"   -- then for each of the {parts} partitions, e.g.:")
            lines += [f"   {x}" for x in ddl[1:3]]
            lines.append("   -- (--json lists every statement)")
        else:
            lines += [f"   {x}" for x in ddl]
        for h in s.statements:
            q = " ".join(h.query.split())
            lines.append(f"   helps queryid {h.queryid} ({h.calls} calls, mean {h.mean_seconds * 1000:.2f} ms): "
                         f"cost {h.cost_before:.1f} -> {h.cost_after:.1f}; {q[:100]}")
    return "\n".join(lines)


def run(args, cfg) -> int:
    if args.action == "workload":
        from demo.db import cli as demo_cli

        return demo_cli.run(args, cfg)
    if args.action == "seed":
        from demo.db import cli as demo_cli

        args.seed_only = True
        return demo_cli.run(args, cfg) if demo_cli.database_url(args, cfg) else 2

    if args.action in ("fault", "heal", "faults"):
        return _faults(args, cfg)

    import psycopg

    from exporters.db.advisor import advise_url

    settings = dict(cfg["exporters"]["db"]["advisor"])
    if args.min_cost_drop is not None:
        settings["min_cost_drop"] = args.min_cost_drop
    if args.statements is not None:
        settings["statements"] = args.statements
    jobs = _jobs(args, cfg)
    if not jobs:
        print("opsstack db advise: no database: set database.url or exporters.db.targets, or pass --url",
              file=sys.stderr)
        return 2
    out, status = [], 0
    for server, url, stats_url in jobs:
        try:
            rep = advise_url(url, settings, stats_url=stats_url,
                             statement_timeout=max(cfg["exporters"]["db"]["statement_timeout"], 10.0),
                             connect_timeout=cfg["exporters"]["db"]["connect_timeout"])
        except psycopg.Error as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"opsstack db advise: {server}: {msg}", file=sys.stderr)
            status = 1
            continue
        out.append((server, rep))
    if args.json:
        print(json.dumps([dict(server=s, **r.to_dict()) for s, r in out], indent=2, default=str))
    else:
        print("\n\n".join(format_report(s, r) for s, r in out))
        if out:
            print("\nThe advisor never creates an index: review and run the statements yourself.")
    return status


def _faults(args, cfg) -> int:
    import psycopg

    from demo.db import cli as demo_cli
    from demo.db import faults
    from demo.db.seed import apply_schema
    from stack.config import parse_duration

    url = demo_cli.database_url(args, cfg)
    if not url:
        print("opsstack db: no database: set database.url or pass --database-url", file=sys.stderr)
        return 2
    with psycopg.connect(url, autocommit=True) as conn:
        apply_schema(conn)
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
