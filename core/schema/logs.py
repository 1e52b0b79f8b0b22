"""`logs:` Grafana Loki in the native stack, shipping the components' logs to it, log alerts.

docs/logs.md. Loki runs as a supervised program when `loki` says so (auto: when a Grafana Loki
binary is installed; Debian has none: its `loki` package is an unrelated genetics program).
"""
from core.spec import ConfigError, Field

DAY = 86400.0

SECTION = {
    "loki": Field("str", "auto", choices=("auto", "on", "off"),
                  help="run Grafana Loki in the stack: auto = when a Grafana Loki binary is found"),
    # null: `loki` on PATH, used only when `loki -version` says it is Grafana Loki
    "loki_binary": Field("str", None, nullable=True),
    "retention": Field("duration", "7d", minimum=DAY, help="Loki keeps logs this long (whole days)"),
    "ship": Field("bool", True, help="the stack's programs push their log lines to the stack's Loki"),
    "queue_size": Field("int", 10000, minimum=100, maximum=1_000_000,
                        help="lines waiting to be shipped per process; a full queue drops (counted)"),
    "batch_size": Field("int", 500, minimum=1, maximum=10000),
    "flush_interval": Field("duration", "1s", minimum=0.05),
    "max_line_bytes": Field("int", 65536, minimum=1024, maximum=262144,
                            help="longer lines are cut with a truncated_from=<n>B marker"),
    "alerts": {
        "error_surge_min_lines": Field("int", 20, minimum=1,
                                       help="error lines of a service in 5m below which there is no surge"),
        "error_surge_factor": Field("float", 5.0, minimum=1.0,
                                    help="surge = errors in 5m above this many times the hour before's 5m mean"),
        "silence": Field("duration", "15m", minimum=300,
                         help="LogsAbsent: no line (not even the shipper's heartbeat) from a component this long"),
    },
}


def check(cfg):
    if cfg["logs"]["retention"] % DAY:
        raise ConfigError("logs.retention", "must be whole days (Loki's index period is 24h)")
