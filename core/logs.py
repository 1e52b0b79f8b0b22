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
