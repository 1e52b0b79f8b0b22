"""`exporters:` settings of opsstack's own exporters."""
from core.schema.db_exporter import SECTION as DB_SECTION
from core.schema.db_exporter import check as check_db
from core.spec import ConfigError, Field

SECTION = {
    "app": {
        "enabled": Field("bool", True),
        "probe_timeout": Field("duration", "5s", minimum=0.05),
        # probe latency histogram; fine around 0.1 s (home region) and 0.2 s (the p95 target)
        "latency_buckets": Field("list", [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.175, 0.2, 0.25, 0.3,
                                          0.5, 1, 2.5, 5, 10]),
        # probes run in parallel, at most this many at once (each bounded by probe_timeout)
        "max_concurrency": Field("int", 32, minimum=1, maximum=512),
        # https targets: verify against this CA bundle (null = the system's), or not at all
        "tls_ca_file": Field("str", None, nullable=True),
        "tls_insecure_skip_verify": Field("bool", False),
    },
    "db": DB_SECTION,  # core/schema/db_exporter.py
}


def check(cfg):
    check_db(cfg)  # core/schema/db_exporter.py
    app = cfg["exporters"]["app"]
    if app["probe_timeout"] >= cfg["stack"]["scrape_timeout"]:
        raise ConfigError("exporters.app.probe_timeout", "must be shorter than stack.scrape_timeout "
                          "(probes run at scrape time)")
    b = app["latency_buckets"]
    if not b or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in b) or sorted(b) != b \
            or len(set(b)) != len(b):
        raise ConfigError("exporters.app.latency_buckets", "must be increasing numbers (seconds)")
