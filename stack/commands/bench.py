"""`opsstack bench NAME [args...]`: run bench/NAME.py with this Python."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def add_arguments(p):
    p.add_argument("name", nargs="?", help="benchmark script name (without .py); none lists them")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the script")


def run(args, cfg) -> int:
    scripts = sorted(x.stem for x in BENCH_DIR.glob("*.py") if not x.stem.startswith("_"))
    if not args.name:
        print("\n".join(scripts))
        return 0
    if args.name not in scripts:
        print(f"opsstack bench: no benchmark {args.name!r} (have: {', '.join(scripts)})", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.config_path:
        env["OPSSTACK_CONFIG"] = args.config_path
    return subprocess.call([sys.executable, str(BENCH_DIR / f"{args.name}.py"), *args.rest], env=env)
