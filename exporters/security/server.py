"""`opsstack exporter security`: serve the security collector on
stack.host:stack.ports.exporter_security (docs/metrics.md, "Security exporter")."""
from __future__ import annotations

import logging

from prometheus_client import disable_created_metrics

from core.config import ConfigError, view
from core.exporter import registry_for
from core.exporter import serve as serve_registry
from exporters.security.collector import SecurityCollector

log = logging.getLogger("opsstack.exporter.security")


def serve(cfg: dict, stop=None, port: int | None = None) -> int:
    port = port or cfg["stack"]["ports"]["exporter_security"]
    if port == "auto":
        raise ConfigError("stack.ports.exporter_security", "is 'auto': start the exporter through `opsstack up` "
                          "or set a port")
    disable_created_metrics()
    sec = view(cfg, "exporters.security")
    collector = SecurityCollector(sec, view(cfg, "stack"))
    log.info("event=security_exporter endpoints=%d logs=%d fail2ban=%s pgbackrest=%s state_dir=%s",
             len(collector.endpoints), len(collector.logs.logs), collector.fail2ban is not None,
             collector.backup is not None, collector.state_dir)
    try:
        serve_registry(registry_for(collector), cfg["stack"]["host"], int(port), stop=stop)
    finally:
        collector.close()
    return 0
