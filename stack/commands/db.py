"""`opsstack db ...`: database tools.

    opsstack db advise [--json] [--target NAME] [--database DB] [--url URL]
        index advisor: missing indexes proven with HypoPG (never creates one)
    opsstack db workload [...]     the demo database workload (same as `opsstack demo db-workload`)
    opsstack db seed [--scale X]   create and seed the demo schema, then exit
    opsstack db fault KIND [--rate X] [--duration D]   break the demo database on purpose
    opsstack db heal [--kind KIND]                     undo it
    opsstack db faults                                 list fault kinds and the active ones

The orchestrator puts the exporter's advisor and the demo database's tools under one command,
so that neither component imports the other.
"""
from __future__ import annotations

from demo.db import cli as demo_db
from exporters.db import cli as advisor


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    advisor.add_arguments(sub.add_parser("advise", help="suggest missing indexes, proven by plan cost with HypoPG"))
    demo_db.add_tool_arguments(sub)


def run(args, cfg) -> int:
    if args.action in demo_db.TOOL_ACTIONS:
        return demo_db.run_tool(args, cfg)
    return advisor.run(args, cfg)
