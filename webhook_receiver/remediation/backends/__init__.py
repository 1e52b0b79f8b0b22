"""Action backends behind one interface.

A backend turns (operation, rendered params, timeout) into an effect on the world and
returns a Result. ``describe`` says what would run without running it (dry-run and the
audit row use it). Every backend bounds its own I/O by the timeout it is given; the
runner adds an outer guard as well.
"""
from __future__ import annotations

from .base import (Backend, BackendError, BackendTimeout, Result, check_url, path_segment,  # noqa: F401
                   truncate)
from .cache import CloudflareBackend, RedisBackend, VarnishBackend
from .command import CommandBackend
from .docker import DockerBackend
from .http import HttpBackend
from .kubernetes import KubernetesBackend
from .supervisor import SupervisorBackend

BACKENDS: dict[str, type[Backend]] = {
    "supervisor": SupervisorBackend, "docker": DockerBackend, "kubernetes": KubernetesBackend,
    "http": HttpBackend, "command": CommandBackend,
    # cache invalidation (backends/cache.py; targets and rate limits in exporters.cdn)
    "cloudflare": CloudflareBackend, "varnish": VarnishBackend, "redis": RedisBackend,
}


def make(name: str, cfg: dict) -> Backend:
    """The backend called name, configured from cfg['remediation']['backends']."""
    settings = cfg["remediation"]["backends"].get(name, {})
    cls = BACKENDS.get(name)
    if cls is None:
        raise BackendError(f"unknown backend {name!r}")
    return cls(settings, cfg)
