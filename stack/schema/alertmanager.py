"""`alertmanager:` routing timings for the generated alertmanager.yml."""
from stack.config import Field

SECTION = {
    "resolve_timeout": Field("duration", "5m", minimum=1),
    # critical pages at once
    "critical_group_wait": Field("duration", "10s", minimum=0),
    "critical_group_interval": Field("duration", "1m", minimum=1),
    "critical_repeat_interval": Field("duration", "1h", minimum=1),
    # warnings are grouped
    "warning_group_wait": Field("duration", "1m", minimum=0),
    "warning_group_interval": Field("duration", "5m", minimum=1),
    "warning_repeat_interval": Field("duration", "4h", minimum=1),
    # the Watchdog heartbeat: repeat_interval is how often the receiver hears it
    "watchdog_repeat_interval": Field("duration", "1m", minimum=1),
    "group_by": Field("list", ["alertname", "service"]),
}
