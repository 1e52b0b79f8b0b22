"""prometheus.yml from the config: one builder for the native stack and docker-compose.

mode="native": targets are loopback ports of the resolved config and rule files are the
ones `opsstack up` rendered into <run_dir>/rules. mode="docker": targets are compose service
names on their container ports and rule files are the committed alert_rules/*.yml mounted at
/etc/prometheus/rules (this rendering is provisioning/prometheus/prometheus.yml).
"""
from __future__ import annotations

from core.config import format_duration
from exporters import automation as automation_exporter

# container ports used in docker-compose.yml
DOCKER_PORTS = {
    "prometheus": 9090, "alertmanager": 9093, "node_exporter": 9100, "receiver": 9095,
    "exporter_app": 9200, "exporter_db": 9201, "forecaster": 9202,
}
DOCKER_HOSTS = {
    "prometheus": "prometheus", "alertmanager": "alertmanager", "node_exporter": "node-exporter",
    "receiver": "receiver", "exporter_app": "exporter-app", "exporter_db": "exporter-db",
    "forecaster": "forecaster",
}
DOCKER_DEMO_ADMIN_PORT = 8080


def _addr(cfg: dict, name: str, mode: str) -> str:
    if mode == "docker":
        return f"{DOCKER_HOSTS[name]}:{DOCKER_PORTS[name]}"
    return f"{cfg['stack']['host']}:{cfg['stack']['ports'][name]}"


def demo_targets(cfg: dict, mode: str) -> list[dict]:
    """One target per demo service process (its admin port serves /metrics)."""
    out = []
    for s in cfg["platform"]["services"]:
        name = s["name"]
        if mode == "docker":
            addr = f"demo-{name}:{DOCKER_DEMO_ADMIN_PORT}"
        else:
            port = cfg["demo"]["ports"].get(name, {}).get("admin")
            if not port:
                continue
            addr = f"{cfg['stack']['host']}:{port}"
        out.append({"targets": [addr], "labels": {"service": name, "team": s["team"]}})
    return out


def build(cfg: dict, mode: str = "native", rule_files: list[str] | None = None) -> dict:
    st = cfg["stack"]
    scrape = {
        "scrape_interval": format_duration(st["scrape_interval"]),
        "scrape_timeout": format_duration(st["scrape_timeout"]),
        "evaluation_interval": format_duration(st["evaluation_interval"]),
        "external_labels": {"platform": cfg["platform"]["name"].lower().replace(" ", "-")},
    }
    if rule_files is None:
        rule_files = ["/etc/prometheus/rules/*.yml"] if mode == "docker" else \
            [f"{st['run_dir']}/rules/*.yml"]

    def job(name: str, component: str, path: str = "/metrics", **extra) -> dict:
        j = {"job_name": name, "metrics_path": path,
             "static_configs": [{"targets": [_addr(cfg, component, mode)]}]}
        j.update(extra)
        return j

    jobs = [
        job("prometheus", "prometheus"),
        job("alertmanager", "alertmanager"),
        job("node", "node_exporter"),
    ]
    if cfg["exporters"]["app"]["enabled"]:
        # probes run at scrape time: give them the whole scrape budget
        jobs.append(job("opsstack_app", "exporter_app"))
    if cfg["exporters"].get("db", {}).get("enabled"):
        jobs.append(job("opsstack_db", "exporter_db"))
    for name in ("cdn", "security", "cost"):  # exporters/cdn, exporters/security, exporters/cost
        if cfg["exporters"].get(name, {}).get("enabled") and mode != "docker":
            # the CDN exporter's varnish/redis series carry `instance` = the configured instance
            # name (docs/metrics.md): kept as it is, not renamed exported_instance
            jobs.append(job(f"opsstack_{name}", f"exporter_{name}", **({"honor_labels": True} if name == "cdn" else {})))
    if automation_exporter.enabled(cfg) and mode != "docker":  # exporters/automation (docs/automation.md)
        jobs.append(job("opsstack_automation", "exporter_automation"))
    if cfg["forecast"]["enabled"]:
        jobs.append(job("opsstack_forecaster", "forecaster"))
    jobs.append(job("opsstack_receiver", "receiver"))
    if cfg["demo"]["enabled"]:
        targets = demo_targets(cfg, mode)
        if targets:
            jobs.append({"job_name": "platform", "metrics_path": "/metrics", "static_configs": targets})
    return {
        "global": scrape,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [_addr(cfg, "alertmanager", mode)]}]}]},
        "rule_files": rule_files,
        "scrape_configs": jobs,
    }
