"""`opsstack down`: stop every program of the native stack."""
from __future__ import annotations

from stack.launcher import Stack


def add_arguments(p):
    pass


def run(args, cfg) -> int:
    Stack(cfg).down(lambda m: print(m, flush=True))
    return 0
