"""`opsstack exporter db`: serve the PostgreSQL collector on /metrics.

Listens on cfg["stack"]["host"]:cfg["stack"]["ports"]["exporter_db"] (a resolved config,
so the port is a number). `python -m exporters.db.server -c CONFIG [--port N]` does the
same without the CLI (the bench uses it).
"""
from __future__ import annotations

import argparse
import logging
import threading

from exporters.common import registry_for, serve as serve_registry
from exporters.db.collector import DbCollector

log = logging.getLogger("opsstack.exporter.db")


def build(cfg: dict, with_advisor: bool | None = None):
    """(collector, advisor cache or None) for cfg."""
    dbc = cfg["exporters"]["db"]
    advisor = None
    if dbc["advisor"]["enabled"] if with_advisor is None else with_advisor:
        from exporters.db.advisor import AdvisorCache

        advisor = AdvisorCache(cfg)
    return DbCollector(cfg, advisor=advisor), advisor


def serve(cfg: dict, stop: threading.Event | None = None, port: int | None = None) -> None:
    """Serve /metrics until SIGTERM/SIGINT (or `stop`). Blocks."""
    host = cfg["stack"]["host"]
    port = port or cfg["stack"]["ports"]["exporter_db"]
    if port == "auto":
        raise SystemExit("exporters.db: stack.ports.exporter_db is 'auto'; run through `opsstack up` "
                         "or set a port")
    collector, advisor = build(cfg)
    if advisor is not None:
        advisor.start()
    try:
        serve_registry(registry_for(collector), host, int(port), stop=stop)
    finally:
        if advisor is not None:
            advisor.stop()
        collector.close()


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin wrapper
    from stack.cli import setup_logging
    from stack.config import load

    p = argparse.ArgumentParser(prog="python -m exporters.db.server")
    p.add_argument("-c", "--config")
    p.add_argument("--port", type=int)
    p.add_argument("--no-advisor", action="store_true")
    a = p.parse_args(argv)
    setup_logging("INFO")
    cfg = load(a.config)
    if a.no_advisor:
        cfg["exporters"]["db"]["advisor"]["enabled"] = False
    serve(cfg, port=a.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
