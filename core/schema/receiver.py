"""`receiver:` the Alertmanager webhook receiver (tickets, API, console)."""
import re

from core.spec import ConfigError, Field, ListOf

_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")


def _name(v):
    return None if _NAME.match(v) else f"letters, digits and . _ @ - only, got {v!r}"


API_TOKEN = {
    "name": Field("str", check=_name, help="who uses the token (shown as the actor in events)"),
    # the token itself, or 'sha256:<hex digest>' of it (preferred: the file then holds no secret)
    "token": Field("str", secret=True),
    "scopes": Field("list", ["read", "write"]),
}

USER = {
    "name": Field("str", check=_name),
    # werkzeug hash, e.g. from `opsstack receiver hash-password`
    "password_hash": Field("str", secret=True),
    "display_name": Field("str", None, nullable=True),
}

SECTION = {
    # Bearer token Alertmanager must send. null = generated on first `up` into <run_dir>/receiver_token.
    # OPSSTACK_RECEIVER_TOKEN overrides it.
    "token": Field("str", None, nullable=True, secret=True),
    "workers": Field("int", 2, minimum=1),
    "threads": Field("int", 8, minimum=1, help="gunicorn threads per worker (gthread)"),
    # The largest webhook body accepted (else 413, which Alertmanager does not retry).
    # null = sized for the largest notification the config allows:
    # alertmanager.max_alerts x max_alert_bytes + ENVELOPE_BYTES. A set value must be at least that.
    "max_body_bytes": Field("int", None, nullable=True, minimum=1024),
    # The bound on one alert as Alertmanager encodes it (labels, annotations, generatorURL, times):
    # the body limit is sized with it. Keep alert rules' labels and annotations under it.
    "max_alert_bytes": Field("int", 4096, minimum=512),
    # queued: the webhook stores the raw payload, answers 200, and workers turn it into tickets
    # right after (ordered per Alertmanager group). inline: tickets are made before the answer.
    "processing": Field("str", "queued", choices=("queued", "inline")),
    "processing_threads": Field("int", 1, minimum=1, help="threads applying queued payloads per process"),
    # Where a queued notification is stored before the answer (webhook_receiver/spool.py):
    # spool = appended to a local file (receiver.spool), moved into PostgreSQL right after by the
    # background process: the answer never waits for the database (a storm's busiest program) and
    # alerts are still accepted while it is down; database = committed to PostgreSQL first.
    "intake": Field("str", "spool", choices=("spool", "database"),
                    help="queued notifications are first stored in a local spool or in the database"),
    "spool": {
        "dir": Field("str", None, nullable=True, help="the spool's folder; null = <stack.run_dir>/receiver-spool/<database>"),
        # null = as durable as the database it goes to: the embedded cluster's database.embedded.durable
        # (a throw-away stack with fsync off does not fsync its spool either), true with database.url
        "fsync": Field("bool", None, nullable=True,
                       help="fdatasync before answering (an answered alert survives a power loss); "
                            "null = like the database (database.embedded.durable, or true with database.url)"),
        "max_bytes": Field("int", 1 << 30, minimum=1 << 20,
                           help="past this much spooled and not yet loaded, the webhook answers 503"),
        "segment_bytes": Field("int", 64 << 20, minimum=1 << 16, help="a web process starts a new file past this"),
    },
    # where payload processing and the escalation/notification loop run under `receiver serve`:
    # process = one background process beside the gunicorn workers (keeps the web workers'
    # latency free of that work); workers = threads in every gunicorn worker
    "background": Field("str", "process", choices=("process", "workers")),
    # CPU priority of that background process (Unix nice, added to the server's): during an alert
    # storm the webhook's intake (latency: Alertmanager waits for the answer) goes before applying
    # payloads (throughput: it gets every cycle the intake leaves). 0 = same priority.
    "background_nice": Field("int", 10, minimum=0, maximum=19,
                             help="nice added to the background process (payload processing, scheduler)"),
    "pool_size": Field("int", 6, minimum=1, help="database connections per worker"),
    "db_timeout": Field("duration", "5s", minimum=0.1, help="connect/statement timeout"),
    # What one ticket is: group = an incident per Alertmanager group (the notification's
    # groupKey: a storm of N alerts in one group is one ticket, paged once); alert = one ticket
    # per alert fingerprint (the behaviour before incidents).
    "incident_by": Field("str", "group", choices=("group", "alert"),
                         help="one ticket per Alertmanager group (group) or per alert fingerprint (alert)"),
    # A re-fire of the same alert within this long after its ticket resolved reopens the ticket.
    "reopen_window": Field("duration", "1h", minimum=0),
    "raw_retention": Field("duration", "30d", minimum=3600, help="how long raw payloads are kept"),
    # Alert names that are heartbeats, never tickets (the receiver records when each last arrived).
    "heartbeat_alerts": Field("list", ["Watchdog"]),
    # A heartbeat that stops arriving for this long opens a ticket (0 = never).
    "heartbeat_timeout": Field("duration", "10m", minimum=0),
    # Folder of the runbooks served at /runbooks (alerts' runbook_url); null = docs/runbooks of
    # this checkout.
    "runbooks_dir": Field("str", None, nullable=True, help="folder served at /runbooks; null = docs/runbooks"),
    # outcome KPIs on /metrics (webhook_receiver/kpis.py; targets: alerts.kpi): uptime per
    # service, MTTR, MTBF, auto-recovery rate, response time, each over the last `window`
    "kpis": {
        "window": Field("duration", "30d", minimum=3600, help="window of the outcome KPIs (uptime, MTTR, ...)"),
        # alerts whose firing time is a service's downtime (their episodes on the tickets)
        "down_alerts": Field("list", ["ServiceDown"], help="alert names whose firing time counts as downtime"),
    },
    "api": {
        # true = tickets, attachments, remediation runs, on-call and automation metrics answer
        # GETs without any credential. Off by default: reads need a token (scope read) or a console login.
        "anonymous_read": Field("bool", False, help="GET /api/v1/* and /metrics/automation without a token"),
        # the receiver token (the one Alertmanager sends) also works as a read+write API token
        "accept_receiver_token": Field("bool", True),
        "tokens": ListOf(API_TOKEN, unique_key="name"),
    },
    "console": {
        "users": ListOf(USER, unique_key="name"),
        # key that signs session cookies; null = a random key generated once and kept in PostgreSQL
        # (table receiver_secrets), shared by every worker and replica. Never derived from other secrets.
        "session_secret": Field("str", None, nullable=True, secret=True),
        "title": Field("str", "opsstack incidents"),
        # a session ends after this long without a request, and at the latest this long after login
        "session_idle_timeout": Field("duration", "12h", minimum=1),
        "session_lifetime": Field("duration", "7d", minimum=1),
        "login": {
            # wrong passwords before a user name / a client address is locked out, then locked
            # for backoff, doubling with each further failure up to max_backoff (429 + Retry-After,
            # the password is not checked while locked)
            "free_attempts": Field("int", 5, minimum=0),
            "address_free_attempts": Field("int", 20, minimum=0),
            "backoff": Field("duration", "1s", minimum=0.01),
            "max_backoff": Field("duration", "15m", minimum=0.01),
            "forget_after": Field("duration", "1h", minimum=1, help="failures older than this are forgotten"),
            # password hashes checked at once per process; a login past that gets 503 at once, so
            # logins never take the webhook's threads and CPU
            "concurrent_checks": Field("int", 1, minimum=1),
        },
    },
    # Reconciliation with Alertmanager (webhook_receiver/reconcile.py): at start and every
    # `interval`, firing episodes of unresolved tickets whose alert (fingerprint) no member of
    # the Alertmanager cluster reports as active (any state: silenced and inhibited count) are
    # closed, and a ticket with none left firing resolves (resolved notifications lost while the
    # stack was down). Nothing is closed in a round where any member fails to answer.
    "reconcile": {
        "enabled": Field("bool", True, help="reconcile open tickets with Alertmanager's active alerts"),
        # every member of the Alertmanager cluster; null = the stack's Alertmanager (`opsstack up`
        # fills it in); [] = no reconciliation
        "alertmanager_urls": Field("list", None, nullable=True,
                                   help="base URLs of every Alertmanager cluster member; null = the stack's"),
        "interval": Field("duration", "5m", minimum=1, help="how often to reconcile (also once at start)"),
        # an episode first seen less than this long ago is left alone (its notification may be in flight)
        "grace": Field("duration", "5m", minimum=0, help="leave episodes younger than this alone"),
        # Alertmanager keeps alerts in memory only: after its restart it knows an alert again only
        # when Prometheus re-sends it (resend delay; `for` state restored after
        # --rules.alert.for-grace-period, 10m). No episode is closed while any member is younger.
        "min_uptime": Field("duration", "15m", minimum=0,
                            help="close nothing while any Alertmanager member has been up for less"),
        "timeout": Field("duration", "10s", minimum=0.1, help="timeout of one Alertmanager query"),
    },
    "scheduler": {
        "enabled": Field("bool", True, help="run escalation + notification loops in each worker"),
        "interval": Field("duration", "5s", minimum=0.05),
        "batch": Field("int", 50, minimum=1),
    },
}


# room for the rest of a notification: groupKey, group/common labels and annotations, externalURL
ENVELOPE_BYTES = 65536


def body_bytes_needed(cfg) -> int:
    """The largest webhook body the config allows Alertmanager to send."""
    return int(cfg["alertmanager"]["max_alerts"]) * int(cfg["receiver"]["max_alert_bytes"]) + ENVELOPE_BYTES


def check(cfg):
    r = cfg["receiver"]
    need = body_bytes_needed(cfg)
    if r["max_body_bytes"] is None:
        r["max_body_bytes"] = need
    elif r["max_body_bytes"] < need:
        raise ConfigError("receiver.max_body_bytes",
                          f"must be >= {need} (alertmanager.max_alerts x receiver.max_alert_bytes + {ENVELOPE_BYTES}), "
                          f"got {r['max_body_bytes']}: a storm that large would get 413 and be lost; "
                          "lower alertmanager.max_alerts or leave max_body_bytes null")
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
