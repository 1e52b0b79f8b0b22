"""`alertmanager:` routing timings for the generated alertmanager.yml, and its direct route."""
import re

from core.spec import ConfigError, Field, ListOf

_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


def _hostport(v):
    return None if _HOSTPORT.match(v) else f"host:port, got {v!r}"


def _address(v):
    return None if _ADDRESS.match(v) else f"an e-mail address (name@domain), got {v!r}"


# Alerts about the alert path itself (label route="direct": the receiver down, its database down,
# its backlog, Alertmanager unable to deliver) cannot be told through that path: Alertmanager also
# e-mails them straight to these addresses (docs/receiver.md, "The direct route").
DIRECT = {
    # empty = no direct route (`opsstack up` with the demo mail sink fills it with the sink)
    "email_to": ListOf(Field("str", check=_address)),
    "smarthost": Field("str", None, nullable=True, check=_hostport, help="SMTP server host:port"),
    "from": Field("str", "alertmanager@localhost", check=_address),
    "require_tls": Field("bool", True, help="STARTTLS required (false only for a local relay or a test sink)"),
    "auth_username": Field("str", None, nullable=True),
    "auth_password_file": Field("str", None, nullable=True, help="file holding the SMTP password"),
    "repeat_interval": Field("duration", "1h", minimum=1),
}

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
    "direct": DIRECT,
}


def check(cfg):
    d = cfg["alertmanager"]["direct"]
    if d["email_to"] and not d["smarthost"]:
        raise ConfigError("alertmanager.direct.smarthost",
                          "required when alertmanager.direct.email_to is set (the SMTP server, host:port)")
