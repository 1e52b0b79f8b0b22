"""`opsstack status [--json]`: each component and whether it is healthy.

Exit status: 0 when every component is healthy, 1 when one is not, 3 when the stack is not running.
"""
from __future__ import annotations

import json

from stack.launcher import Stack


def add_arguments(p):
    p.add_argument("--json", action="store_true", help='print {"components": {NAME: {"url": ..., "healthy": bool}}}')


def run(args, cfg) -> int:
    st = Stack(cfg).status()
    comps = st["components"]
    if args.json:
        print(json.dumps({"components": {n: {"url": c["url"], "healthy": c["healthy"]} for n, c in comps.items()}},
                         indent=2))
    else:
        if not st["running"]:
            print("opsstack: the stack is not running (start it with `make up` or `opsstack up`)")
        for name, c in comps.items():
            mark = "healthy" if c["healthy"] else "UNHEALTHY"
            print(f"{name:<26} {mark:<10} {c['state']:<9} {c['url'] or ''}")
    if not st["running"]:
        return 3
    return 0 if comps and all(c["healthy"] for c in comps.values()) else 1
