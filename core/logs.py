"""Logging: key=value, one line per event, on stderr (docs/development.md)."""
from __future__ import annotations

import logging
import os
import sys

FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"


def setup_logging(level: str) -> None:
    """key=value logs, one line per event, on stderr; also shipped to Loki when the launcher
    set OPSSTACK_LOKI_PUSH_URL (core/logship.py, docs/logs.md)."""
    logging.basicConfig(level=getattr(logging, level), format=FORMAT, datefmt=DATEFMT, stream=sys.stderr)
    if os.environ.get("OPSSTACK_LOKI_PUSH_URL"):  # core.logship.ENV_URL
        from core import logship  # heavy: urllib.request + prometheus_client, only in programs that ship

        logship.install_from_env(logging.Formatter(FORMAT, DATEFMT))


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type name when it has none): for one-line logs
    and error answers."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
