"""The one `opsstack` command.

Each subcommand lives in a module that defines ``add_arguments(parser)`` and
``run(args, cfg) -> int``. Only the module of the chosen subcommand is imported, so
`opsstack status` does not pay for Prophet or matplotlib.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from core.config import ENV_CONFIG, RESOLVED_NAME, ConfigError, load, run_dir
from core.logs import setup_logging
from stack.runtime import running_config

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("stack.commands.up", "start the native stack (Prometheus, Alertmanager, exporters, receiver, demo)"),
    "down": ("stack.commands.down", "stop the native stack"),
    "status": ("stack.commands.status", "show each component and whether it is healthy"),
    "config": ("stack.commands.config", "validate the config file and print it resolved"),
    "exporter": ("exporters.cli", "run one of opsstack's exporters"),
    "receiver": ("webhook_receiver.cli", "run the Alertmanager webhook receiver (gunicorn)"),
    "demo": ("demo.cli", "the demo platform: serve it, inject faults, heal"),
    "dashboards": ("dashboards.cli", "generate or check the Grafana dashboard JSON"),
    "rules": ("alert_rules.cli", "render or check the Prometheus rule files"),
    "forecast": ("forecasters.cli", "forecasters: serve, run once, csv, evaluate"),
    "capacity": ("forecasters.capacity_cli", "capacity planning report"),
    "db": ("stack.commands.db", "database tools: index advisor, demo database workload and faults"),
    "bench": ("stack.commands.bench", "run a benchmark script from bench/"),
    "security": ("exporters.security.cli", "security tools: restore verification, the nginx log format"),
    "cdn": ("exporters.cdn.cli", "CDN and cache: the cache policy report per content class"),
    "cost": ("exporters.cost.cli", "cost: spend, rightsizing, reserved capacity, cost per 1,000 requests"),
}


def _actions(*names: str, unless: tuple[str, ...] = ()):
    """The actions ``names`` talk to the running stack, unless one of the options ``unless``
    (an explicit URL, say) is given."""
    return lambda a: a.action in names and not any(getattr(a, o, None) for o in unless)


# The commands that talk to the running stack (its database, Prometheus, receiver, demo admin
# APIs): they read the config `opsstack up` resolved (see stack_config). The programs the
# stack supervises (`exporter`, `receiver serve`, `forecast serve`, `demo serve`,
# `db workload`) are not in here: the launcher starts them with -c <resolved file>.
NEEDS_STACK = {
    "db": _actions("advise", "seed", "fault", "heal", "faults", unless=("url", "database_url")),
    "capacity": _actions("report", "scaling"),
    "cost": _actions("report", unless=("prometheus",)),
    "forecast": _actions("run"),
    "receiver": _actions("migrate"),
    "demo": lambda a: a.action in ("fault", "heal", "route", "purge", "replace", "state")
    or (a.action == "faults" and a.active),
}


class NoStack(Exception):
    pass


def stack_config(explicit: str | None) -> tuple[dict, str | None]:
    """(config, its file) for a command that talks to the running stack.

    The config file (-c, else $OPSSTACK_CONFIG, else ./opsstack.yaml or the defaults) names the
    run folder; when a stack runs there, its resolved config (real ports, database URL, token)
    is used. A resolved file given with -c is used as it is. When no stack runs: an explicit
    file is used as it is (an external database, say); without one, NoStack.
    """
    given = explicit or os.environ.get(ENV_CONFIG) or None
    cfg = load(given)
    if given and Path(given).name == RESOLVED_NAME:
        return cfg, given
    resolved = running_config(cfg)
    if resolved is not None:
        return load(resolved), str(resolved)
    if given:
        return cfg, given
    raise NoStack(f"no running stack in {run_dir(cfg)}: start it with `make up`, or pass -c CONFIG")


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="opsstack",
        description="Observability and incident automation for a multi-service platform.",
        epilog="commands:\n" + "\n".join(f"  {n:<11} {h}" for n, (_, h) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", help="config file (default: $OPSSTACK_CONFIG or ./opsstack.yaml)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("command", choices=sorted(COMMANDS), metavar="command")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = _top_parser().parse_args(argv)
    setup_logging(top.log_level)
    module_name, help_text = COMMANDS[top.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"opsstack {top.command}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(top.args)
    args.config_path = top.config
    try:
        needs_stack = NEEDS_STACK.get(top.command)
        if needs_stack is not None and needs_stack(args):
            cfg, args.config_path = stack_config(top.config)
        else:
            cfg = load(top.config)
    except ConfigError as exc:
        print(f"opsstack: config error: {exc}", file=sys.stderr)
        return 2
    except NoStack as exc:
        print(f"opsstack {' '.join(filter(None, (top.command, getattr(args, 'action', None))))}: {exc}",
              file=sys.stderr)
        return 2
    try:
        return int(module.run(args, cfg) or 0)
    except ConfigError as exc:
        print(f"opsstack: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
