"""`opsstack up`: start the native stack and print the URLs; on a running stack, apply what
changed in the config (stack.launcher.Stack.apply) and say what it did."""
from __future__ import annotations

import sys

from stack.launcher import ConfigRejected, LaunchError, Stack
from core.pg import PostgresUnavailable
from core.procs import MissingBinary


def add_arguments(p):
    p.add_argument("--quiet", action="store_true", help="print only the URLs")


def run(args, cfg) -> int:
    stack = Stack(cfg)
    progress = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    try:
        resolved = stack.up(progress)
    except ConfigRejected as exc:
        print(f"opsstack up: {exc}", file=sys.stderr)
        print("opsstack up: nothing was changed: the stack keeps running with its old config", file=sys.stderr)
        return 1
    except (LaunchError, MissingBinary, PostgresUnavailable) as exc:
        print(f"opsstack up: {exc}", file=sys.stderr)
        print("opsstack up: logs are in " + str(stack.logs) + "; `opsstack down` stops what started",
              file=sys.stderr)
        return 1
    st = stack.status()
    print("\nopsstack is up:")
    for name, c in st["components"].items():
        mark = "ok " if c["healthy"] else "DOWN"
        print(f"  [{mark}] {name:<26} {c['url'] or ''}")
    rec = st["components"].get("receiver", {}).get("url")
    if rec:
        print(f"\n  incident console: {rec}/console   API: {rec}/api/v1/openapi.json")
        login = (resolved.get("runtime") or {}).get("console_login")
        if login:  # the password itself is never printed (terminal scrollback, CI logs): it stays in its 0600 file
            print(f"  console login: user {login['user']}, password in {login['password_file']}"
                  f" (readable only by you; no receiver.console.users configured)")
    if not any(n == "grafana" for n in st["components"]):
        print("\n  Grafana does not run in the native stack (no Debian/PyPI package);"
              " `docker compose up` runs the same stack with Grafana on http://localhost:3000.")
    print(f"\n  config in use: {resolved['stack']['run_dir']}/opsstack.resolved.yaml; logs: {stack.logs}")
    print("  try: opsstack demo fault service-down --service user-app   then: opsstack demo heal")
    return 0
