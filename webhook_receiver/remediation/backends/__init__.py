"""Action backends behind one interface.

A backend turns (operation, rendered params, timeout) into an effect on the world and
returns a Result. ``describe`` says what would run without running it (dry-run and the
audit row use it). Every backend bounds its own I/O by the timeout it is given; the
runner adds an outer guard as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class BackendError(RuntimeError):
    """The action could not be carried out (message goes to the audit row)."""


class BackendTimeout(BackendError):
    """The action did not finish within its timeout."""


@dataclass
class Result:
    ok: bool
    output: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Backend:
    name = "backend"

    def __init__(self, settings: dict, cfg: dict):
        self.settings = settings
        self.cfg = cfg

    def describe(self, operation: str, params: dict) -> dict:
        return {"backend": self.name, "operation": operation, **params}

    def run(self, operation: str, params: dict, timeout: float) -> Result:  # pragma: no cover
        raise NotImplementedError


def make(name: str, cfg: dict) -> Backend:
    """The backend called name, configured from cfg['remediation']['backends']."""
    settings = cfg["remediation"]["backends"].get(name, {})
    if name == "supervisor":
        from .supervisor import SupervisorBackend as cls
    elif name == "docker":
        from .docker import DockerBackend as cls
    elif name == "kubernetes":
        from .kubernetes import KubernetesBackend as cls
    elif name == "http":
        from .http import HttpBackend as cls
    elif name == "command":
        from .command import CommandBackend as cls
    else:
        raise BackendError(f"unknown backend {name!r}")
    return cls(settings, cfg)


def truncate(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[: limit - 20] + f"... [{len(text) - limit + 20} more]"
