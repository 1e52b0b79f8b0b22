"""`receiver:` the Alertmanager webhook receiver (tickets, API, console)."""
import re

from stack.config import ConfigError, Field, ListOf

_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")


def _name(v):
    return None if _NAME.match(v) else f"letters, digits and . _ @ - only, got {v!r}"


API_TOKEN = {
    "name": Field("str", check=_name, help="who uses the token (shown as the actor in events)"),
    # the token itself, or 'sha256:<hex digest>' of it (preferred: the file then holds no secret)
    "token": Field("str"),
    "scopes": Field("list", ["read", "write"]),
}

USER = {
    "name": Field("str", check=_name),
    # werkzeug hash, e.g. from `opsstack receiver hash-password`
    "password_hash": Field("str"),
    "display_name": Field("str", None, nullable=True),
}

SECTION = {
    # Bearer token Alertmanager must send. null = generated on first `up` into <run_dir>/receiver_token.
    # OPSSTACK_RECEIVER_TOKEN overrides it.
    "token": Field("str", None, nullable=True),
    "workers": Field("int", 2, minimum=1),
    "threads": Field("int", 8, minimum=1, help="gunicorn threads per worker (gthread)"),
    "max_body_bytes": Field("int", 1048576, minimum=1024),
    # queued: the webhook stores the raw payload, answers 200, and workers turn it into tickets
    # right after (ordered per Alertmanager group). inline: tickets are made before the answer.
    "processing": Field("str", "queued", choices=("queued", "inline")),
    "processing_threads": Field("int", 1, minimum=1, help="threads applying queued payloads per process"),
    # where payload processing and the escalation/notification loop run under `receiver serve`:
    # process = one background process beside the gunicorn workers (keeps the web workers'
    # latency free of that work); workers = threads in every gunicorn worker
    "background": Field("str", "process", choices=("process", "workers")),
    "pool_size": Field("int", 6, minimum=1, help="database connections per worker"),
    "db_timeout": Field("duration", "5s", minimum=0.1, help="connect/statement timeout"),
    # A re-fire of the same alert within this long after its ticket resolved reopens the ticket.
    "reopen_window": Field("duration", "1h", minimum=0),
    "raw_retention": Field("duration", "30d", minimum=3600, help="how long raw payloads are kept"),
    # Alert names that are heartbeats, never tickets (the receiver records when each last arrived).
    "heartbeat_alerts": Field("list", ["Watchdog"]),
    # A heartbeat that stops arriving for this long opens a ticket (0 = never).
    "heartbeat_timeout": Field("duration", "10m", minimum=0),
    "api": {
        "anonymous_read": Field("bool", True, help="GET /api/v1/* without a token"),
        # the receiver token (the one Alertmanager sends) also works as a read+write API token
        "accept_receiver_token": Field("bool", True),
        "tokens": ListOf(API_TOKEN, unique_key="name"),
    },
    "console": {
        "users": ListOf(USER, unique_key="name"),
        # secret for session cookies; null = derived from receiver.token
        "session_secret": Field("str", None, nullable=True),
        "title": Field("str", "opsstack incidents"),
    },
    "scheduler": {
        "enabled": Field("bool", True, help="run escalation + notification loops in each worker"),
        "interval": Field("duration", "5s", minimum=0.05),
        "batch": Field("int", 50, minimum=1),
    },
}


def check(cfg):
    r = cfg["receiver"]
    for i, t in enumerate(r["api"]["tokens"]):
        bad = [s for s in t["scopes"] if s not in ("read", "write")]
        if bad:
            raise ConfigError(f"receiver.api.tokens[{i}].scopes", f"unknown scope {bad[0]!r} (read, write)")
        tok = t["token"]
        if tok.startswith("sha256:") and not re.match(r"^sha256:[0-9a-f]{64}$", tok):
            raise ConfigError(f"receiver.api.tokens[{i}].token", "sha256: must be followed by 64 hex digits")
    for i, u in enumerate(r["console"]["users"]):
        if not re.match(r"^(pbkdf2|scrypt)", u["password_hash"]):
            raise ConfigError(f"receiver.console.users[{i}].password_hash",
                              "expected a werkzeug hash (pbkdf2:... or scrypt:...); make one with "
                              "`opsstack receiver hash-password`")
