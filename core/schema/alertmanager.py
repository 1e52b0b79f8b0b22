"""`alertmanager:` routing timings for the generated alertmanager.yml."""
from core.spec import Field

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
    # max_alerts of every generated webhook_config: the most alerts one notification carries.
    # Alertmanager drops the rest of a bigger group for good (the payload's truncatedAlerts says
    # how many; the receiver records it on the group). receiver.max_body_bytes is sized for it.
    "max_alerts": Field("int", 10000, minimum=1, maximum=1000000,
                        help="alerts per webhook notification (the rest of a larger group is left out)"),
}
