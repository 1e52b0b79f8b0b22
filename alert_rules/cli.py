"""`opsstack rules render|check`."""
from __future__ import annotations

import sys

from alert_rules import build
from core.config import defaults


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("render", help="write the rule files (default: the committed alert_rules/*.yml from defaults)")
    r.add_argument("--out", help="folder to write to; with it the rules use your config, not the defaults")
    sub.add_parser("check", help="fail when the committed rule files differ from the code")


def run(args, cfg) -> int:
    if args.action == "render":
        if args.out:
            paths = build.write(cfg, args.out)
        else:
            paths = build.write(defaults(), build.HERE)
        for p in paths:
            print(p)
        return 0
    stale = []
    for fname, text in build.render(defaults()).items():
        p = build.HERE / fname
        if not p.exists() or p.read_text() != text:
            stale.append(fname)
    if stale:
        print(f"stale rule files (run `opsstack rules render`): {', '.join(stale)}", file=sys.stderr)
        return 1
    print("rule files are up to date")
    return 0
