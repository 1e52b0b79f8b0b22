"""`opsstack db advise`: the index advisor (the `db` command itself is stack/commands/db.py,
which adds the demo database's tools beside it).

    opsstack db advise [--json] [--target NAME] [--database DB] [--url URL]
        index advisor: missing indexes proven with HypoPG (never creates one)
"""
from __future__ import annotations

import dataclasses
import json
import sys

import psycopg

from core.config import view
from core.pg import with_dbname
from exporters.db.advisor import AdvisorCache, advise_url
from exporters.db.conn import target_url


def add_arguments(a) -> None:
    """The arguments of `db advise` (on its own subparser)."""
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("--target", help="exporters.db.targets[].name (default: every target)")
    a.add_argument("--database", help="only this database of the target")
    a.add_argument("--url", help="a libpq URL instead of the configured targets")
    a.add_argument("--min-cost-drop", type=float, help="override exporters.db.advisor.min_cost_drop")
    a.add_argument("--statements", type=int, help="override exporters.db.advisor.statements")


def _jobs(args, dbc, database) -> list[tuple[str, str, str]]:
    """(server, database URL, URL where pg_stat_statements is read) to advise on; ``dbc``,
    ``database``: the views of the exporters.db and database sections."""
    if args.url:
        return [("cli", args.url, args.url)]
    if args.database:
        out = []
        for t in dbc.targets:
            url = target_url(t, database)
            if url and (not args.target or t.name == args.target):
                out.append((t.name, with_dbname(url, args.database), url))
        return out
    return [j for j in AdvisorCache(dbc, database).targets() if not args.target or j[0] == args.target]


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
    dbc = view(cfg, "exporters.db")
    overrides = {k: v for k, v in (("min_cost_drop", args.min_cost_drop), ("statements", args.statements))
                 if v is not None}
    settings = dataclasses.replace(dbc.advisor, **overrides)
    jobs = _jobs(args, dbc, view(cfg, "database"))
    if not jobs:
        print("opsstack db advise: no database: set database.url or exporters.db.targets, or pass --url",
              file=sys.stderr)
        return 2
    out, status = [], 0
    for server, url, stats_url in jobs:
        try:
            rep = advise_url(url, settings, stats_url=stats_url,
                             statement_timeout=max(dbc.statement_timeout, 10.0),
                             connect_timeout=dbc.connect_timeout)
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
