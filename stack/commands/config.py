"""`opsstack config [--resolved]`: validate the config file and print it with defaults filled in."""
from __future__ import annotations

import yaml

from stack import runtime
from core.config import redacted


def add_arguments(p):
    p.add_argument("--resolved", action="store_true",
                   help="also resolve ports, database URL and endpoints as `up` would (chooses free ports)")


def run(args, cfg) -> int:
    out = runtime.resolve(cfg, persist=False) if args.resolved else cfg
    # every secret the schema marks (tokens, password hashes, credentials, URL passwords) as ***
    out = redacted({k: v for k, v in out.items() if k != "runtime"})
    print(yaml.safe_dump(out, sort_keys=False), end="")
    return 0
