"""A local mail sink for the demo stack: an SMTP server that keeps what it receives in memory,
and a web page (plus JSON) that lists it.

`opsstack up` starts it (`opsstack demo mailsink`, supervised like the other programs) and,
when no notification channel is configured, makes it the receiver's SMTP channel, so the
L1 -> L2 -> L3 pages of a demo fault arrive somewhere a newcomer can see them
(docs/demo.md, "Mail sink").

- SMTP on ``stack.host:stack.ports.mailsink_smtp`` (aiosmtpd; no auth, no relay: nothing is
  ever sent on); at most ``MAX_MESSAGE_BYTES`` a message, the newest ``KEEP`` messages kept.
- ``GET /`` an HTML page, newest first: time, subject, from, to, body. Every value is
  HTML-escaped (the subject and body carry alert text, which anyone who can fire an alert
  controls); the page runs no script (CSP). ``GET /api/messages`` the same as JSON
  (``{"messages": [...]}``, newest first); ``GET /health``.
- An SMS gateway for the demo's text messages (the event-request confirmation): ``POST /api/sms``
  ``{"to": "+82...", "body": "...", "from"?: "..."}`` (a phone number of digits with an optional
  leading +, a body of at most ``MAX_SMS_CHARS``) answers 201 ``{"id"}``; ``GET /api/sms`` lists
  them (``{"messages": [...]}``, newest first). Nothing is ever sent on.
"""
from __future__ import annotations

import email
import email.policy
import html
import itertools
import logging
import re
import threading
from collections import deque
from datetime import datetime, timezone

from aiosmtpd.controller import Controller

from demo.http import Listener, Request, Response

MAX_SMS_CHARS = 1600   # ten concatenated segments
SMS_NUMBER = re.compile(r"^\+?[0-9]{4,16}$")

log = logging.getLogger("opsstack.demo.mailsink")

KEEP = 500
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_BODY_CHARS = 64 * 1024
CSP = ("default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src 'none'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


class Mailbox:
    """The received messages (thread-safe, bounded)."""

    def __init__(self, keep: int = KEEP):
        self._msgs: deque[dict] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def add(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> dict:
        msg = parse(data)
        msg.update(id=next(self._ids), received_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   envelope_from=mail_from, envelope_to=list(rcpt_tos), size=len(data))
        with self._lock:
            self._msgs.append(msg)
        return msg

    def newest_first(self) -> list[dict]:
        with self._lock:
            return list(reversed(self._msgs))


def parse(data: bytes) -> dict:
    """Subject, From, To, Date and the text body of a raw message (pure)."""
    m = email.message_from_bytes(data, policy=email.policy.default)
    part = m.get_body(preferencelist=("plain", "html")) if m.is_multipart() else m
    try:
        body = part.get_content() if part is not None else ""
    except (LookupError, ValueError):
        body = (part.get_payload(decode=True) or b"").decode("utf-8", "replace") if part is not None else ""
    if not isinstance(body, str):
        body = ""
    return {"subject": str(m.get("Subject", "")), "from": str(m.get("From", "")), "to": str(m.get("To", "")),
            "date": str(m.get("Date", "")), "message_id": str(m.get("Message-ID", "")),
            "in_reply_to": str(m.get("In-Reply-To", "")), "body": body[:MAX_BODY_CHARS]}


class _Handler:
    def __init__(self, box: Mailbox):
        self.box = box

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        msg = self.box.add(envelope.mail_from or "", list(envelope.rcpt_tos), data)
        log.info("event=mail_received id=%s size=%d rcpts=%d", msg["id"], msg["size"], len(msg["envelope_to"]))
        return "250 Message accepted"


def page(messages: list[dict]) -> str:
    """The HTML list, newest first; every value escaped (pure)."""
    e = html.escape
    rows = []
    for m in messages:
        rows.append(
            f'<article class="mail" id="mail-{int(m["id"])}"><h2>{e(m["subject"]) or "(no subject)"}</h2>'
            f'<p class="meta"><time>{e(m["received_at"])}</time> &middot; from {e(m["from"] or m["envelope_from"])}'
            f' &middot; to {e(", ".join(m["envelope_to"]))}</p><pre>{e(m["body"])}</pre></article>')
    body = "\n".join(rows) or "<p>No mail yet. Notifications of tickets arrive here.</p>"
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>opsstack mailbox</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em}"
            ".mail{border-bottom:1px solid #ccc}.meta{color:#555}pre{white-space:pre-wrap}</style></head>"
            f"<body><h1>opsstack mailbox</h1><p>{len(messages)} message(s), newest first.</p>{body}</body></html>")


class MailSink:
    """SMTP server + web page on loopback ports; ``start()``/``stop()``."""

    def __init__(self, host: str, smtp_port: int, web_port: int, keep: int = KEEP):
        self.box = Mailbox(keep)
        self.host = host
        self.smtp_port = smtp_port
        self.web_port = web_port
        self._smtp = Controller(_Handler(self.box), hostname=host, port=smtp_port,
                                data_size_limit=MAX_MESSAGE_BYTES, ready_timeout=30)
        self._web = Listener("mailsink", host, web_port, self.app)
        self.sms: deque = deque(maxlen=keep)
        self._sms_ids = itertools.count(1)
        self._sms_lock = threading.Lock()

    def app(self, req: Request) -> Response:
        if req.path == "/api/sms":
            return self._sms(req)
        if req.method not in ("GET", "HEAD"):
            return Response(405, {"error": "method not allowed"}, headers={"Allow": "GET"})
        if req.path == "/health":
            return Response(200, {"status": "ok"})
        if req.path == "/api/messages":
            return Response(200, {"messages": self.box.newest_first()})
        if req.path == "/":
            return Response(200, page(self.box.newest_first()), content_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                     "Cache-Control": "no-store"})
        return Response(404, {"error": "not found"})

    def _sms(self, req: Request) -> Response:
        if req.method in ("GET", "HEAD"):
            with self._sms_lock:
                return Response(200, {"messages": list(reversed(self.sms))})
        if req.method != "POST":
            return Response(405, {"error": "method not allowed"}, headers={"Allow": "GET, POST"})
        if len(req.body) > 4 * MAX_SMS_CHARS:
            return Response(413, {"error": "body too large"})
        try:
            data = req.json()
        except (ValueError, RecursionError):
            return Response(400, {"error": "the body must be a JSON object"})
        to, body, sender = data.get("to"), data.get("body"), data.get("from", "")
        problems = {}
        if not isinstance(to, str) or not SMS_NUMBER.match(to):
            problems["to"] = "a phone number: digits with an optional leading +"
        if not isinstance(body, str) or not body or len(body) > MAX_SMS_CHARS:
            problems["body"] = f"text of 1..{MAX_SMS_CHARS} characters"
        if not isinstance(sender, str) or len(sender) > 32:
            problems["from"] = "at most 32 characters"
        if problems:
            return Response(422, {"error": "invalid SMS", "invalid": problems})
        with self._sms_lock:
            msg = {"id": next(self._sms_ids), "to": to, "from": sender, "body": body,
                   "received_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            self.sms.append(msg)
        log.info("event=sms_received id=%d chars=%d", msg["id"], len(body))
        return Response(201, {"id": msg["id"]})

    def start(self) -> "MailSink":
        self._smtp.start()
        self._web.open()
        log.info("event=mailsink_started smtp=%s:%d web=%s:%d", self.host, self.smtp_port, self.host, self.web_port)
        return self

    def stop(self) -> None:
        self._web.close()
        try:
            self._smtp.stop()
        except (AssertionError, RuntimeError):  # never started
            pass
