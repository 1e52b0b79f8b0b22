"""`notifications:` channels (SMTP, Slack-compatible webhook, generic HTTP webhook) and rules."""
from core.spec import ConfigError, Field, ListOf

CHANNEL = {
    "name": Field("str"),
    "type": Field("str", choices=("smtp", "slack", "webhook")),
    # slack / webhook: where to POST. slack: an incoming-webhook URL, or a chat.postMessage
    # compatible URL (then set token and channel, and replies go to the ticket's thread).
    # an incoming-webhook URL is itself the credential: shown as ***
    "url": Field("url", None, nullable=True, secret=True),
    "token_file": Field("str", None, nullable=True, help="bearer token for the URL, read from a file"),
    "channel": Field("str", None, nullable=True, help="slack channel for chat.postMessage"),
    "headers": Field("dict", {}, secret=True),  # may carry Authorization
    # smtp
    "smtp_host": Field("str", "127.0.0.1"),
    "smtp_port": Field("port", 25),
    "starttls": Field("bool", False),
    "username": Field("str", None, nullable=True),
    "password_file": Field("str", None, nullable=True),
    "sender": Field("str", "opsstack@localhost"),
    "to": Field("list", [], help="fixed recipients; the ticket owner is added when to_owner"),
    "to_owner": Field("bool", True),
    "timeout": Field("duration", "5s", minimum=0.1),
}

RULE = {
    "severities": Field("list", ["critical", "warning", "info"]),
    "levels": Field("list", [1, 2, 3]),
    "channels": Field("list"),
}

SECTION = {
    "enabled": Field("bool", True),
    "channels": ListOf(CHANNEL, unique_key="name"),
    # a ticket change is sent on every channel of every rule matching its severity and level
    "rules": ListOf(RULE),
    "max_attempts": Field("int", 8, minimum=1),
    "initial_backoff": Field("duration", "10s", minimum=0.01),
    "max_backoff": Field("duration", "10m", minimum=0.01),
    "console_url": Field("str", None, nullable=True, help="link put in messages, e.g. http://host:9095"),
    # the web page of the mailbox the messages land in (the demo mail sink: `opsstack up` sets it);
    # the console links to it; null = no link
    "mailbox_url": Field("url", None, nullable=True, help="web page of the mailbox; the console links to it"),
}


def check(cfg):
    n = cfg["notifications"]
    names = {c["name"] for c in n["channels"]}
    for i, c in enumerate(n["channels"]):
        if c["type"] in ("slack", "webhook") and not c["url"]:
            raise ConfigError(f"notifications.channels[{i}].url", f"is required for a {c['type']} channel")
    for i, r in enumerate(n["rules"]):
        for j, ch in enumerate(r["channels"]):
            if ch not in names:
                raise ConfigError(f"notifications.rules[{i}].channels[{j}]", f"no channel named {ch!r}")
        for j, s in enumerate(r["severities"]):
            if s not in ("critical", "warning", "info"):
                raise ConfigError(f"notifications.rules[{i}].severities[{j}]", f"unknown severity {s!r}")
