"""`opsstack exporter app`: serve the probe collector on stack.host:stack.ports.exporter_app."""
from __future__ import annotations

import logging

from prometheus_client import disable_created_metrics

from core.config import ConfigError, view
from core.exporter import registry_for
from core.exporter import serve as serve_registry
from exporters.app.collector import AppProbeCollector, targets_from_config

log = logging.getLogger("opsstack.exporter.app")


def serve(cfg: dict, stop=None) -> int:
    port = cfg["stack"]["ports"]["exporter_app"]
    if port == "auto":
        raise ConfigError("stack.ports.exporter_app", "is 'auto': start the exporter through `opsstack up` "
                          "or set a port")
    disable_created_metrics()
    collector = AppProbeCollector(view(cfg, "exporters.app"), targets_from_config(view(cfg, "platform")))
    log.info("event=targets count=%d timeout=%.3fs", len(collector.targets), collector.timeout)
    try:
        serve_registry(registry_for(collector), cfg["stack"]["host"], int(port), stop=stop)
    finally:
        collector.close()
    return 0
