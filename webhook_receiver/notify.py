"""Notifications: a durable outbox in PostgreSQL and three channel types.

Ticket changes insert rows into ``ticket_notifications`` in the same transaction as the
change (so a notification is never lost and never blocks ticket handling); a loop sends
them with retries and exponential backoff. A unique ``dedup_key`` per (ticket, episode,
change, level, channel) means one message per change that matters. Messages of one ticket
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
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import requests
from psycopg.types.json import Jsonb

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


def channels_for(ncfg: dict, severity: str, level: int) -> list[str]:
    """Channel names of every rule that matches (pure)."""
    out: list[str] = []
    for r in ncfg["rules"]:
        if severity in r["severities"] and level in [int(x) for x in r["levels"]]:
            out.extend(c for c in r["channels"] if c not in out)
    return out


def enqueue(ctx, conn, t: dict, kind: str, reason: str | None = None, actor: str | None = None,
            event_id: int | None = None) -> int:
    """Queue the messages for a ticket change; returns how many were offered (duplicates are dropped)."""
    ncfg = ctx.cfg["notifications"]
    if not ncfg["enabled"] or not ncfg["channels"]:
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
    from webhook_receiver.tickets import public

    pol = ctx.policy(t["policy"])
    person = ctx.directory.person(t["assignee"])
    payload = {"kind": kind, "ticket": public(t), "level": t["level"], "level_name": pol.level(t["level"]).name,
               "person": person, "reason": reason, "actor": actor, "console_url": ncfg["console_url"]}
    n = 0
    known = {c["name"] for c in ncfg["channels"]}
    for ch in chans:
        if ch not in known:
            continue
        conn.execute(
            """insert into ticket_notifications (ticket_id, channel, kind, dedup_key, recipient, payload)
               values (%s, %s, %s, %s, %s, %s) on conflict (dedup_key) do nothing""",
            (t["id"], ch, kind, _dedup_key(t, kind, ch, event_id), t["assignee"], Jsonb(payload)))
        n += 1
    return n


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


def send_smtp(ch: dict, p: dict, thread_ref: str | None) -> str | None:
    to = list(ch["to"])
    email = p["person"].get("email")
    if ch["to_owner"] and email and email not in to:
        to.append(email)
    if not to:
        raise SendError("no recipients (set to: or give the owner an email)")
    msg = EmailMessage()
    msg["Subject"] = subject(p)
    msg["From"] = ch["sender"]
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg_id = make_msgid(domain="opsstack")
    msg["Message-ID"] = msg_id
    if thread_ref:
        msg["In-Reply-To"] = thread_ref
        msg["References"] = thread_ref
    msg["X-Opsstack-Ticket"] = str(p["ticket"]["id"])
    msg.set_content(text(p))
    try:
        with smtplib.SMTP(ch["smtp_host"], ch["smtp_port"], timeout=ch["timeout"]) as s:
            if ch["starttls"]:
                s.starttls(context=ssl.create_default_context())
            if ch["username"]:
                s.login(ch["username"], _read_secret(ch["password_file"]) or "")
            s.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise SendError(f"smtp {ch['smtp_host']}:{ch['smtp_port']}: {exc}") from None
    return thread_ref or msg_id


def _post(ch: dict, body: dict) -> requests.Response:
    headers = {"Content-Type": "application/json", **{str(k): str(v) for k, v in ch["headers"].items()}}
    tok = _read_secret(ch["token_file"])
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    try:
        r = requests.post(ch["url"], data=json.dumps(body), headers=headers, timeout=ch["timeout"])
    except requests.RequestException as exc:
        raise SendError(f"POST {ch['name']}: {type(exc).__name__}") from None
    if not 200 <= r.status_code < 300:
        raise SendError(f"POST {ch['name']}: HTTP {r.status_code}")
    return r


def send_slack(ch: dict, p: dict, thread_ref: str | None) -> str | None:
    t = p["ticket"]
    mention = p["person"].get("slack")
    body = {
        "text": subject(p) + (f" <{mention}>" if mention and p["kind"] in ("opened", "escalated", "reopened") else ""),
        "attachments": [{"color": "#2eb886" if p["kind"] == "resolved" else SEVERITY_COLOR.get(t["severity"], "#888888"),
                         "title": f"#{t['id']} {t['alertname']}", "text": text(p), "fallback": subject(p)}],
    }
    if ch["channel"]:  # chat.postMessage: threads work
        body["channel"] = ch["channel"]
        if thread_ref:
            body["thread_ts"] = thread_ref
            if p["kind"] == "resolved":
                body["reply_broadcast"] = True
    r = _post(ch, body)
    if ch["channel"]:
        try:
            data = r.json()
        except ValueError:
            raise SendError(f"slack {ch['name']}: response is not JSON") from None
        if not data.get("ok"):
            raise SendError(f"slack {ch['name']}: {data.get('error', 'not ok')}")
        return thread_ref or data.get("ts")
    return thread_ref


def send_webhook(ch: dict, p: dict, thread_ref: str | None) -> str | None:
    body = {"version": "1", "kind": p["kind"], "ticket": p["ticket"], "level": p["level"],
            "level_name": p["level_name"], "person": p["person"], "reason": p.get("reason"),
            "actor": p.get("actor"), "message": text(p), "subject": subject(p),
            "thread": thread_ref or f"opsstack-ticket-{p['ticket']['id']}-{uuid.uuid4().hex[:8]}"}
    _post(ch, body)
    return body["thread"]


SENDERS = {"smtp": send_smtp, "slack": send_slack, "webhook": send_webhook}


def backoff(ncfg: dict, attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1-based): exponential, capped (pure)."""
    return min(ncfg["max_backoff"], ncfg["initial_backoff"] * 2 ** max(attempts - 1, 0))


def run_outbox(ctx, conn, now: datetime | None = None, batch: int = 50) -> int:
    """Send due notifications, one row per transaction (FOR UPDATE SKIP LOCKED)."""
    from webhook_receiver.escalation import utcnow
    from webhook_receiver.tickets import add_event

    ncfg = ctx.cfg["notifications"]
    chans = {c["name"]: c for c in ncfg["channels"]}
    done = 0
    for _ in range(batch):
        with conn.transaction():
            n = conn.execute(
                """select * from ticket_notifications n where status = 'pending' and next_attempt_at <= %s
                   and not exists (select 1 from ticket_notifications p where p.ticket_id = n.ticket_id
                                   and p.channel = n.channel and p.status = 'pending' and p.id < n.id)
                   order by id limit 1 for update skip locked""", (now or utcnow(),)).fetchone()
            if n is None:
                return done
            done += 1
            ch = chans.get(n["channel"])
            attempts = n["attempts"] + 1
            try:
                if ch is None:
                    raise SendError(f"channel {n['channel']!r} is no longer configured")
                th = conn.execute("select thread_ref from ticket_threads where ticket_id = %s and channel = %s",
                                  (n["ticket_id"], n["channel"])).fetchone()
                ref = SENDERS[ch["type"]](ch, n["payload"], th["thread_ref"] if th else None)
            except SendError as exc:
                final = attempts >= ncfg["max_attempts"] or ch is None
                conn.execute(
                    """update ticket_notifications set attempts = %s, last_error = %s, status = %s,
                           next_attempt_at = now() + %s where id = %s""",
                    (attempts, str(exc)[:500], "failed" if final else "pending",
                     timedelta(seconds=backoff(ncfg, attempts)), n["id"]))
                log.warning("event=notification_failed id=%s ticket_id=%s channel=%s attempt=%s final=%s error=%r",
                            n["id"], n["ticket_id"], n["channel"], attempts, final, str(exc))
                if final:
                    add_event(conn, n["ticket_id"], "notification_failed", "notifier",
                              {"channel": n["channel"], "kind": n["kind"], "attempts": attempts, "error": str(exc)[:500]})
                continue
            conn.execute("update ticket_notifications set attempts = %s, status = 'sent', sent_at = now(), "
                         "last_error = null where id = %s", (attempts, n["id"]))
            if n["kind"] == "resolved":
                conn.execute("delete from ticket_threads where ticket_id = %s and channel = %s",
                             (n["ticket_id"], n["channel"]))
            elif ref:
                conn.execute("""insert into ticket_threads (ticket_id, channel, thread_ref) values (%s, %s, %s)
                                on conflict (ticket_id, channel) do nothing""", (n["ticket_id"], n["channel"], ref))
            add_event(conn, n["ticket_id"], "notified", "notifier",
                      {"channel": n["channel"], "kind": n["kind"], "recipient": n["recipient"], "attempts": attempts})
    return done
