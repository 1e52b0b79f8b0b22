"""Logging: key=value, one line per event, on stderr (docs/development.md)."""
from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    """key=value logs, one line per event, on stderr."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type name when it has none): for one-line logs
    and error answers."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
