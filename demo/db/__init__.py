"""The demo platform's PostgreSQL side: schema `platform`, seed data and a query workload.

- schema.sql: events (monthly partitions), participants, registrations, gate_logs (daily
  partitions), with three indexes deliberately missing for the index advisor;
- seed.sql / seed.py: realistic volumes in a few seconds (idempotent);
- workload.py: the platform's queries at a steady rate, partition upkeep, faults.

The launcher runs the workload as a supervised program (``launcher_programs``).
"""
from __future__ import annotations


def launcher_programs(resolved: dict) -> list[dict]:
    """Programs `opsstack up` runs for the demo database (see stack/launcher.py)."""
    if not resolved["demo"]["enabled"]:
        return []
    # no HTTP endpoint: ready as soon as it runs (it seeds first, then loops); "reads": the keys
    # of the resolved config it depends on (`opsstack up` restarts it when one of them changes)
    return [{"name": "demo-db-workload", "args": ["db", "workload"], "ready_url": None, "url": None,
             "reads": ["database", "demo.enabled", "demo.seed"]}]
