"""`exporters:` settings of opsstack's own exporters."""
from stack.config import Field

SECTION = {
    "app": {
        "enabled": Field("bool", True),
        "probe_timeout": Field("duration", "5s", minimum=0.05),
        "latency_buckets": Field("list", [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10]),
    },
}
