"""The opsstack.yaml schema, one module per top-level section.

Each module defines SECTION (a mapping of key -> Field/ListOf/mapping) and may define
``check(cfg) -> None`` raising ConfigError for rules that span keys.
"""
from __future__ import annotations

import importlib

# Top-level key -> module in this package. Add a section by adding a module and a line.
SECTIONS = {
    "stack": "core",
    "database": "database",
    "platform": "platform",
    "demo": "demo",
    "exporters": "exporters",
    "alerts": "alerts",
    "receiver": "receiver",
    "oncall": "oncall",
    "escalation": "escalation",
    "notifications": "notifications",
    "alertmanager": "alertmanager",
    "forecast": "forecast",
    "remediation": "remediation",
    "enrichment": "enrichment",
    "itsm": "itsm",
    "logs": "logs",
}

_modules = {key: importlib.import_module(f"{__name__}.{mod}") for key, mod in SECTIONS.items()}
SCHEMA = {key: m.SECTION for key, m in _modules.items()}


def cross_checks(cfg: dict) -> None:
    for m in _modules.values():
        fn = getattr(m, "check", None)
        if fn is not None:
            fn(cfg)
