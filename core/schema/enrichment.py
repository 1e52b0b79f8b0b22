"""`enrichment:` what the receiver attaches to a ticket when it opens.

A PNG graph of the alert's expression over `graph_range` around startsAt, the current
values, related firing alerts on the same service, and a log excerpt (file tail or Loki).
"""
from core.spec import ConfigError, Field

SECTION = {
    "enabled": Field("bool", True),
    # null = http://<stack.host>:<stack.ports.prometheus> / <stack.ports.alertmanager>
    "prometheus_url": Field("url", None, nullable=True),
    "alertmanager_url": Field("url", None, nullable=True),
    "graph_range": Field("duration", "1h", minimum=60),
    "graph_width_px": Field("int", 900, minimum=200, maximum=4000),
    "graph_height_px": Field("int", 360, minimum=120, maximum=3000),
    "max_series": Field("int", 10, minimum=1, help="series drawn on the graph"),
    "timeout": Field("duration", "10s", minimum=0.1),
    "workers": Field("int", 2, minimum=1),
    "max_per_minute": Field("int", 30, minimum=0,
                            help="enrichments started in any 60 s, all replicas together (0: no limit); "
                                 "over it, jobs stay queued and run later"),
    "logs": {
        # auto: the stack's own Loki when it runs (logs.loki resolved to on), else none
        "source": Field("str", "auto", choices=("auto", "none", "file", "loki")),
        # file: path template with {label} placeholders, e.g. .run/logs/demo-{service}.log
        "file": Field("str", None, nullable=True),
        "lines": Field("int", 50, minimum=1, maximum=5000),
        "loki_url": Field("url", None, nullable=True),
        # LogQL with {label} placeholders; literal braces doubled: '{{service="{service}"}}'
        "loki_query": Field("str", '{{service="{service}"}}'),
        # asked first: the error lines fill the excerpt before the others
        "loki_error_query": Field("str", '{{service="{service}",level=~"error|critical"}}'),
        # the ticket links here (Explore, Loki datasource uid 'loki'); null: no link
        "grafana_url": Field("url", "http://127.0.0.1:3000", nullable=True),
        "since": Field("duration", "15m", minimum=1),
    },
}


def check(cfg):
    logs = cfg["enrichment"]["logs"]
    if logs["source"] == "file" and not logs["file"]:
        raise ConfigError("enrichment.logs.file", "is required when enrichment.logs.source is file")
    if logs["source"] == "loki" and not logs["loki_url"]:
        raise ConfigError("enrichment.logs.loki_url", "is required when enrichment.logs.source is loki")
