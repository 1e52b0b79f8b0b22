"""Notifications: a durable outbox in PostgreSQL and three channel types.

Ticket changes insert rows into ``ticket_notifications`` in the same transaction as the
change (so a notification is never lost and never blocks ticket handling); the scheduler sends
them through the shared outbox (core/outbox.py): a send that fails for any reason
fails its own row only (exponential backoff, then ``failed`` after ``max_attempts``, counted in
``opsstack_tickets_notification_failures_total``, listed on the ticket in the API and console).
Header values never carry raw label text (webhook_receiver/sanitize.py), recipients come only
from the channel config and the directory, and Slack text is escaped (& < >). A unique
``dedup_key`` per (ticket, episode, change, level, channel) means one message per change that
matters. Messages of one ticket
on one channel go out in order and form a thread (e-mail In-Reply-To, Slack thread_ts); the
resolved message closes it.

Channels: ``smtp`` (e-mail), ``slack`` (incoming webhook, or chat.postMessage with a token
and channel for threads), ``webhook`` (generic JSON POST, e.g. an SMS gateway or chat tool).
"""
from __future__ import annotations

import json
import logging
import smtplib
import ssl
import uuid
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import requests
from psycopg.types.json import Jsonb

from core import outbox
from webhook_receiver.sanitize import email_address, header_value, slack_mention, slack_text
from webhook_receiver.ticket_store import add_event, public

log = logging.getLogger(__name__)

KINDS = ("opened", "escalated", "acknowledged", "reassigned", "reopened", "resolved")
SEVERITY_COLOR = {"critical": "#d0021b", "warning": "#f5a623", "info": "#4a90e2"}


class SendError(RuntimeError):
    pass


def _dedup_key(t: dict, kind: str, channel: str, event_id: int | None) -> str:
    base = f"{t['id']}:{t['reopened_count']}:{kind}"
    if kind == "escalated":
        base += f":{t['level']}:{t['repeats']}"
    elif kind == "reassigned":
        base += f":{event_id}"
    return f"{base}:{channel}"


def channels_for(ncfg, severity: str, level: int) -> list[str]:
    """Channel names of every rule that matches (pure); ``ncfg``: the typed notifications view."""
    out: list[str] = []
    for r in ncfg.rules:
        if severity in r.severities and level in [int(x) for x in r.levels]:
            out.extend(c for c in r.channels if c not in out)
    return out


def enqueue(ctx, conn, t: dict, kind: str, reason: str | None = None, actor: str | None = None,
            event_id: int | None = None) -> int:
    """Queue the messages for a ticket change; returns how many were offered (duplicates are dropped)."""
    ncfg = ctx.notifications
    if not ncfg.enabled or not ncfg.channels:
        return 0
    chans = channels_for(ncfg, t["severity"], t["level"])
    if kind in ("acknowledged", "resolved", "reassigned"):
        # whoever heard about the ticket hears that it is handled
        for r in conn.execute("select distinct channel from ticket_notifications where ticket_id = %s",
                              (t["id"],)).fetchall():
            if r["channel"] not in chans:
                chans.append(r["channel"])
    if not chans:
        return 0
    pol = ctx.policy(t["policy"])
    person = ctx.directory.person(t["assignee"])
    payload = {"kind": kind, "ticket": public(t), "level": t["level"], "level_name": pol.level(t["level"]).name,
               "person": person, "reason": reason, "actor": actor, "console_url": ncfg.console_url}
    n = 0
    known = {c.name for c in ncfg.channels}
    for ch in chans:
        if ch not in known:
            continue
        conn.execute(
            """insert into ticket_notifications (ticket_id, channel, kind, dedup_key, recipient, payload)
               values (%s, %s, %s, %s, %s, %s) on conflict (dedup_key) do nothing""",
            (t["id"], ch, kind, _dedup_key(t, kind, ch, event_id), t["assignee"], Jsonb(payload)))
        n += 1
    return n


_INSERT_MANY = """
    insert into ticket_notifications (ticket_id, channel, kind, dedup_key, recipient, payload)
    select r.ticket_id, r.channel, r.kind, r.dedup_key, r.recipient, r.payload
    from jsonb_to_recordset(%s::jsonb) r(ticket_id bigint, channel text, kind text, dedup_key text, recipient text,
                                         payload jsonb)
    on conflict (dedup_key) do nothing"""


def enqueue_many(ctx, conn, items: list[tuple[dict, str]]) -> int:
    """``enqueue`` for many (ticket, kind) changes at once (no reason, actor or event id: what
    ingest queues): one read of the channels that carried the handled tickets, ONE insert; the same
    rows, channels and dedup keys as ``enqueue`` one by one. Returns how many were offered."""
    ncfg = ctx.notifications
    if not items or not ncfg.enabled or not ncfg.channels:
        return 0
    handled = sorted({t["id"] for t, kind in items if kind in ("acknowledged", "resolved", "reassigned")})
    carried: dict[int, list[str]] = {}
    if handled:
        for r in conn.execute("select distinct ticket_id, channel from ticket_notifications "
                              "where ticket_id = any(%s)", (handled,)).fetchall():
            carried.setdefault(r["ticket_id"], []).append(r["channel"])
    known = {c.name for c in ncfg.channels}
    rows = []
    for t, kind in items:
        chans = channels_for(ncfg, t["severity"], t["level"])
        if kind in ("acknowledged", "resolved", "reassigned"):
            chans += [c for c in carried.get(t["id"], ()) if c not in chans]
        chans = [c for c in chans if c in known]
        if not chans:
            continue
        pol = ctx.policy(t["policy"])
        payload = {"kind": kind, "ticket": public(t), "level": t["level"], "level_name": pol.level(t["level"]).name,
                   "person": ctx.directory.person(t["assignee"]), "reason": None, "actor": None,
                   "console_url": ncfg.console_url}
        rows += [{"ticket_id": t["id"], "channel": ch, "kind": kind, "dedup_key": _dedup_key(t, kind, ch, None),
                  "recipient": t["assignee"], "payload": payload} for ch in chans]
    if rows:
        conn.execute(_INSERT_MANY, (json.dumps(rows, default=str),))
    return len(rows)


# --- formatting (pure) -----------------------------------------------------------------------


def subject(p: dict) -> str:
    t = p["ticket"]
    tag = {"resolved": "RESOLVED", "acknowledged": "ACK"}.get(p["kind"], (t["severity"] or "alert").upper())
    svc = f" on {t['service']}" if t["service"] else ""
    return f"[{tag}] #{t['id']} {t['alertname']}{svc} ({p['kind']}, {p['level_name']})"


def text(p: dict) -> str:
    t = p["ticket"]
    lines = [subject(p)]
    if t.get("summary"):
        lines.append(t["summary"])
    desc = (t.get("annotations") or {}).get("description")
    if desc:
        lines.append(desc)
    lines.append(f"Owner: {p['person'].get('name') or 'nobody'}   Level: {p['level_name']}   Status: {t['status']}")
    if p.get("reason"):
        lines.append(f"Reason: {p['reason']}")
    if p.get("actor"):
        lines.append(f"By: {p['actor']}")
    if (t.get("annotations") or {}).get("runbook_url"):
        lines.append(f"Runbook: {t['annotations']['runbook_url']}")
    if p.get("console_url"):
        lines.append(f"Console: {p['console_url'].rstrip('/')}/console/tickets/{t['id']}")
    return "\n".join(lines)


# --- senders --------------------------------------------------------------------------------


def _read_secret(path: str | None) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


# ``ch``: one channel of the typed notifications view (attributes; ``headers`` a read-only mapping)


def send_smtp(ch, p: dict, thread_ref: str | None) -> str | None:
    # recipients come from the channel's config and the directory (the owner's address), each
    # checked to be one plain address: nothing an alert carries can add a recipient or a header
    to = [a for a in (email_address(x) for x in ch.to) if a]
    email = email_address(p["person"].get("email"))
    if ch.to_owner and email and email not in to:
        to.append(email)
    if not to:
        raise SendError("no recipients (set to: or give the owner an email)")
    msg = EmailMessage()
    msg["Subject"] = header_value(subject(p), 900)
    msg["From"] = header_value(ch.sender, 300)
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg_id = make_msgid(domain="opsstack")
    msg["Message-ID"] = msg_id
    if thread_ref:
        msg["In-Reply-To"] = header_value(thread_ref, 300)
        msg["References"] = header_value(thread_ref, 300)
    msg["X-Opsstack-Ticket"] = str(int(p["ticket"]["id"]))
    msg.set_content(text(p))
    try:
        with smtplib.SMTP(ch.smtp_host, ch.smtp_port, timeout=ch.timeout) as s:
            if ch.starttls:
                s.starttls(context=ssl.create_default_context())
            if ch.username:
                s.login(ch.username, _read_secret(ch.password_file) or "")
            s.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise SendError(f"smtp {ch.smtp_host}:{ch.smtp_port}: {exc}") from None
    return thread_ref or msg_id


def _post(ch, body: dict) -> requests.Response:
    headers = {"Content-Type": "application/json",
               **{header_value(k, 200): header_value(v) for k, v in ch.headers.items()}}
    tok = _read_secret(ch.token_file)
    if tok:
        headers["Authorization"] = f"Bearer {header_value(tok)}"
    try:
        r = requests.post(ch.url, data=json.dumps(body), headers=headers, timeout=ch.timeout)
    except requests.RequestException as exc:
        raise SendError(f"POST {ch.name}: {type(exc).__name__}") from None
    if not 200 <= r.status_code < 300:
        raise SendError(f"POST {ch.name}: HTTP {r.status_code}")
    return r


def send_slack(ch, p: dict, thread_ref: str | None) -> str | None:
    # every label- or annotation-derived text is escaped (& < >) as Slack's formatting rules say,
    # so <!channel>, <@U...> or <https://evil|text> in an alert are shown as text; the only
    # mention is ours: the owner's Slack id from the directory
    t = p["ticket"]
    mention = slack_mention(p["person"].get("slack")) if p["kind"] in ("opened", "escalated", "reopened") else ""
    body = {
        "text": slack_text(subject(p)) + (f" {mention}" if mention else ""),
        "attachments": [{"color": "#2eb886" if p["kind"] == "resolved" else SEVERITY_COLOR.get(t["severity"], "#888888"),
                         "title": slack_text(f"#{t['id']} {t['alertname']}"), "text": slack_text(text(p)),
                         "fallback": slack_text(subject(p))}],
    }
    if ch.channel:  # chat.postMessage: threads work
        body["channel"] = ch.channel
        if thread_ref:
            body["thread_ts"] = thread_ref
            if p["kind"] == "resolved":
                body["reply_broadcast"] = True
    r = _post(ch, body)
    if ch.channel:
        try:
            data = r.json()
        except ValueError:
            raise SendError(f"slack {ch.name}: response is not JSON") from None
        if not data.get("ok"):
            raise SendError(f"slack {ch.name}: {data.get('error', 'not ok')}")
        return thread_ref or data.get("ts")
    return thread_ref


def send_webhook(ch, p: dict, thread_ref: str | None) -> str | None:
    body = {"version": "1", "kind": p["kind"], "ticket": p["ticket"], "level": p["level"],
            "level_name": p["level_name"], "person": p["person"], "reason": p.get("reason"),
            "actor": p.get("actor"), "message": text(p), "subject": subject(p),
            "thread": thread_ref or f"opsstack-ticket-{p['ticket']['id']}-{uuid.uuid4().hex[:8]}"}
    _post(ch, body)
    return body["thread"]


SENDERS = {"smtp": send_smtp, "slack": send_slack, "webhook": send_webhook}


def backoff(ncfg, attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1-based): exponential, capped (pure)."""
    return outbox.backoff(ncfg.initial_backoff, ncfg.max_backoff, attempts)


def queue(ncfg) -> outbox.Queue:
    return outbox.Queue(name="notifications", table="ticket_notifications", key=("ticket_id", "channel"),
                        info=("ticket_id", "channel", "kind", "recipient"), done_status="sent", done_at="sent_at",
                        max_attempts=ncfg.max_attempts, initial_backoff=ncfg.initial_backoff,
                        max_backoff=ncfg.max_backoff, error_limit=500)


def run_outbox(ctx, conn, now: datetime | None = None, batch: int = 50) -> int:
    """Send due notifications, one row per transaction, through the shared outbox: a send that
    fails for any reason fails its own row (backoff, then ``failed``), never the queue."""
    ncfg = ctx.notifications
    chans = {c.name: c for c in ncfg.channels}

    def deliver(conn, n: dict) -> None:
        ch = chans.get(n["channel"])
        if ch is None:
            raise outbox.Permanent(f"channel {n['channel']!r} is no longer configured")
        th = conn.execute("select thread_ref from ticket_threads where ticket_id = %s and channel = %s",
                          (n["ticket_id"], n["channel"])).fetchone()
        ref = SENDERS[ch.type](ch, n["payload"], th["thread_ref"] if th else None)
        if n["kind"] == "resolved":
            conn.execute("delete from ticket_threads where ticket_id = %s and channel = %s",
                         (n["ticket_id"], n["channel"]))
        elif ref:
            conn.execute("""insert into ticket_threads (ticket_id, channel, thread_ref) values (%s, %s, %s)
                            on conflict (ticket_id, channel) do nothing""", (n["ticket_id"], n["channel"], ref))
        add_event(conn, n["ticket_id"], "notified", "notifier",
                  {"channel": n["channel"], "kind": n["kind"], "recipient": n["recipient"],
                   "attempts": n["attempts"] + 1})

    def on_failed(conn, n: dict, error: str, attempts: int, final: bool) -> None:
        log.warning("event=notification_failed id=%s ticket_id=%s channel=%s attempt=%s final=%s error=%r",
                    n["id"], n["ticket_id"], n["channel"], attempts, final, error)
        if final:
            add_event(conn, n["ticket_id"], "notification_failed", "notifier",
                      {"channel": n["channel"], "kind": n["kind"], "attempts": attempts, "error": error[:500]})

    return outbox.run_due(conn, queue(ncfg), deliver, now=now, batch=batch, on_failed=on_failed)


def deliveries(conn, ticket_id: int, failed_only: bool = False) -> list[dict]:
    """The notification rows of a ticket (for the API and the console), oldest first."""
    rows = conn.execute(
        """select id, channel, kind, status, attempts, last_error, created_at, next_attempt_at, sent_at
           from ticket_notifications where ticket_id = %s""" + (" and status = 'failed'" if failed_only else "")
        + " order by id", (ticket_id,)).fetchall()
    return [dict(r) for r in rows]
