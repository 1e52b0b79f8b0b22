"""The automation exporter: Apache Airflow's REST API and the automation KPIs (docs/automation.md)."""
from __future__ import annotations


def enabled(cfg: dict) -> bool:
    """`opsstack up` runs the exporter (and Prometheus scrapes it) when exporters.automation.enabled
    is set or the demo runs Airflow (demo.airflow: true, or a mapping with enabled: true)."""
    if cfg["exporters"].get("automation", {}).get("enabled"):
        return True
    demo = cfg.get("demo", {})
    airflow = demo.get("airflow")
    on = airflow.get("enabled") if isinstance(airflow, dict) else airflow
    return bool(demo.get("enabled")) and on is True
