"""The demo's Varnish: its VCL (demo/varnish/opsstack.vcl, per-class TTLs and tag invalidation)
rendered for one origin, and the varnishd command line of an instance we run ourselves.

varnishd runs in the foreground (-F) with its own work directory (-n), so several instances
(and tests) never share the system's /var/lib/varnish; `varnishstat -n <workdir>` reads it.
"""
from __future__ import annotations

from pathlib import Path

VCL = Path(__file__).parent / "varnish" / "opsstack.vcl"


def render_vcl(origin_host: str, origin_port: int) -> str:
    text = VCL.read_text(encoding="utf-8")
    return text.replace("__ORIGIN_HOST__", str(origin_host)).replace("__ORIGIN_PORT__", str(int(origin_port)))


def varnishd_argv(varnishd: str, workdir: str, listen: str, admin: str, vcl_path: str,
                  storage: str = "malloc,64m") -> list[str]:
    """varnishd in the foreground: client address ``listen`` (host:port), management ``admin``; no
    jail (-j none): it runs as whoever starts it (under supervisor, the stack's user) and reads
    its files as that user."""
    return [varnishd, "-F", "-j", "none", "-n", workdir, "-a", listen, "-T", admin, "-f", vcl_path, "-s", storage,
            "-p", "ban_lurker_sleep=0.1"]
