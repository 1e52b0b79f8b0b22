"""`opsstack exporter cost`: serve the cost collector on stack.host:stack.ports.exporter_cost."""
from __future__ import annotations

import logging
import threading

from prometheus_client import disable_created_metrics

from core.config import ConfigError, view
from core.exporter import registry_for
from core.exporter import serve as serve_registry
from exporters.cost.collector import CostCollector

log = logging.getLogger("opsstack.exporter.cost")


def serve(cfg: dict, stop: threading.Event | None = None, port: int | None = None) -> int:
    stack = view(cfg, "stack")
    port = port or stack.ports.exporter_cost
    if port == "auto":
        raise ConfigError("stack.ports.exporter_cost", "is 'auto': start the exporter through `opsstack up` "
                          "or set a port")
    disable_created_metrics()
    collector = CostCollector.from_config(cfg)
    log.info("event=inventory groups=%d aws=%s opencost=%s prometheus=%s", len(collector.groups()),
             collector.aws is not None, collector.opencost is not None, collector.prom is not None)
    collector.start()  # AWS and the advice are refreshed in the background
    try:
        serve_registry(registry_for(collector), stack.host, int(port), stop=stop)
    finally:
        collector.close()
    return 0
