"""`opsstack exporter app`: serve the probe collector on stack.host:stack.ports.exporter_app."""
from __future__ import annotations

import logging
import resource

from prometheus_client import disable_created_metrics

from core.config import ConfigError, view
from core.exporter import registry_for
from core.exporter import serve as serve_registry
from exporters.app.collector import AppProbeCollector, plan_concurrency, targets_from_config

log = logging.getLogger("opsstack.exporter.app")


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every probe in flight holds a socket);
    returns (soft, hard) as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit the kernel refuses
            log.warning("event=fd_limit_raise_failed soft=%d hard=%d error=%r", soft, hard, str(exc))
    return soft, hard


def serve(cfg: dict, stop=None) -> int:
    port = cfg["stack"]["ports"]["exporter_app"]
    if port == "auto":
        raise ConfigError("stack.ports.exporter_app", "is 'auto': start the exporter through `opsstack up` "
                          "or set a port")
    disable_created_metrics()
    settings = view(cfg, "exporters.app")
    targets = targets_from_config(view(cfg, "platform"))
    soft, hard = raise_fd_limit()
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    slots, problem = plan_concurrency(settings.max_concurrency, len(targets), limit)
    if problem:
        log.error("event=fd_limit_too_low soft=%d hard=%d %s", soft, hard, problem)
    collector = AppProbeCollector(settings, targets, slots=slots)
    log.info("event=targets count=%d timeout=%.3fs slots=%d fd_limit=%d", len(collector.targets),
             collector.timeout, collector.slots, soft)
    try:
        serve_registry(registry_for(collector), cfg["stack"]["host"], int(port), stop=stop)
    finally:
        collector.close()
    return 0
