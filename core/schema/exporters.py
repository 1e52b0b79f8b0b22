"""`exporters:` settings of opsstack's own exporters."""
from core.schema.automation_exporter import SECTION as AUTOMATION_SECTION
from core.schema.automation_exporter import check as check_automation
from core.schema.cdn_exporter import SECTION as CDN_SECTION
from core.schema.cdn_exporter import check as check_cdn
from core.schema.cost_exporter import SECTION as COST_SECTION
from core.schema.cost_exporter import check as check_cost
from core.schema.db_exporter import SECTION as DB_SECTION
from core.schema.db_exporter import check as check_db
from core.schema.security_exporter import SECTION as SECURITY_SECTION
from core.schema.security_exporter import check as check_security
from core.spec import ConfigError, Field

SECTION = {
    "app": {
        "enabled": Field("bool", True),
        "probe_timeout": Field("duration", "5s", minimum=0.05),
        # probe latency histogram; fine around 0.1 s (home region) and 0.2 s (the p95 target)
        "latency_buckets": Field("list", [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.175, 0.2, 0.25, 0.3,
                                          0.5, 1, 2.5, 5, 10]),
        # probes of a scrape run at once on one event loop under one deadline (probe_timeout);
        # at most this many hold a socket at once, the others wait for a slot (same deadline).
        # Keep it above the number of targets that may hang; the exporter raises its open-file
        # soft limit to the hard limit and logs an error when max_concurrency does not fit.
        "max_concurrency": Field("int", 1024, minimum=1, maximum=65536,
                                 help="probes holding a socket at once (one event loop, one deadline "
                                      "per scrape); the others wait for a slot"),
        # https targets: verify against this CA bundle (null = the system's), or not at all
        "tls_ca_file": Field("str", None, nullable=True),
        "tls_insecure_skip_verify": Field("bool", False),
    },
    "db": DB_SECTION,  # core/schema/db_exporter.py
    "security": SECURITY_SECTION,  # core/schema/security_exporter.py
    "cdn": CDN_SECTION,  # core/schema/cdn_exporter.py
    "cost": COST_SECTION,  # core/schema/cost_exporter.py
    "automation": AUTOMATION_SECTION,  # core/schema/automation_exporter.py
}


def check(cfg):
    check_db(cfg)  # core/schema/db_exporter.py
    check_security(cfg)  # core/schema/security_exporter.py
    check_cdn(cfg)  # core/schema/cdn_exporter.py
    check_cost(cfg)  # core/schema/cost_exporter.py
    check_automation(cfg)  # core/schema/automation_exporter.py
    app = cfg["exporters"]["app"]
    if app["probe_timeout"] >= cfg["stack"]["scrape_timeout"]:
        raise ConfigError("exporters.app.probe_timeout", "must be shorter than stack.scrape_timeout "
                          "(probes run at scrape time)")
    b = app["latency_buckets"]
    if not b or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in b) or sorted(b) != b \
            or len(set(b)) != len(b):
        raise ConfigError("exporters.app.latency_buckets", "must be increasing numbers (seconds)")
