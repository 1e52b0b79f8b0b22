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


def render_routed_vcl(origins: dict[str, tuple[str, int]], first_byte_timeout: float = 6.0) -> str:
    """The VCL for one varnishd in front of several origins: ``origins`` maps a Host header (the
    nginx vhost) to (host, port); a request goes to the origin of its Host (the first one for an
    unknown Host). Backends give up on a first byte after ``first_byte_timeout`` seconds (an
    overloaded origin is a fetch failure, a 503 of Varnish)."""
    if not origins:
        raise ValueError("no origin")
    text = VCL.read_text(encoding="utf-8")
    start = text.index("backend default {")
    end = text.index("}", start) + 1
    backends, routes = [], []
    for i, (name, (host, port)) in enumerate(origins.items()):
        b = f"origin{i}"
        backends.append(f'backend {b} {{\n    .host = "{host}";\n    .port = "{int(port)}";\n'
                        f"    .connect_timeout = 2s;\n    .first_byte_timeout = {float(first_byte_timeout):g}s;\n"
                        f"    .between_bytes_timeout = 5s;\n}}")
        routes.append(f'    {"if" if i == 0 else "} elsif"} (req.http.host == "{name}") {{\n'
                      f"        set req.backend_hint = {b};\n")
    route = "sub vcl_recv {\n" + "".join(routes) + "    }\n}\n"
    # a second vcl_recv runs after the first one (PURGE/BAN return before it)
    return text[:start] + "\n\n".join(backends) + text[end:] + "\n# routing by Host (demo/edge.py)\n" + route
