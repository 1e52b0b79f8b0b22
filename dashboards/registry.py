"""The dashboards opsstack ships: module name in this package -> folder in Grafana.

Each module defines ``UID`` and ``build(cfg) -> dict`` (the dashboard JSON model, built
with grafana-foundation-sdk). `opsstack dashboards generate` writes dashboards/json/<folder>/<uid>.json.
"""
DASHBOARDS = {
    "operations_overview": "Operations",
    "predictive": "Predictive",
    "database": "Database",
    "incidents": "Incidents",
    "cdn": "CDN",
    "security": "Security",
    "cost": "Cost",
    "automation": "Automation",
}
