"""Notifications through real local servers: SMTP (aiosmtpd), a Slack-compatible API and a
generic webhook, both plain HTTP servers that check the documented request shapes."""
from __future__ import annotations

import email
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from aiosmtpd.controller import Controller

from stack.procs import free_port
from webhook_receiver import escalation, notify, scheduler
from webhook_receiver import testing as T
from webhook_receiver.app import close_app, create_app, state

pytestmark = pytest.mark.integration


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp():
    box = Mailbox()
    c = Controller(box, hostname="127.0.0.1", port=free_port())
    c.start()
    box.port = c.port
    yield box
    c.stop()


class FakeHTTP:
    """Slack chat.postMessage (https://api.slack.com/methods/chat.postMessage) and a generic webhook."""

    def __init__(self):
        self.slack, self.hooks, self.problems = [], [], []
        self.fail_next = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    outer.problems.append("content type")
                try:
                    data = json.loads(body)
                except ValueError:
                    outer.problems.append("not json")
                    data = {}
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                if self.path == "/api/chat.postMessage":
                    if self.headers.get("Authorization") != "Bearer xoxb-test":
                        outer.problems.append("slack auth")
                    if not isinstance(data.get("channel"), str) or not isinstance(data.get("text"), str):
                        outer.problems.append("slack shape")
                    for a in data.get("attachments", []):
                        if not isinstance(a.get("text"), str) or not isinstance(a.get("color"), str):
                            outer.problems.append("attachment shape")
                    outer.slack.append(data)
                    ts = data.get("thread_ts") or f"1700000000.{len(outer.slack):06d}"
                    out = json.dumps({"ok": True, "channel": "C1", "ts": ts}).encode()
                elif self.path == "/sms":
                    if self.headers.get("X-Gateway-Key") != "k1":
                        outer.problems.append("webhook header")
                    for k in ("version", "kind", "ticket", "level", "person", "message"):
                        if k not in data:
                            outer.problems.append(f"webhook lacks {k}")
                    outer.hooks.append(data)
                    out = b"{}"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakeHTTP()
    yield f
    f.close()


@pytest.fixture
def app(pg_db, smtp, fake, tmp_path):
    tok = tmp_path / "slack_token"
    tok.write_text("xoxb-test\n")
    cfg = T.config(pg_db, notifications={
        "channels": [
            {"name": "mail", "type": "smtp", "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
             "to": ["ops-list@example.com"]},
            {"name": "chat", "type": "slack", "url": fake.url + "/api/chat.postMessage", "channel": "#incidents",
             "token_file": str(tok)},
            {"name": "sms", "type": "webhook", "url": fake.url + "/sms", "headers": {"X-Gateway-Key": "k1"}},
        ],
        "rules": [{"severities": ["critical"], "levels": [1, 2, 3], "channels": ["chat", "mail"]},
                  {"severities": ["critical"], "levels": [3], "channels": ["sms"]},
                  {"severities": ["warning"], "levels": [1, 2, 3], "channels": ["mail"]}],
        "initial_backoff": "1s", "max_backoff": "4s", "max_attempts": 3,
        "console_url": "http://127.0.0.1:9095"})
    a = create_app(cfg)
    yield a
    close_app(a)


def post(client, body):
    r = client.post("/webhook/alertmanager", data=json.dumps(body), headers=T.auth())
    assert r.status_code == 200
    return r.get_json()


def later(s):
    return escalation.utcnow() + timedelta(seconds=s)


def test_one_message_per_change_threads_and_resolved_closes(app, smtp, fake):
    st, c = state(app), app.test_client()
    a = T.alert()
    [tid] = post(c, T.payload([a]))["opened"]
    post(c, T.payload([a]))  # the same state again: no new message
    scheduler.tick(st)
    scheduler.tick(st)
    assert len(fake.slack) == 1 and len(smtp.messages) == 1 and fake.hooks == []
    rcpt, msg = smtp.messages[0]
    assert sorted(rcpt) == ["ops-list@example.com", "ops-oncall@example.com"]
    assert msg["Subject"].startswith(f"[CRITICAL] #{tid} ServiceDown on user-app (opened")
    assert "Console: http://127.0.0.1:9095/console/tickets/" in msg.get_payload()
    first_id = msg["Message-ID"]
    assert fake.slack[0]["channel"] == "#incidents" and "thread_ts" not in fake.slack[0]

    scheduler.tick(st, now=later(301))      # -> L2: chat + mail again, in the thread
    scheduler.tick(st, now=later(301))
    assert len(fake.slack) == 2 and len(smtp.messages) == 2
    assert fake.slack[1]["thread_ts"] == "1700000000.000001"
    assert smtp.messages[1][1]["In-Reply-To"] == first_id
    scheduler.tick(st, now=later(300 + 900 + 1))  # -> L3: the SMS webhook joins
    scheduler.tick(st, now=later(300 + 900 + 1))
    assert len(fake.hooks) == 1 and fake.hooks[0]["level"] == 3 and fake.hooks[0]["person"]["name"] == "cto"

    post(c, T.payload([T.resolved(a)]))
    scheduler.tick(st)
    assert [m["text"].split()[0] for m in fake.slack] == ["[CRITICAL]", "[CRITICAL]", "[CRITICAL]", "[RESOLVED]"]
    assert fake.slack[-1]["thread_ts"] == "1700000000.000001" and fake.slack[-1]["reply_broadcast"] is True
    assert fake.hooks[-1]["kind"] == "resolved"
    assert smtp.messages[-1][1]["Subject"].startswith("[RESOLVED]")
    assert fake.problems == []
    with psycopg.connect(st.db.url) as conn:  # the thread is closed: nothing left for this ticket
        assert conn.execute("select count(*) from ticket_threads").fetchone()[0] == 0
    kinds = [e["kind"] for e in c.get(f"/api/v1/tickets/{tid}").get_json()["events"]]
    assert kinds.count("notified") == len(fake.slack) + len(smtp.messages) + len(fake.hooks)


def test_failed_sends_are_retried_with_backoff_and_recorded(app, fake):
    st, c = state(app), app.test_client()
    fake.fail_next = 2
    [tid] = post(c, T.payload([T.alert(tier="3")]))["opened"]  # L3 at once: chat, mail(no smtp issue), sms
    scheduler.tick(st)
    scheduler.tick(st)          # not due yet: backoff
    assert len(fake.slack) + len(fake.hooks) == 0
    scheduler.tick(st, now=later(2))
    scheduler.tick(st, now=later(5))
    assert len(fake.slack) == 1 and len(fake.hooks) == 1
    text = c.get("/metrics").get_data(as_text=True)
    fails = sum(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("opsstack_tickets_notification_failures_total"))
    assert fails == 2
    ev = c.get(f"/api/v1/tickets/{tid}").get_json()["events"]
    assert {e["details"]["channel"] for e in ev if e["kind"] == "notified"} == {"chat", "mail", "sms"}


def test_gives_up_after_max_attempts(app, fake):
    st, c = state(app), app.test_client()
    fake.fail_next = 100
    [tid] = post(c, T.payload([T.alert(tier="3")]))["opened"]
    for s in (0, 2, 10, 30, 60):
        scheduler.tick(st, now=later(s))
    ev = c.get(f"/api/v1/tickets/{tid}").get_json()["events"]
    failed = [e for e in ev if e["kind"] == "notification_failed"]
    assert {e["details"]["channel"] for e in failed} == {"chat", "sms"}
    assert all(e["details"]["attempts"] == 3 for e in failed)
    text = c.get("/metrics").get_data(as_text=True)
    assert 'opsstack_tickets_notifications_failed{channel="chat"} 1.0' in text


def test_smtp_down_never_blocks_ticket_handling(pg_db):
    dead = free_port()
    cfg = T.config(pg_db, notifications={"channels": [{"name": "mail", "type": "smtp", "smtp_port": dead}],
                                         "rules": [{"channels": ["mail"]}]})
    app = create_app(cfg)
    try:
        c = app.test_client()
        r = c.post("/webhook/alertmanager", data=json.dumps(T.payload([T.alert()])), headers=T.auth())
        assert r.status_code == 200 and r.get_json()["opened"]
        scheduler.tick(state(app))
        with psycopg.connect(pg_db) as conn:
            row = conn.execute("select status, attempts, last_error from ticket_notifications").fetchone()
        assert row[0] == "pending" and row[1] == 1 and "smtp" in row[2]
    finally:
        close_app(app)


def test_rule_matching_is_pure():
    n = {"rules": [{"severities": ["critical"], "levels": [3], "channels": ["sms"]}]}
    assert notify.channels_for(n, "critical", 3) == ["sms"] and notify.channels_for(n, "critical", 2) == []
