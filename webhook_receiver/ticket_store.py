"""The ticket store: the SQL every ticket part shares (rows, events, groups, heartbeats) and the
hook calls a transaction collects. No ticket logic and no import of the other ticket modules:
tickets, escalation, notify and heartbeat all sit on top of it.

    tickets (ingest, human actions) -> escalation (run_due, escalate_now) -> notify -> ticket_store
    heartbeat -> tickets
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from psycopg.types.json import Jsonb

from webhook_receiver.hooks import Hooks

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "alertmanager"

PUBLIC_FIELDS = ("id", "status", "alertname", "service", "severity", "tier", "team", "fingerprint",
                 "summary", "opened_at", "acknowledged_at", "acknowledged_by", "resolved_at",
                 "resolved_by", "starts_at", "reopened_count", "policy", "level", "assignee",
                 "next_escalation_at", "group_id", "labels", "annotations", "generator_url", "updated_at",
                 "incident_key", "alert_count", "firing_count")


@dataclass
class Emits:
    """Hook calls collected during a transaction: ``stage(conn)`` hands the ones not staged yet to
    the hooks' stagers inside the transaction (before the commit), ``fire()`` calls the
    subscribers after it commits (and what the stagers asked to run then)."""

    hooks: Hooks
    calls: list = field(default_factory=list)
    unstaged: list = field(default_factory=list)
    after: list = field(default_factory=list)

    def add(self, event: str, **payload) -> None:
        self.calls.append((event, payload))
        self.unstaged.append((event, payload))

    def stage(self, conn) -> None:
        """Run the stagers on the calls added since the last stage (inside the transaction)."""
        calls, self.unstaged = self.unstaged, []
        if not calls:
            return
        for fn in self.hooks.stagers():
            then = fn(conn, calls)
            if then is not None:
                self.after.append(then)

    def merge(self, other: "Emits") -> None:
        """Take over ``other``'s calls (a savepoint's, once it is released)."""
        self.calls.extend(other.calls)
        self.unstaged.extend(other.unstaged)
        self.after.extend(other.after)

    def fire(self) -> None:
        calls, self.calls = self.calls, []
        after, self.after = self.after, []
        self.unstaged = []
        for event, payload in calls:
            self.hooks.emit(event, **payload)
        for fn in after:
            try:
                fn()
            except Exception:  # noqa: BLE001 - like a subscriber: never breaks ticket handling
                log.exception("event=hook_after_commit_failed fn=%s", getattr(fn, "__qualname__", repr(fn)))


def public(t: dict | None) -> dict | None:
    if t is None:
        return None
    out = {k: t.get(k) for k in PUBLIC_FIELDS}
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
    return out


def add_event(conn, ticket_id: int, kind: str, actor: str, details: dict | None = None,
              at: datetime | None = None, returning: bool = False) -> int | None:
    sql = ("insert into ticket_events (ticket_id, kind, actor, details, at) "
           "values (%s, %s, %s, %s, coalesce(%s, now()))")
    cur = conn.execute(sql + (" returning id" if returning else ""), (ticket_id, kind, actor, Jsonb(details or {}), at))
    return cur.fetchone()["id"] if returning else None


def lock_ticket(conn, ticket_id: int) -> dict | None:
    return conn.execute("select * from tickets where id = %s for update", (ticket_id,)).fetchone()


def hook_payload(ctx, t: dict, actor: str, **extra) -> dict:
    return dict(ticket_id=t["id"], db_url=ctx.db_url, actor=actor, alertname=t["alertname"],
                service=t["service"], severity=t["severity"], fingerprint=t["fingerprint"],
                status=t["status"], level=t["level"], **extra)


def get_group(conn, group_id: int | None) -> dict | None:
    """The Alertmanager group of a ticket (truncated_alerts: alerts its last notification left out)."""
    if group_id is None:
        return None
    row = conn.execute("select id, group_key, receiver, group_labels, first_seen, last_seen, last_alert_count, "
                       "truncated_alerts, max_truncated_alerts from ticket_groups where id = %s",
                       (group_id,)).fetchone()
    if row is None:
        return None
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def heartbeat_seen(conn, name: str, now: datetime) -> int | None:
    """Record that heartbeat ``name`` arrived; returns the id of its open alarm ticket, if any."""
    row = conn.execute(
        """insert into ticket_heartbeats (alertname, last_seen) values (%s, %s)
           on conflict (alertname) do update set last_seen = greatest(ticket_heartbeats.last_seen, excluded.last_seen)
           returning alarm_ticket_id""", (name, now)).fetchone()
    return row["alarm_ticket_id"]


def clear_heartbeat_alarm(conn, name: str) -> None:
    conn.execute("update ticket_heartbeats set alarm_ticket_id = null where alertname = %s", (name,))


# --- queries --------------------------------------------------------------------------------


def list_tickets(conn, status: list[str] | None = None, severity: list[str] | None = None,
                 service: str | None = None, alertname: str | None = None, fingerprint: str | None = None,
                 group_id: int | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
    where, args = [], []
    if status:
        where.append("status = any(%s)")
        args.append(list(status))
    if severity:
        where.append("severity = any(%s)")
        args.append(list(severity))
    if fingerprint is not None:  # the ticket of that alert: its lead alert, or any alert of the incident
        where.append("(fingerprint = %s or exists (select 1 from ticket_alerts a where a.ticket_id = tickets.id "
                     "and a.fingerprint = %s))")
        args += [fingerprint, fingerprint]
    for col, val in (("service", service), ("alertname", alertname), ("group_id", group_id)):
        if val is not None:
            where.append(f"{col} = %s")
            args.append(val)
    sql = "select * from tickets"
    if where:
        sql += " where " + " and ".join(where)
    sql += " order by opened_at desc, id desc limit %s offset %s"
    return conn.execute(sql, (*args, limit, offset)).fetchall()


def get_ticket(conn, ticket_id: int) -> dict | None:
    return conn.execute("select * from tickets where id = %s", (ticket_id,)).fetchone()


def events(conn, ticket_id: int) -> list[dict]:
    return conn.execute("select id, at, kind, actor, details from ticket_events where ticket_id = %s "
                        "order by at, id", (ticket_id,)).fetchall()


ALERTS_LIMIT = 500  # alert episodes listed with one ticket (the counts say how many there are)


def alerts(conn, ticket_id: int, limit: int = ALERTS_LIMIT) -> list[dict]:
    """The incident's alert episodes, the firing ones first, at most ``limit``."""
    return conn.execute("select fingerprint, starts_at, ends_at, status, labels, annotations, group_id, "
                        "first_seen, last_seen from ticket_alerts where ticket_id = %s "
                        "order by status = 'firing' desc, starts_at, fingerprint limit %s",
                        (ticket_id, limit)).fetchall()


def alert_counts(conn, ticket_id: int) -> dict:
    """How many alerts (fingerprints) and episodes the incident holds, firing and resolved."""
    return conn.execute("select count(distinct fingerprint) alerts, count(*) episodes, "
                        "count(*) filter (where status = 'firing') firing, "
                        "count(*) filter (where status = 'resolved') resolved "
                        "from ticket_alerts where ticket_id = %s", (ticket_id,)).fetchone()
