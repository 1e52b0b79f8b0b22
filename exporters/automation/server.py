"""`opsstack exporter automation`: serve the automation collector on
stack.host:stack.ports.exporter_automation (docs/automation.md, "Exporter")."""
from __future__ import annotations

import logging
import threading

from prometheus_client import disable_created_metrics

from core.config import ConfigError, view
from core.exporter import registry_for
from core.exporter import serve as serve_registry
from exporters.automation.collector import AutomationCollector, urls

log = logging.getLogger("opsstack.exporter.automation")


def serve(cfg: dict, stop: threading.Event | None = None, port: int | None = None) -> int:
    stack = view(cfg, "stack")
    port = port or stack.ports.exporter_automation
    if port == "auto":
        raise ConfigError("stack.ports.exporter_automation", "is 'auto': start the exporter through `opsstack up` "
                          "or set a port")
    disable_created_metrics()
    u = urls(cfg)
    log.info("event=sources airflow=%s receiver=%s event_requests=%s", u["airflow"] is not None,
             u["receiver"] is not None, u["event_requests"] is not None)
    serve_registry(registry_for(AutomationCollector.from_config(cfg)), stack.host, int(port), stop=stop)
    return 0
