"""The Event Management service's event-request API: intake, the creation pipeline, approvals,
rollback (issue 13; docs/demo.md "Event-request API").

Everything lives in PostgreSQL, schema ``automation`` of the demo database (migrations in code,
versions in ``eventreq_migrations``): requests, their steps, approvals, past event templates,
and what the pipeline makes (events, their resources, one schema per event, API endpoint and
monitoring target rows), so a rollback really removes it.

``EventRequests(url).intake(dict)`` etc. in process; ``EventRequests.handle(req)`` serves
/api/v1/event-requests on the service's admin listener (demo/service.py). The pipeline
(classify, validate, create, approve, configure, confirm) is run step by step by the Airflow
DAG; every step is idempotent for a request (a retry after success replays the stored result,
a retry after a failure runs again over idempotent sub-steps) and a step out of order is a 409.

Every field of a request is attacker-controlled: types and lengths are checked at intake, SQL
is parameterised, the per-event schema name is made here from the event id (never from
input), and the confirmation e-mail's headers carry only a checked address and a cleaned
title.
"""
from __future__ import annotations

import html
import json
import logging
import math
import os
import re
import smtplib
import threading
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import psycopg
from psycopg import conninfo, errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.migrations import apply
from core.pg import PostgresUnavailable, connect, ensure_database
from demo.http import Request, Response

log = logging.getLogger("opsstack.demo.eventreq")

# the platform service that serves this API (demo.ports[SERVICE]["admin"])
SERVICE = "event-management"
PREFIX = "/api/v1/event-requests"

STATUSES = ("received", "classified", "validated", "created", "awaiting_approval", "approved",
            "configured", "completed", "rejected", "failed", "rolled_back")
FINISHED = ("completed", "rejected", "failed", "rolled_back")  # no longer "open" for duplicates
STEPS = ("classify", "validate", "create", "approve", "configure", "confirm")
# the status a request must have for a step to run (the previous step done)
REQUIRES = {"classify": "received", "validate": "classified", "create": "validated",
            "approve": "created", "configure": "approved", "confirm": "configured"}
TYPES = ("concert", "conference", "sports", "exhibition", "festival", "meetup", "other")
KEYWORDS = [  # title words -> type, first match wins
    ("concert", ("concert", "live", "tour", "recital", "orchestra", "gig")),
    ("conference", ("conference", "summit", "forum", "symposium", "congress", "convention")),
    ("sports", ("match", "game", "cup", "marathon", "league", "tournament", "race", "championship")),
    ("exhibition", ("expo", "exhibition", "fair", "showcase", "gallery")),
    ("festival", ("festival", "fest", "carnival", "parade")),
    ("meetup", ("meetup", "workshop", "seminar", "hackathon", "networking", "class")),
]
TIERS = ("auto", "manager", "executive")
AUTO_MAX, MANAGER_MAX = 100, 500  # attendees: <= 100 auto, 101..500 manager, > 500 executive
MAX_ATTENDEES = 1_000_000
INJECTABLE = ("configure",)
LIMITS = {"customer": 200, "title": 200, "venue": 200, "contact_email": 254, "contact_phone": 32,
          "starts_at": 40, "run_id": 250, "approver": 100, "reason": 500}
REQUIRED = ("customer", "title", "attendees", "starts_at", "contact_email", "channel")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,63}$")
PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{3,30}$")
SCHEMA_NAME = re.compile(r"^evt_[0-9]{1,18}$")
LOCK_NS = 0x0E7E  # advisory lock namespace of this module (with the request id)
LIST_MAX = 500
SENDER = "events@opsstack.local"
SMTP_TIMEOUT = 10.0
SMS_TIMEOUT = 10.0


# ------------------------------------------------------------------------ errors
class ApiError(Exception):
    """An answer other than success: ``status`` and a JSON ``body`` (with "error")."""

    status = 400

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.body = {"error": message, **extra}


class BadRequest(ApiError):
    status = 400


class Invalid(ApiError):
    status = 422


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class StepFailed(ApiError):
    status = 500


class Unavailable(ApiError):
    status = 503


# ------------------------------------------------------------------------ pure decisions
def normalise(text: str) -> str:
    """Case, width, punctuation and spacing folded: the key two titles/customers match on."""
    t = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", t).split())


def event_type(explicit: str | None, title: str) -> str:
    if explicit:
        return explicit
    words = set(normalise(title).split())
    for typ, keys in KEYWORDS:
        if words & set(keys):
            return typ
    return "other"


def size_of(attendees: int) -> str:
    return "small" if attendees <= AUTO_MAX else "medium" if attendees <= MANAGER_MAX else "large"


def tier_of(attendees: int) -> str:
    return "auto" if attendees <= AUTO_MAX else "manager" if attendees <= MANAGER_MAX else "executive"


def priority_of(size: str, starts_at: datetime, now: datetime) -> str:
    """Bigger and sooner is more urgent: size 0..2 + closeness (<= 7 days 2, <= 30 days 1)."""
    days = (starts_at - now).total_seconds() / 86400
    score = {"small": 0, "medium": 1, "large": 2}[size] + (2 if days <= 7 else 1 if days <= 30 else 0)
    return "high" if score >= 3 else "low" if score == 0 else "normal"


def classify(explicit: str | None, title: str, attendees: int, starts_at: datetime, now: datetime) -> dict:
    size = size_of(attendees)
    return {"type": event_type(explicit, title), "size": size, "priority": priority_of(size, starts_at, now)}


def _has_control(s: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in s)


def _text(data: dict, key: str, missing: list, invalid: dict, required: bool) -> str | None:
    v = data.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            missing.append(key)
        return None
    if not isinstance(v, str):
        invalid[key] = f"must be a string, got {type(v).__name__}"
        return None
    v = v.strip()
    if len(v) > LIMITS[key]:
        invalid[key] = f"longer than {LIMITS[key]} characters"
        return None
    if _has_control(v):
        invalid[key] = "contains control characters"
        return None
    return v


def parse_time(v: str) -> datetime:
    """An ISO 8601 time (a date alone is midnight UTC; no zone = UTC) -> aware UTC datetime."""
    t = datetime.fromisoformat(v)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    t = t.astimezone(timezone.utc)
    if not 2000 <= t.year <= 2200:
        raise ValueError("year out of range")
    return t


def check_intake(data) -> dict:
    """The cleaned request, or Invalid (422) with ``missing`` and ``invalid`` (pure)."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    missing: list[str] = []
    invalid: dict[str, str] = {}
    out: dict = {}
    for key in ("customer", "title", "venue", "contact_email", "contact_phone", "starts_at"):
        out[key] = _text(data, key, missing, invalid, key in REQUIRED)
    if out["contact_email"] is not None and not EMAIL.match(out["contact_email"]):
        invalid["contact_email"] = "not an e-mail address"
    if out["contact_phone"] is not None and not PHONE.match(out["contact_phone"]):
        invalid["contact_phone"] = "not a phone number (digits, spaces, +, -, parentheses)"
    if out["starts_at"] is not None:
        try:
            out["starts_at"] = parse_time(out["starts_at"])
        except ValueError:
            invalid["starts_at"] = "not an ISO 8601 time (e.g. 2027-05-01T18:00:00+09:00)"
            out["starts_at"] = None
    a = data.get("attendees")
    if a is None:
        missing.append("attendees")
    elif isinstance(a, bool) or not isinstance(a, int):
        invalid["attendees"] = "must be a whole number"
    elif not 1 <= a <= MAX_ATTENDEES:
        invalid["attendees"] = f"must be within 1..{MAX_ATTENDEES}"
    else:
        out["attendees"] = a
    ch = data.get("channel")
    if ch is None or ch == "":
        missing.append("channel")
    elif ch not in ("api", "web"):
        invalid["channel"] = "must be 'api' or 'web'"
    else:
        out["channel"] = ch
    t = data.get("event_type")
    if t is not None and t != "" and t not in TYPES:
        invalid["event_type"] = f"must be one of {', '.join(TYPES)}"
    out["event_type"] = t if t in TYPES else None
    f = data.get("inject_failure")
    if f is not None and f not in INJECTABLE:
        invalid["inject_failure"] = f"must be one of {', '.join(INJECTABLE)}"
    out["inject_failure"] = f if f in INJECTABLE else None
    if missing or invalid:
        what = []
        if missing:
            what.append("missing " + ", ".join(missing))
        if invalid:
            what.append("invalid " + ", ".join(sorted(invalid)))
        raise Invalid("the request is incomplete or invalid: " + "; ".join(what),
                      missing=missing, invalid=invalid)
    return out


def _short(data: dict, key: str, required: bool = False) -> str | None:
    v = data.get(key)
    if v is None:
        if required:
            raise Invalid(f"missing '{key}'", missing=[key], invalid={})
        return None
    if not isinstance(v, str) or len(v) > LIMITS[key] or _has_control(v):
        raise Invalid(f"'{key}' must be a string of at most {LIMITS[key]} characters",
                      missing=[], invalid={key: "bad value"})
    return v


def resources_for(template_resources: list, attendees: int) -> list[tuple[str, int]]:
    """(kind, quantity) of a template's resources scaled to the attendees (pure)."""
    out = []
    for r in template_resources:
        q = max(int(r.get("min", 0)), math.ceil(attendees / max(1, int(r.get("per_attendees", 1)))))
        out.append((str(r["kind"]), q))
    return out


def schema_name(event_id: int) -> str:
    name = f"evt_{int(event_id)}"
    if not SCHEMA_NAME.match(name):  # never reached with an int; the guard of a DDL identifier
        raise ValueError(f"bad event schema name {name!r}")
    return name


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _header(text: str, limit: int = 200) -> str:
    """A header value from attacker-controlled text: one line, no control characters, bounded."""
    return "".join(c for c in text if not _has_control(c))[:limit]


# ------------------------------------------------------------------------ templates (seed)
def _res(*items):
    return [{"kind": k, "per_attendees": p, "min": m} for k, p, m in items]


_STANDARD = {"channels": ["email", "sms"], "reminders_hours_before": [72, 24, 2]}
TEMPLATES = [  # (id, name, type, attendees, entry policy, notifications, resources)
    (1, "Club concert", "concert", 80, {"tickets": "qr", "id_check": True, "reentry": False, "gates_open_minutes": 60},
     _STANDARD, _res(("staff", 40, 2), ("security", 50, 1), ("gates", 200, 1))),
    (2, "Hall concert", "concert", 400, {"tickets": "qr", "id_check": True, "reentry": False, "gates_open_minutes": 90},
     _STANDARD, _res(("staff", 40, 4), ("security", 50, 4), ("gates", 200, 2), ("medical", 500, 1))),
    (3, "Arena concert", "concert", 3000, {"tickets": "qr", "id_check": True, "reentry": False,
                                           "gates_open_minutes": 120, "bag_check": True},
     _STANDARD, _res(("staff", 50, 20), ("security", 40, 30), ("gates", 500, 4), ("medical", 1000, 2))),
    (4, "Workshop day", "conference", 60, {"tickets": "badge", "id_check": False, "reentry": True, "gates_open_minutes": 30},
     {"channels": ["email"], "reminders_hours_before": [24]}, _res(("staff", 30, 2), ("rooms", 30, 1))),
    (5, "Tech conference", "conference", 450, {"tickets": "badge", "id_check": True, "reentry": True,
                                               "gates_open_minutes": 60},
     _STANDARD, _res(("staff", 30, 5), ("rooms", 100, 3), ("gates", 300, 2))),
    (6, "Summit", "conference", 1500, {"tickets": "badge", "id_check": True, "reentry": True, "gates_open_minutes": 90},
     _STANDARD, _res(("staff", 30, 20), ("rooms", 150, 6), ("gates", 400, 3), ("security", 100, 8))),
    (7, "Local tournament", "sports", 120, {"tickets": "qr", "id_check": False, "reentry": True, "gates_open_minutes": 45},
     _STANDARD, _res(("staff", 40, 3), ("medical", 200, 1), ("gates", 200, 1))),
    (8, "Stadium match", "sports", 20000, {"tickets": "qr", "id_check": True, "reentry": False,
                                           "gates_open_minutes": 150, "bag_check": True},
     _STANDARD, _res(("staff", 60, 100), ("security", 50, 200), ("gates", 1000, 10), ("medical", 2000, 5))),
    (9, "Gallery opening", "exhibition", 90, {"tickets": "list", "id_check": False, "reentry": True,
                                              "gates_open_minutes": 15},
     {"channels": ["email"], "reminders_hours_before": [24]}, _res(("staff", 30, 2))),
    (10, "Trade fair", "exhibition", 5000, {"tickets": "badge", "id_check": True, "reentry": True,
                                            "gates_open_minutes": 60},
     _STANDARD, _res(("staff", 80, 30), ("booths", 50, 20), ("gates", 800, 4), ("security", 150, 20))),
    (11, "Street festival", "festival", 2000, {"tickets": "wristband", "id_check": False, "reentry": True,
                                               "gates_open_minutes": 60},
     _STANDARD, _res(("staff", 60, 20), ("security", 80, 15), ("medical", 1000, 2))),
    (12, "Music festival", "festival", 15000, {"tickets": "wristband", "id_check": True, "reentry": True,
                                               "gates_open_minutes": 180, "bag_check": True},
     _STANDARD, _res(("staff", 60, 100), ("security", 50, 150), ("gates", 1000, 8), ("medical", 1500, 6))),
    (13, "Community meetup", "meetup", 40, {"tickets": "list", "id_check": False, "reentry": True,
                                            "gates_open_minutes": 15},
     {"channels": ["email"], "reminders_hours_before": [24]}, _res(("staff", 40, 1), ("rooms", 50, 1))),
    (14, "Seminar", "meetup", 150, {"tickets": "badge", "id_check": False, "reentry": True, "gates_open_minutes": 30},
     {"channels": ["email"], "reminders_hours_before": [48, 2]}, _res(("staff", 40, 2), ("rooms", 100, 1))),
    (15, "General event", "other", 100, {"tickets": "qr", "id_check": False, "reentry": True, "gates_open_minutes": 30},
     _STANDARD, _res(("staff", 40, 2), ("gates", 300, 1))),
    (16, "Large general event", "other", 1000, {"tickets": "qr", "id_check": True, "reentry": False,
                                                "gates_open_minutes": 90},
     _STANDARD, _res(("staff", 50, 10), ("security", 60, 10), ("gates", 400, 3), ("medical", 1000, 1))),
]

_STATUS_CHECK = ", ".join(f"'{s}'" for s in STATUSES)
_FINISHED_SQL = ", ".join(f"'{s}'" for s in FINISHED)

MIGRATIONS: list[tuple[int, str]] = [
    (1, f"""
    create schema if not exists automation;
    create table if not exists automation.event_templates (
        id             integer primary key,
        name           text not null unique,
        event_type     text not null,
        attendees      integer not null,
        entry_policy   jsonb not null,
        notifications  jsonb not null,
        resources      jsonb not null
    );
    create table if not exists automation.event_requests (
        id              bigint generated by default as identity primary key,
        customer        text not null,
        customer_key    text not null,
        title           text not null,
        title_key       text not null,
        event_type      text not null,
        type_given      boolean not null,
        attendees       integer not null check (attendees > 0),
        starts_at       timestamptz not null,
        start_date      date not null,
        venue           text,
        contact_email   text not null,
        contact_phone   text,
        channel         text not null check (channel in ('api', 'web')),
        inject_failure  text,
        size            text not null,
        priority        text not null,
        approval_tier   text not null check (approval_tier in ('auto', 'manager', 'executive')),
        status          text not null default 'received' check (status in ({_STATUS_CHECK})),
        template_id     integer references automation.event_templates (id),
        event_id        bigint,
        dashboard_url   text,
        error           text,
        manual_steps    integer not null default 0,
        created_at      timestamptz not null default now(),
        updated_at      timestamptz not null default now(),
        completed_at    timestamptz
    );
    -- one open request per customer, title and date (the duplicate check, race-free)
    create unique index if not exists event_requests_open_key on automation.event_requests
        (customer_key, title_key, start_date) where status not in ({_FINISHED_SQL});
    create index if not exists event_requests_status_idx on automation.event_requests (status, id);
    create table if not exists automation.event_request_steps (
        request_id   bigint not null references automation.event_requests (id) on delete cascade,
        step         text not null,
        state        text not null check (state in ('running', 'done', 'failed', 'rolled_back')),
        run_id       text,
        attempts     integer not null default 0,
        started_at   timestamptz,
        finished_at  timestamptz,
        error        text,
        result       jsonb not null default '{{}}',
        primary key (request_id, step)
    );
    create table if not exists automation.event_approvals (
        request_id    bigint primary key references automation.event_requests (id) on delete cascade,
        tier          text not null,
        state         text not null check (state in ('pending', 'approved', 'rejected', 'not_needed')),
        approver      text,
        role          text,
        requested_at  timestamptz not null default now(),
        decided_at    timestamptz
    );
    create index if not exists event_approvals_pending_idx on automation.event_approvals (tier, requested_at)
        where state = 'pending';
    create table if not exists automation.events (
        id             bigint generated by default as identity primary key,
        request_id     bigint not null unique references automation.event_requests (id),
        template_id    integer not null references automation.event_templates (id),
        name           text not null,
        event_type     text not null,
        attendees      integer not null,
        starts_at      timestamptz not null,
        venue          text,
        entry_policy   jsonb not null,
        notifications  jsonb not null,
        schema_name    text,
        created_at     timestamptz not null default now()
    );
    create table if not exists automation.event_resources (
        event_id  bigint not null references automation.events (id) on delete cascade,
        kind      text not null,
        quantity  integer not null,
        primary key (event_id, kind)
    );
    create table if not exists automation.api_endpoints (
        request_id  bigint primary key references automation.event_requests (id),
        event_id    bigint not null,
        path        text not null unique,
        created_at  timestamptz not null default now()
    );
    create table if not exists automation.monitoring_targets (
        request_id  bigint primary key references automation.event_requests (id),
        event_id    bigint not null,
        job         text not null,
        target      text not null,
        labels      jsonb not null,
        created_at  timestamptz not null default now()
    );
    """),
]


# ------------------------------------------------------------------------ the store
class EventRequests:
    """The event-request store and pipeline on database ``url`` (created when missing; its
    ``automation`` schema is migrated on first use). ``smtp``: (host, port) of the mail server
    the confirmation goes to, None = no e-mail (recorded as not sent). ``public_url``: base of
    the dashboard link (the admin listener), ``name``: the database when ``url`` names none."""

    def __init__(self, url: str, smtp: tuple[str, int] | None = None, public_url: str | None = None,
                 name: str = "opsstack", timeout: float = 5.0, sender: str = SENDER, sms_url: str | None = None):
        self.url = url
        self.sms_url = sms_url  # an SMS gateway taking POST {"to", "body", "from"} (the demo mail sink's /api/sms)
        self.name = conninfo.conninfo_to_dict(url).get("dbname") or name
        self.smtp = smtp
        self.public_url = (public_url or "").rstrip("/")
        self.timeout = timeout
        self.sender = sender
        self._ready = False
        self._ready_lock = threading.Lock()

    # -------------------------------------------------------------- connections
    def migrate(self) -> int:
        with self._ready_lock:
            if not conninfo.conninfo_to_dict(self.url).get("dbname"):  # else the launcher made it
                self.url = ensure_database(self.url, self.name, self.timeout)
            with connect(self.url, self.timeout, autocommit=True) as c:
                version = apply(c, MIGRATIONS, "eventreq_migrations", "opsstack.eventreq.migrations", "eventreq")
                with c.transaction():
                    for tid, name, typ, att, entry, notif, res in TEMPLATES:
                        c.execute("insert into automation.event_templates (id, name, event_type, attendees, "
                                  "entry_policy, notifications, resources) values (%s, %s, %s, %s, %s, %s, %s) "
                                  "on conflict (id) do nothing",
                                  (tid, name, typ, att, Jsonb(entry), Jsonb(notif), Jsonb(res)))
            self._ready = True
            return version

    @contextmanager
    def _conn(self):
        try:
            if not self._ready:
                self.migrate()
            with connect(self.url, self.timeout, autocommit=True, row_factory=dict_row) as c:
                yield c
        except (psycopg.OperationalError, PostgresUnavailable) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("event=eventreq_db_unavailable error=%r", first[:200])
            raise Unavailable("the event-request database is unavailable; retry later") from None

    @contextmanager
    def _locked(self, rid: int):
        """A connection holding the request's advisory lock: one operation on a request at a time
        (a concurrent one waits, then gets 409 after lock_timeout)."""
        with self._conn() as c:
            c.execute("set lock_timeout = '15s'")
            try:
                c.execute("select pg_advisory_lock(%s, %s)", (LOCK_NS, rid % 2**31))
            except errors.LockNotAvailable:
                raise Conflict("another operation on this request is in progress; retry") from None
            try:
                yield c
            finally:
                c.execute("select pg_advisory_unlock(%s, %s)", (LOCK_NS, rid % 2**31))

    # -------------------------------------------------------------- intake and reads
    def intake(self, data) -> dict:
        """POST /api/v1/event-requests: the new request (201), Invalid (422), Conflict (409)."""
        r = check_intake(data)
        now = datetime.now(timezone.utc)
        cls = classify(r["event_type"], r["title"], r["attendees"], r["starts_at"], now)
        tier = tier_of(r["attendees"])
        ckey, tkey, day = normalise(r["customer"]), normalise(r["title"]), r["starts_at"].date()
        with self._conn() as c:
            try:
                with c.transaction():
                    row = c.execute(
                        "insert into automation.event_requests (customer, customer_key, title, title_key, "
                        "event_type, type_given, attendees, starts_at, start_date, venue, contact_email, "
                        "contact_phone, channel, inject_failure, size, priority, approval_tier) values "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
                        (r["customer"], ckey, r["title"], tkey, cls["type"], r["event_type"] is not None,
                         r["attendees"], r["starts_at"], day, r["venue"], r["contact_email"], r["contact_phone"],
                         r["channel"], r["inject_failure"], cls["size"], cls["priority"], tier)).fetchone()
            except errors.UniqueViolation:
                dup = c.execute(
                    "select id from automation.event_requests where customer_key = %s and title_key = %s "
                    f"and start_date = %s and status not in ({_FINISHED_SQL}) order by id limit 1",
                    (ckey, tkey, day)).fetchone()
                dup_id = dup["id"] if dup else None
                raise Conflict("a request for the same customer, title and date is still open",
                               duplicate_of=dup_id) from None
        log.info("event=event_request_received id=%d channel=%s type=%s size=%s tier=%s",
                 row["id"], r["channel"], cls["type"], cls["size"], tier)
        return {"id": row["id"], "status": "received", "classification": cls, "approval_tier": tier,
                "duplicate_of": None}

    def get(self, rid: int) -> dict:
        with self._conn() as c:
            return self._describe(c, self._load(c, rid))

    def list(self, status: str | None = None, limit: int = 100) -> list[dict]:
        if status is not None and status not in STATUSES:
            raise Invalid(f"unknown status (one of {', '.join(STATUSES)})", missing=[], invalid={"status": "unknown"})
        limit = max(1, min(int(limit), LIST_MAX))
        with self._conn() as c:
            rows = c.execute("select * from automation.event_requests where (%s::text is null or status = %s) "
                             "order by id desc limit %s", (status, status, limit)).fetchall()
            return [self._describe(c, r) for r in rows]

    def approval(self, rid: int) -> dict:
        """GET .../approval: what the DAG's sensor polls."""
        with self._conn() as c:
            req = self._load(c, rid)
            return self._approval(c, req)

    def stats(self) -> dict:
        """Counts for the automation exporter: requests by status, pending approvals by tier (count,
        oldest wait), completed requests with and without manual steps."""
        with self._conn() as c:
            by_status = {r["status"]: r["n"] for r in c.execute(
                "select status, count(*) as n from automation.event_requests group by status").fetchall()}
            pending = {t: {"count": 0, "oldest_seconds": 0.0} for t in ("manager", "executive")}
            for r in c.execute("select tier, count(*) as n, extract(epoch from now() - min(requested_at)) as age "
                               "from automation.event_approvals where state = 'pending' group by tier").fetchall():
                pending[r["tier"]] = {"count": r["n"], "oldest_seconds": float(r["age"] or 0)}
            done = c.execute("select count(*) as n, count(*) filter (where manual_steps = 0) as auto "
                             "from automation.event_requests where status = 'completed'").fetchone()
        return {"requests": {s: by_status.get(s, 0) for s in STATUSES}, "approvals_pending": pending,
                "completed": done["n"], "completed_without_manual_steps": done["auto"]}

    def dashboard(self, rid: int) -> dict:
        """What the customer's dashboard link shows: the event, its resources and configuration."""
        with self._conn() as c:
            req = self._load(c, rid)
            ev = c.execute("select * from automation.events where request_id = %s", (rid,)).fetchone()
            res = [] if ev is None else c.execute(
                "select kind, quantity from automation.event_resources where event_id = %s order by kind",
                (ev["id"],)).fetchall()
            ep = c.execute("select path from automation.api_endpoints where request_id = %s", (rid,)).fetchone()
            mt = c.execute("select job, target, labels from automation.monitoring_targets where request_id = %s",
                           (rid,)).fetchone()
        event = None if ev is None else {
            "id": ev["id"], "name": ev["name"], "type": ev["event_type"], "attendees": ev["attendees"],
            "starts_at": _iso(ev["starts_at"]), "venue": ev["venue"], "entry_policy": ev["entry_policy"],
            "notifications": ev["notifications"], "schema": ev["schema_name"],
            "resources": {r["kind"]: r["quantity"] for r in res}}
        return {"request": {"id": req["id"], "status": req["status"], "title": req["title"]}, "event": event,
                "api_endpoint": ep["path"] if ep else None, "monitoring_target": dict(mt) if mt else None}

    # -------------------------------------------------------------- the pipeline
    def step(self, rid: int, step: str, body: dict | None = None) -> dict:
        """POST .../steps/<step> {run_id}: run one step (idempotent; 409 out of order)."""
        if step not in STEPS:
            raise NotFound(f"no step {step[:40]!r} (steps: {', '.join(STEPS)})")
        run_id = _short(body or {}, "run_id")
        with self._locked(rid) as c:
            req = self._load(c, rid)
            steps = self._steps(c, rid)
            prev = steps.get(step)
            if req["status"] == "rolled_back":
                raise Conflict("the request was rolled back", status=req["status"])
            if prev and prev["state"] == "done":
                return {"status": req["status"], "step": step, "state": "done", "replayed": True, **prev["result"]}
            retry = req["status"] == "failed" and prev is not None and prev["state"] in ("failed", "running")
            if req["status"] != REQUIRES[step] and not retry:
                raise Conflict(_order_problem(step, req["status"]), status=req["status"])
            with c.transaction():
                c.execute("insert into automation.event_request_steps (request_id, step, state, run_id, attempts, "
                          "started_at) values (%s, %s, 'running', %s, 1, now()) on conflict (request_id, step) do "
                          "update set state = 'running', run_id = excluded.run_id, attempts = "
                          "automation.event_request_steps.attempts + 1, started_at = now(), finished_at = null, "
                          "error = null", (rid, step, run_id))
            try:
                result, status = getattr(self, f"_do_{step}")(c, req)
            except StepFailed as exc:
                self._fail(c, rid, step, str(exc))
                raise StepFailed(str(exc), status="failed", step=step) from None
            try:
                with c.transaction():
                    c.execute("update automation.event_request_steps set state = 'done', finished_at = now(), "
                              "result = %s where request_id = %s and step = %s", (Jsonb(result), rid, step))
                    c.execute("update automation.event_requests set status = %s, error = null, updated_at = now(), "
                              "completed_at = case when %s = 'completed' then now() else completed_at end "
                              "where id = %s", (status, status, rid))
            except errors.UniqueViolation:  # a failed request retried while a duplicate was opened
                self._fail(c, rid, step, "a request for the same customer, title and date was opened meanwhile")
                raise Conflict("a request for the same customer, title and date is open", status="failed") from None
        log.info("event=event_request_step id=%d step=%s status=%s run_id=%s", rid, step, status,
                 _header(run_id or "-", 80))
        return {"status": status, "step": step, "state": "done", "replayed": False, **result}

    def _fail(self, c, rid: int, step: str, error: str) -> None:
        with c.transaction():
            c.execute("update automation.event_request_steps set state = 'failed', finished_at = now(), error = %s "
                      "where request_id = %s and step = %s", (error[:1000], rid, step))
            c.execute("update automation.event_requests set status = 'failed', error = %s, updated_at = now() "
                      "where id = %s", (error[:1000], rid))
        log.warning("event=event_request_step_failed id=%d step=%s error=%r", rid, step, error[:200])

    def _do_classify(self, c, req) -> tuple[dict, str]:
        cls = classify(req["event_type"] if req["type_given"] else None, req["title"], req["attendees"],
                       req["starts_at"], datetime.now(timezone.utc))
        with c.transaction():
            c.execute("update automation.event_requests set event_type = %s, size = %s, priority = %s, "
                      "approval_tier = %s where id = %s",
                      (cls["type"], cls["size"], cls["priority"], tier_of(req["attendees"]), req["id"]))
        return {"classification": cls, "approval_tier": tier_of(req["attendees"])}, "classified"

    def _do_validate(self, c, req) -> tuple[dict, str]:
        now = datetime.now(timezone.utc)
        problems = []
        if req["starts_at"] <= now:
            problems.append("starts_at is in the past")
        elif req["starts_at"] > now + timedelta(days=5 * 366):
            problems.append("starts_at is more than 5 years ahead")
        if not EMAIL.match(req["contact_email"] or ""):
            problems.append("contact_email is not an e-mail address")
        if problems:
            raise StepFailed("validation failed: " + "; ".join(problems))
        return {"checks": ["required_fields", "starts_at", "contact_email", "duplicates"]}, "validated"

    def _do_create(self, c, req) -> tuple[dict, str]:
        """The event from the closest past template (same type, nearest attendees; another type
        only when the type has none): entry policy, notifications and scaled resources."""
        t = c.execute("select * from automation.event_templates order by (event_type = %s) desc, "
                      "abs(attendees - %s), id limit 1", (req["event_type"], req["attendees"])).fetchone()
        if t is None:
            raise StepFailed("no event template")
        res = resources_for(t["resources"], req["attendees"])
        with c.transaction():
            c.execute("insert into automation.events (request_id, template_id, name, event_type, attendees, "
                      "starts_at, venue, entry_policy, notifications) values (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                      "on conflict (request_id) do nothing",
                      (req["id"], t["id"], req["title"], req["event_type"], req["attendees"], req["starts_at"],
                       req["venue"], Jsonb(t["entry_policy"]), Jsonb(t["notifications"])))
            ev = c.execute("select id from automation.events where request_id = %s", (req["id"],)).fetchone()
            for kind, q in res:
                c.execute("insert into automation.event_resources (event_id, kind, quantity) values (%s, %s, %s) "
                          "on conflict (event_id, kind) do update set quantity = excluded.quantity",
                          (ev["id"], kind, q))
            c.execute("update automation.event_requests set template_id = %s, event_id = %s where id = %s",
                      (t["id"], ev["id"], req["id"]))
        return {"template_id": t["id"], "template": t["name"], "event_id": ev["id"],
                "entry_policy": t["entry_policy"], "notifications": t["notifications"],
                "resources": dict(res)}, "created"

    def _do_approve(self, c, req) -> tuple[dict, str]:
        tier = req["approval_tier"]
        with c.transaction():
            if tier == "auto":
                c.execute("insert into automation.event_approvals (request_id, tier, state, approver, role, "
                          "decided_at) values (%s, 'auto', 'not_needed', 'auto', null, now()) "
                          "on conflict (request_id) do nothing", (req["id"],))
            else:
                c.execute("insert into automation.event_approvals (request_id, tier, state) values (%s, %s, "
                          "'pending') on conflict (request_id) do nothing", (req["id"], tier))
        appr = self._approval(c, req)
        return {"approval": appr}, "approved" if tier == "auto" else "awaiting_approval"

    def _do_configure(self, c, req) -> tuple[dict, str]:
        """The event's schema, its API endpoint and its monitoring registration, each committed
        on its own (what a real system configuration leaves behind when it fails halfway:
        rollback removes it). ``inject_failure: configure`` fails at the monitoring part."""
        ev_id = req["event_id"]
        if ev_id is None:
            raise StepFailed("no event to configure (create did not run)")
        schema = schema_name(ev_id)
        ident = sql.Identifier(schema)
        with c.transaction():
            c.execute(sql.SQL("create schema if not exists {}").format(ident))
            c.execute(sql.SQL("create table if not exists {}.registrations (id bigint generated by default as "
                              "identity primary key, participant text not null, status text not null default "
                              "'registered', created_at timestamptz not null default now())").format(ident))
            c.execute(sql.SQL("create table if not exists {}.checkins (registration_id bigint not null, gate text "
                              "not null, at timestamptz not null default now())").format(ident))
            c.execute("update automation.events set schema_name = %s where id = %s", (schema, ev_id))
        path = f"/api/events/{ev_id}"
        with c.transaction():
            c.execute("insert into automation.api_endpoints (request_id, event_id, path) values (%s, %s, %s) "
                      "on conflict (request_id) do nothing", (req["id"], ev_id, path))
        if req["inject_failure"] == "configure":
            raise StepFailed("injected failure: monitoring registration of the event failed")
        target = f"{self.public_url or 'http://127.0.0.1'}{path}"
        labels = {"event_id": str(ev_id), "service": SERVICE}
        with c.transaction():
            c.execute("insert into automation.monitoring_targets (request_id, event_id, job, target, labels) "
                      "values (%s, %s, 'event', %s, %s) on conflict (request_id) do nothing",
                      (req["id"], ev_id, target, Jsonb(labels)))
        return {"schema": schema, "api_endpoint": path, "monitoring_target": target}, "configured"

    def _do_confirm(self, c, req) -> tuple[dict, str]:
        link = f"{self.public_url}{PREFIX}/{req['id']}/dashboard"
        email = {"sent": False, "to": req["contact_email"]}
        if self.smtp is None:
            email["reason"] = "no SMTP server configured"
            log.warning("event=event_request_confirm_unsent id=%d reason=no_smtp", req["id"])
        else:
            email.update(sent=True, message_id=self._send(req, link))
        sms = None
        if req["contact_phone"]:  # a text message too, when the customer gave a phone number
            sms = {"sent": False, "to": req["contact_phone"]}
            if self.sms_url is None:
                sms["reason"] = "no SMS gateway configured"
            else:
                sms.update(sent=True, id=self._text(req, link))
        with c.transaction():
            c.execute("update automation.event_requests set dashboard_url = %s where id = %s", (link, req["id"]))
        return {"email": email, "sms": sms, "dashboard_url": link}, "completed"

    def _text(self, req, link: str):
        to = re.sub(r"[^0-9+]", "", req["contact_phone"])  # checked at intake: digits, spaces, +, -, ()
        body = f"Your event \"{req['title'][:80]}\" is confirmed (event {req['event_id']}). {link}"
        data = json.dumps({"to": to, "from": "opsstack", "body": body}).encode()
        r = urllib.request.Request(self.sms_url, data=data, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(r, timeout=SMS_TIMEOUT) as resp:  # noqa: S310 (configured URL)
                return json.loads(resp.read(65536) or b"{}").get("id")
        except urllib.error.HTTPError as exc:
            raise StepFailed(f"confirmation SMS refused: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise StepFailed(f"confirmation SMS not sent: {self.sms_url}: {exc}") from None

    def _send(self, req, link: str) -> str:
        host, port = self.smtp
        msg = EmailMessage()
        msg["Subject"] = _header(f"Your event is confirmed: {req['title']}")
        msg["From"] = self.sender
        msg["To"] = req["contact_email"]  # checked against EMAIL at intake: one plain address
        msg["Date"] = formatdate(localtime=False)
        msg_id = make_msgid(domain="opsstack")
        msg["Message-ID"] = msg_id
        msg["X-Opsstack-Event-Request"] = str(int(req["id"]))
        msg.set_content(
            f"Hello {req['customer']},\n\nyour event \"{req['title']}\" is set up.\n"
            f"Event id: {req['event_id']}\nStarts at: {_iso(req['starts_at'])}\n"
            f"Venue: {req['venue'] or 'to be announced'}\nAttendees: {req['attendees']}\n\n"
            f"Dashboard: {link}\n\nopsstack event management\n")
        try:
            with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT) as s:
                s.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise StepFailed(f"confirmation e-mail not sent: smtp {host}:{port}: {exc}") from None
        return msg_id

    # -------------------------------------------------------------- approvals and rollback
    def decide(self, rid: int, body) -> dict:
        """POST .../approval {decision, approver, role}: the role must match the tier."""
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        decision = body.get("decision")
        role = body.get("role")
        missing = [k for k in ("decision", "approver", "role") if body.get(k) in (None, "")]
        if missing:
            raise Invalid("missing " + ", ".join(missing), missing=missing, invalid={})
        if decision not in ("approve", "reject"):
            raise Invalid("'decision' must be 'approve' or 'reject'", missing=[], invalid={"decision": "bad value"})
        if role not in ("manager", "executive"):
            raise Invalid("'role' must be 'manager' or 'executive'", missing=[], invalid={"role": "bad value"})
        approver = _short(body, "approver", required=True)
        state = "approved" if decision == "approve" else "rejected"
        with self._locked(rid) as c:
            req = self._load(c, rid)
            appr = c.execute("select * from automation.event_approvals where request_id = %s", (rid,)).fetchone()
            if req["approval_tier"] == "auto":
                raise Conflict("no approval needed: the request is in the auto tier", status=req["status"])
            if appr is None:
                raise Conflict("no approval requested yet: run the approve step first", status=req["status"])
            if appr["state"] in ("approved", "rejected"):
                if appr["state"] == state:
                    return {"status": req["status"], "replayed": True, "approval": self._approval(c, req)}
                raise Conflict(f"the request was already {appr['state']}", status=req["status"])
            if role != req["approval_tier"]:
                raise Forbidden(f"a {role} cannot decide a {req['approval_tier']}-tier request "
                                f"(the role must match the tier)", tier=req["approval_tier"])
            if req["status"] != "awaiting_approval":
                raise Conflict(f"the request is {req['status']}, not awaiting approval", status=req["status"])
            with c.transaction():
                c.execute("update automation.event_approvals set state = %s, approver = %s, role = %s, "
                          "decided_at = now() where request_id = %s", (state, approver, role, rid))
                c.execute("update automation.event_requests set status = %s, manual_steps = manual_steps + 1, "
                          "updated_at = now() where id = %s", (state, rid))
            req = self._load(c, rid)
            out = {"status": state, "replayed": False, "approval": self._approval(c, req)}
        log.info("event=event_request_decided id=%d decision=%s role=%s", rid, decision, role)
        return out

    def rollback(self, rid: int, body=None) -> dict:
        """POST .../rollback {run_id, reason}: undo create and configure (the event, its resources,
        its schema, API endpoint and monitoring target); status rolled_back. Idempotent."""
        body = body or {}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        run_id = _short(body, "run_id")
        reason = _short(body, "reason")
        with self._locked(rid) as c:
            req = self._load(c, rid)
            if req["status"] == "rolled_back":
                prev = self._steps(c, rid).get("rollback")
                return {"status": "rolled_back", "replayed": True, **(prev["result"] if prev else {})}
            if req["status"] == "completed":
                raise Conflict("the request is completed: nothing to roll back", status="completed")
            with c.transaction():
                ev = c.execute("select id, schema_name from automation.events where request_id = %s",
                               (rid,)).fetchone()
                undone = {"schema": None, "events": 0, "resources": 0, "api_endpoints": 0, "monitoring_targets": 0}
                if ev is not None:
                    # the schema configure makes is named from the event id; drop that one whatever
                    # the row says (a failure may have come before the row was updated)
                    schema = schema_name(ev["id"])
                    exists = c.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone()
                    if exists:
                        c.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))
                        undone["schema"] = schema
                    undone["resources"] = c.execute("delete from automation.event_resources where event_id = %s",
                                                    (ev["id"],)).rowcount
                undone["monitoring_targets"] = c.execute(
                    "delete from automation.monitoring_targets where request_id = %s", (rid,)).rowcount
                undone["api_endpoints"] = c.execute("delete from automation.api_endpoints where request_id = %s",
                                                    (rid,)).rowcount
                undone["events"] = c.execute("delete from automation.events where request_id = %s", (rid,)).rowcount
                c.execute("update automation.event_request_steps set state = 'rolled_back' where request_id = %s "
                          "and step in ('create', 'configure')", (rid,))
                c.execute("update automation.event_approvals set state = 'rejected', decided_at = coalesce("
                          "decided_at, now()) where request_id = %s and state = 'pending'", (rid,))
                result = {"undone": undone, "reason": reason, "from_status": req["status"]}
                c.execute("insert into automation.event_request_steps (request_id, step, state, run_id, attempts, "
                          "started_at, finished_at, error, result) values (%s, 'rollback', 'done', %s, 1, now(), "
                          "now(), null, %s) on conflict (request_id, step) do update set state = 'done', "
                          "run_id = excluded.run_id, finished_at = now(), result = excluded.result",
                          (rid, run_id, Jsonb(result)))
                c.execute("update automation.event_requests set status = 'rolled_back', event_id = null, "
                          "updated_at = now() where id = %s", (rid,))
        log.info("event=event_request_rolled_back id=%d from=%s schema=%s events=%d", rid, req["status"],
                 undone["schema"] or "-", undone["events"])
        return {"status": "rolled_back", "replayed": False, **result}

    # -------------------------------------------------------------- rows -> JSON
    def _load(self, c, rid: int) -> dict:
        row = c.execute("select * from automation.event_requests where id = %s", (rid,)).fetchone()
        if row is None:
            raise NotFound(f"no event request {rid}")
        return row

    def _steps(self, c, rid: int) -> dict:
        rows = c.execute("select * from automation.event_request_steps where request_id = %s", (rid,)).fetchall()
        return {r["step"]: r for r in rows}

    def _approval(self, c, req) -> dict:
        a = c.execute("select *, extract(epoch from now() - requested_at) as waiting from automation.event_approvals "
                      "where request_id = %s", (req["id"],)).fetchone()
        tier = req["approval_tier"]
        if a is None:
            return {"state": "not_needed" if tier == "auto" else "pending", "tier": tier, "requested": False,
                    "approver": None, "role": None, "decided_at": None, "requested_at": None,
                    "waiting_seconds": None}
        return {"state": a["state"], "tier": tier, "requested": True, "approver": a["approver"], "role": a["role"],
                "decided_at": _iso(a["decided_at"]), "requested_at": _iso(a["requested_at"]),
                "waiting_seconds": round(float(a["waiting"]), 3) if a["state"] == "pending" else None}

    def _describe(self, c, r) -> dict:
        order = {s: i for i, s in enumerate((*STEPS, "rollback"))}
        steps = sorted(self._steps(c, r["id"]).values(), key=lambda s: order.get(s["step"], 99))
        return {
            "id": r["id"], "status": r["status"], "customer": r["customer"], "title": r["title"],
            "attendees": r["attendees"], "starts_at": _iso(r["starts_at"]), "venue": r["venue"],
            "channel": r["channel"],
            "classification": {"type": r["event_type"], "size": r["size"], "priority": r["priority"]},
            "approval_tier": r["approval_tier"], "approval": self._approval(c, r),
            "steps": [{"step": s["step"], "state": s["state"], "started_at": _iso(s["started_at"]),
                       "finished_at": _iso(s["finished_at"]), "error": s["error"], "attempts": s["attempts"],
                       "run_id": s["run_id"]} for s in steps],
            "template_id": r["template_id"], "event_id": r["event_id"], "dashboard_url": r["dashboard_url"],
            "error": r["error"], "created_at": _iso(r["created_at"]), "completed_at": _iso(r["completed_at"]),
            "manual_steps": r["manual_steps"],
        }

    # -------------------------------------------------------------- HTTP
    def handle(self, req: Request) -> Response:
        """The routes under /api/v1/event-requests (docs/demo.md); errors as JSON. The web form
        (GET .../form, and a POST of it, form-encoded) answers HTML."""
        p = req.path.rstrip("/")
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if p == PREFIX + "/form":
            if req.method in ("GET", "HEAD"):
                return _html(200, form_page())
            return Response(405, {"error": "method not allowed"}, headers={"Allow": "GET"})
        if p == PREFIX and req.method == "POST" and ctype == "application/x-www-form-urlencoded":
            return self._form_post(req)
        try:
            status, body = self._route(req)
        except ApiError as exc:
            return Response(exc.status, exc.body)
        return Response(status, body)

    def _route(self, req: Request) -> tuple[int, dict]:
        p, m = req.path.rstrip("/"), req.method
        rest = p[len(PREFIX):]
        if rest == "":
            if m == "POST":
                return 201, self.intake(_body(req))
            if m in ("GET", "HEAD"):
                status = _query(req, "status")
                limit = _query(req, "limit")
                if limit is not None and not (limit.isdigit() and len(limit) <= 6):
                    raise Invalid("'limit' must be a whole number", missing=[], invalid={"limit": "bad value"})
                return 200, {"requests": self.list(status or None, int(limit) if limit else 100)}
            raise _method(m, p)
        if rest == "/stats":
            if m in ("GET", "HEAD"):
                return 200, self.stats()
            raise _method(m, p)
        match = re.fullmatch(r"/([0-9]{1,15})(/steps/([a-z]{1,20})|/approval|/rollback|/dashboard)?", rest)
        if not match:
            raise NotFound(f"no route {p[:120]!r}; see docs/demo.md")
        rid, sub, step = int(match.group(1)), match.group(2) or "", match.group(3)
        if sub == "":
            if m in ("GET", "HEAD"):
                return 200, self.get(rid)
        elif step is not None:
            if m == "POST":
                return 200, self.step(rid, step, _body(req))
        elif sub == "/approval":
            if m in ("GET", "HEAD"):
                return 200, self.approval(rid)
            if m == "POST":
                return 200, self.decide(rid, _body(req))
        elif sub == "/rollback":
            if m == "POST":
                return 200, self.rollback(rid, _body(req))
        elif sub == "/dashboard":
            if m in ("GET", "HEAD"):
                return 200, self.dashboard(rid)
        raise _method(m, p)


    def _form_post(self, req: Request) -> Response:
        """The web form's POST: the same intake as the JSON API (channel "web"); success is a
        303 to the request's status, a refusal the form again with what was wrong."""
        try:
            fields = urllib.parse.parse_qs(req.body.decode("utf-8"), max_num_fields=len(FORM_FIELDS) + 4)
        except (UnicodeDecodeError, ValueError):
            return _html(400, form_page(["the form could not be read (UTF-8, at most a few fields)"]))
        data: dict = {k: v[0] for k, v in fields.items() if k in FORM_FIELDS and v}
        if re.fullmatch(r"[0-9]{1,7}", data.get("attendees", "")):
            data["attendees"] = int(data["attendees"])
        data["channel"] = "web"
        try:
            doc = self.intake(data)
        except ApiError as exc:
            body = exc.body
            problems = [str(body.get("error", "refused"))]
            problems += [f"missing: {m}" for m in body.get("missing") or []]
            problems += [f"{k}: {v}" for k, v in (body.get("invalid") or {}).items()]
            if body.get("duplicate_of"):
                problems.append(f"the same request is open already: #{body['duplicate_of']}")
            return _html(exc.status, form_page(problems, data))
        return Response(303, {"id": doc["id"], "status": doc["status"]},
                        headers={"Location": f"{PREFIX}/{int(doc['id'])}"})


FORM_FIELDS = {"customer": "Customer", "title": "Event title", "event_type": "Type (optional)",
               "attendees": "Attendees", "starts_at": "Starts at (ISO 8601, e.g. 2027-03-01T10:00:00+09:00)",
               "venue": "Venue (optional)", "contact_email": "Contact e-mail",
               "contact_phone": "Contact phone (optional, for an SMS)"}
FORM_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"


def form_page(problems: list[str] | None = None, values: dict | None = None) -> str:
    """The intake form; what the user typed and every message are escaped (pure)."""
    e = html.escape
    values = values or {}
    errs = "".join(f"<li>{e(str(p)[:300])}</li>" for p in problems or [])
    rows = "".join(
        f'<p><label>{e(label)}<br><input name="{name}" value="{e(str(values.get(name, ""))[:300])}"'
        f'{" required" if name in ("customer", "title", "attendees", "starts_at", "contact_email") else ""}>'
        f"</label></p>" for name, label in FORM_FIELDS.items())
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Request an event</title>'
            "<style>body{font-family:sans-serif;max-width:40em;margin:1em auto}input{width:100%}"
            ".err{color:#b00}</style></head><body><h1>Request an event</h1>"
            + (f'<ul class="err">{errs}</ul>' if errs else "")
            + f'<form method="post" action="{PREFIX}" enctype="application/x-www-form-urlencoded">{rows}'
            '<p><button type="submit">Send the request</button></p></form></body></html>')


def _html(status: int, page: str) -> Response:
    return Response(status, page, content_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": FORM_CSP, "X-Content-Type-Options": "nosniff",
                             "Cache-Control": "no-store"})


def _order_problem(step: str, status: str) -> str:
    need = REQUIRES[step]
    if step == "configure" and status == "awaiting_approval":
        return "the request is waiting for approval"
    if status in ("rejected", "failed", "completed"):
        return f"the request is {status}: step {step} cannot run"
    before = STEPS[STEPS.index(step) - 1] if step != "classify" else None
    return (f"step {step} needs the request {need}" + (f" (run {before} first)" if before else "")
            + f"; it is {status}")


def _method(m: str, p: str) -> ApiError:
    err = ApiError(f"method {m[:10]} not allowed on {p[:120]}")
    err.status = 405
    return err


def _query(req: Request, key: str) -> str | None:
    v = req.query.get(key)
    if not v:
        return None
    if len(v) > 1 or len(v[0]) > 40:
        raise Invalid(f"bad query parameter {key!r}", missing=[], invalid={key: "bad value"})
    return v[0]


def _body(req: Request) -> dict:
    ctype = (req.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
    if req.body.strip() and ctype != "application/json":
        raise ApiError("the body must be JSON (Content-Type: application/json)")
    try:
        return req.json()
    except (ValueError, RecursionError):
        raise BadRequest("the body is not a JSON object") from None


def from_views(demo, database, stack, admin_port: int | None) -> EventRequests | None:
    """The store of the Event Management service (``demo``, ``database``, ``stack``: the views
    of those sections), or None when no database is configured. The confirmation goes to the
    demo mail sink (stack.ports.mailsink_smtp) when it runs."""
    url = database.url or os.environ.get("OPSSTACK_DATABASE_URL")
    if not url:
        return None
    port = stack.ports.mailsink_smtp
    smtp = (stack.host, port) if demo.mailsink and isinstance(port, int) else None
    public = f"http://{stack.host}:{admin_port}" if admin_port else None
    web = stack.ports.mailsink_web
    sms = f"http://{stack.host}:{web}/api/sms" if demo.mailsink and isinstance(web, int) else None
    return EventRequests(url, smtp=smtp, public_url=public, name=database.name, sms_url=sms)


def serves(svc) -> bool:
    """Whether platform service ``svc`` (a view of one platform.services item) is Event Management."""
    return svc.name == SERVICE or (svc.display_name or "").casefold() == "event management"
