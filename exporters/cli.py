"""`opsstack exporter app|db`: run one of opsstack's exporters in the foreground.

- app: exporters.app.server.serve(cfg) — probes of every service x region endpoint,
  /metrics on stack.host:stack.ports.exporter_app.
- db: exporters.db.server.serve(cfg) — provided by the database exporter (imported lazily,
  so `exporter app` works without it), /metrics on stack.host:stack.ports.exporter_db.
- cdn: exporters.cdn.server.serve(cfg) — Cloudflare, Varnish, Redis and the cache policy,
  /metrics on stack.host:stack.ports.exporter_cdn (docs/metrics.md, "CDN and cache").
- security: exporters.security.server.serve(cfg) — TLS endpoints, nginx access and ModSecurity
  logs, fail2ban, pgBackRest and restore verification, /metrics on
  stack.host:stack.ports.exporter_security (docs/metrics.md, "Security exporter").
- cost: exporters.cost.server.serve(cfg) — spend per instance group, service and region, coverage and
  the advice gauges, /metrics on stack.host:stack.ports.exporter_cost (docs/cost.md).
- automation: exporters.automation.server.serve(cfg) — Airflow's DAGs, runs and health, the workflow
  KPIs and automation rates, /metrics on stack.host:stack.ports.exporter_automation (docs/automation.md).
"""
from __future__ import annotations

import sys

EXPORTERS = {
    "app": ("exporters.app.server", "synthetic HTTP(S) probes of every service x region endpoint"),
    "db": ("exporters.db.server", "PostgreSQL: activity, locks, slow queries, table and index statistics"),
    "security": ("exporters.security.server", "security: TLS handshakes, access/WAF logs, fail2ban, pgBackRest"),
    "cdn": ("exporters.cdn.server", "CDN and cache: Cloudflare analytics windows, Varnish, Redis, cache policy"),
    "cost": ("exporters.cost.server", "cost: spend per instance/service/region, coverage, advice gauges"),
    "automation": ("exporters.automation.server", "automation: Airflow DAGs and runs, workflow KPIs, automation rate"),
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="exporter", required=True, metavar="exporter")
    for name, (_, help_text) in EXPORTERS.items():
        sub.add_parser(name, help=help_text)


def run(args, cfg) -> int:
    import importlib

    module_name, _ = EXPORTERS[args.exporter]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"opsstack exporter: the {args.exporter} exporter is not available ({exc})", file=sys.stderr)
        return 1
    return int(module.serve(cfg) or 0)
