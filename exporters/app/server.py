"""`opsstack exporter app`: serve the probe collector on stack.host:stack.ports.exporter_app."""
from __future__ import annotations

import logging

from core.config import ConfigError

log = logging.getLogger("opsstack.exporter.app")


def serve(cfg: dict, stop=None) -> int:
    from prometheus_client import disable_created_metrics

    from exporters.app.collector import AppProbeCollector
    from core.exporter import registry_for, serve as serve_registry

    port = cfg["stack"]["ports"]["exporter_app"]
    if port == "auto":
        raise ConfigError("stack.ports.exporter_app", "is 'auto': start the exporter through `opsstack up` "
                          "or set a port")
    disable_created_metrics()
    collector = AppProbeCollector(cfg)
    log.info("event=targets count=%d timeout=%.3fs", len(collector.targets), collector.timeout)
    try:
        serve_registry(registry_for(collector), cfg["stack"]["host"], int(port), stop=stop)
    finally:
        collector.close()
    return 0
