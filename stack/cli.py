"""The one `opsstack` command.

Each subcommand lives in a module that defines ``add_arguments(parser)`` and
``run(args, cfg) -> int``. Only the module of the chosen subcommand is imported, so
`opsstack status` does not pay for Prophet or matplotlib.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core.config import ConfigError, load
from core.logs import setup_logging

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
}


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
        cfg = load(top.config)
    except ConfigError as exc:
        print(f"opsstack: config error: {exc}", file=sys.stderr)
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
