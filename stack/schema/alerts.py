"""`alerts:` thresholds and `for:` durations of the alert rules (one place for them)."""
from stack.config import Field

SECTION = {
    "service_down_for": Field("duration", "1m", minimum=0),
    "watchdog": Field("bool", True),
    "runbook_base_url": Field("str", "https://github.com/opsstack/opsstack/blob/main/docs/runbooks"),
}
