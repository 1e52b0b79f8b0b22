"""`opsstack exporter cdn`: serve the CDN collector on stack.host:stack.ports.exporter_cdn.

`python -m exporters.cdn.server -c CONFIG [--port N]` does the same without the CLI (the bench
uses it)."""
from __future__ import annotations

import argparse
import logging
import threading

from prometheus_client import disable_created_metrics

from core.config import ConfigError, load, view
from core.exporter import registry_for
from core.exporter import serve as serve_registry
from core.logs import setup_logging
from exporters.cdn.collector import CdnCollector

log = logging.getLogger("opsstack.exporter.cdn")


def serve(cfg: dict, stop: threading.Event | None = None, port: int | None = None) -> int:
    stack = view(cfg, "stack")
    port = port or stack.ports.exporter_cdn
    if port == "auto":
        raise ConfigError("stack.ports.exporter_cdn", "is 'auto': start the exporter through `opsstack up` "
                          "or set a port")
    disable_created_metrics()
    collector = CdnCollector(view(cfg, "exporters.cdn"))
    log.info("event=targets zones=%d varnish=%d redis=%d", len(collector.zones),
             len(collector.s.varnish.instances), len(collector.s.redis.instances))
    collector.start()  # Cloudflare windows are fetched in the background
    try:
        serve_registry(registry_for(collector), stack.host, int(port), stop=stop)
    finally:
        collector.close()
    return 0


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin wrapper
    p = argparse.ArgumentParser(prog="python -m exporters.cdn.server")
    p.add_argument("-c", "--config")
    p.add_argument("--port", type=int)
    a = p.parse_args(argv)
    setup_logging("INFO")
    return serve(load(a.config), port=a.port)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
