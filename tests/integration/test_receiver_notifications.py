"""Notifications through real local servers: SMTP (aiosmtpd), a Slack-compatible API and a
generic webhook, both routes of the one fake HTTP server that check the documented request shapes."""
from __future__ import annotations

import email
import re
from datetime import timedelta

import psycopg
import pytest
from aiosmtpd.controller import Controller

from core.config import load_data, view
from core.procs import free_port
from tests.support import receiver as T
from tests.support.fakehttp import FakeHTTP
from webhook_receiver import escalation, notify, scheduler
from webhook_receiver.app import close_app, create_app, state
from webhook_receiver.auth import hash_password

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


class FakeChat(FakeHTTP):
    """Slack chat.postMessage (https://api.slack.com/methods/chat.postMessage) and a generic webhook,
    as routes of the one fake server; every request passes `check` first."""

    def __init__(self):
        self.slack, self.hooks, self.problems = [], [], []
        super().__init__({"POST /api/chat.postMessage": self.post_message, "POST /sms": self.sms},
                         default=404, guard=self.check)

    def check(self, req):
        if req.content_type != "application/json":
            self.problems.append("content type")
        try:
            req.json
        except ValueError:
            self.problems.append("not json")
        return None

    @staticmethod
    def data(req) -> dict:
        try:
            return req.json
        except ValueError:
            return {}

    def post_message(self, req):
        data = self.data(req)
        if req.headers.get("Authorization") != "Bearer xoxb-test":
            self.problems.append("slack auth")
        if not isinstance(data.get("channel"), str) or not isinstance(data.get("text"), str):
            self.problems.append("slack shape")
        for a in data.get("attachments", []):
            if not isinstance(a.get("text"), str) or not isinstance(a.get("color"), str):
                self.problems.append("attachment shape")
        self.slack.append(data)
        ts = data.get("thread_ts") or f"1700000000.{len(self.slack):06d}"
        return 200, {"ok": True, "channel": "C1", "ts": ts}

    def sms(self, req):
        data = self.data(req)
        if req.headers.get("X-Gateway-Key") != "k1":
            self.problems.append("webhook header")
        for k in ("version", "kind", "ticket", "level", "person", "message"):
            if k not in data:
                self.problems.append(f"webhook lacks {k}")
        self.hooks.append(data)
        return 200, {}


@pytest.fixture
def fake():
    with FakeChat() as f:
        yield f


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
        "console_url": "http://127.0.0.1:9095"},
        receiver={"api": {"anonymous_read": True},  # reads here are about notifications, not auth
                  "console": {"users": [{"name": "alice", "password_hash": hash_password("pw")}]}})
    a = create_app(cfg)
    yield a
    close_app(a)


def post(client, body):
    r = client.post("/webhook/alertmanager", json=body, headers=T.auth())
    assert r.status_code == 200
    return r.get_json()


def later(s):
    return escalation.utcnow() + timedelta(seconds=s)


def test_one_message_per_change_threads_and_resolved_closes(app, smtp, fake):
    st, c = state(app), T.reader(app.test_client())
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
    st, c = state(app), T.reader(app.test_client())
    fake.fail("POST", times=2)
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
    st, c = state(app), T.reader(app.test_client())
    fake.fail("POST", times=100)
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
        c = T.reader(app.test_client())
        r = c.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
        assert r.status_code == 200 and r.get_json()["opened"]
        scheduler.tick(state(app))
        with psycopg.connect(pg_db) as conn:
            row = conn.execute("select status, attempts, last_error from ticket_notifications").fetchone()
        assert row[0] == "pending" and row[1] == 1 and "smtp" in row[2]
    finally:
        close_app(app)


EVIL = "user-app\r\nBcc: x@evil.example"


def console_login(c, user: str = "alice", pw: str = "pw"):
    tok = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/login").get_data(as_text=True)).group(1)
    return c.post("/console/login", data={"username": user, "password": pw, "csrf": tok})


def test_crlf_in_a_label_adds_no_header_and_blocks_nothing(app, smtp, fake):
    """The review's attack: CR/LF in a label made the SMTP channel raise, and the outbox (oldest row
    first) stopped every later notification on every channel. Now the header is one clean line."""
    st, c = state(app), T.reader(app.test_client())
    bad = T.alert("ServiceDown", service=EVIL, instance="a")
    bad["annotations"]["summary"] = "Down.\r\nX-Injected: yes"
    [t1] = post(c, T.payload([bad]))["opened"]
    [t2] = post(c, T.payload([T.alert("HighLatency", service="gate-management")]))["opened"]
    scheduler.tick(st)
    scheduler.tick(st)
    assert len(smtp.messages) == 2 and len(fake.slack) == 2  # both tickets, both channels
    for rcpt, msg in smtp.messages:
        assert sorted(rcpt) == ["ops-list@example.com", "ops-oncall@example.com"]
        assert msg["Bcc"] is None and msg["X-Injected"] is None
        subject = re.sub(r"\r?\n[ \t]", " ", msg["Subject"])  # unfold (long headers are folded)
        assert "\r" not in subject and "\n" not in subject
        head = re.split(r"\r?\n\r?\n", msg.as_string(), maxsplit=1)[0]  # (the body may quote the labels)
        assert not any(line.lower().startswith(("bcc:", "x-injected:")) for line in head.splitlines())
    subjects = [re.sub(r"\s+", " ", m["Subject"]) for _, m in smtp.messages]
    assert any(s.startswith(f"[CRITICAL] #{t1} ServiceDown on user-app Bcc: x@evil.example") for s in subjects)
    with psycopg.connect(st.db.url) as conn:
        assert conn.execute("select count(*) from ticket_notifications where status <> 'sent'").fetchone()[0] == 0
    assert t2


def test_a_row_that_fails_for_any_reason_fails_alone_and_is_shown(app, smtp, fake):
    """A row whose send raises something unexpected (here: a payload the formatter cannot read)
    is retried with backoff and then failed for good: counted in the failure metric, listed on
    the ticket (API and console); every other notification goes out meanwhile."""
    st, c = state(app), T.reader(app.test_client())
    [t1] = post(c, T.payload([T.alert("DiskAlmostFull", severity="warning")]))["opened"]  # mail only
    with psycopg.connect(st.db.url) as conn:  # the oldest pending row: claimed first on every pass
        conn.execute("update ticket_notifications set payload = '{\"kind\": \"opened\"}' where ticket_id = %s", (t1,))
    [t2] = post(c, T.payload([T.alert("ServiceDown")]))["opened"]
    scheduler.tick(st)
    assert len(smtp.messages) == 1 and len(fake.slack) == 1  # ticket 2 on mail and chat
    assert f"#{t2} " in smtp.messages[0][1]["Subject"]
    for s in (2, 10, 30):
        scheduler.tick(st, now=later(s))
    with psycopg.connect(st.db.url) as conn:
        row = conn.execute("select status, attempts, last_error from ticket_notifications where ticket_id = %s",
                           (t1,)).fetchone()
    assert row[0] == "failed" and row[1] == 3 and "KeyError" in row[2]
    text = c.get("/metrics").get_data(as_text=True)
    assert 'opsstack_tickets_notification_failures_total{channel="mail"} 3.0' in text
    assert 'opsstack_tickets_notifications_failed{channel="mail"} 1.0' in text
    got = c.get(f"/api/v1/tickets/{t1}").get_json()
    [n] = got["notifications"]
    assert (n["channel"], n["status"], n["attempts"]) == ("mail", "failed", 3) and "KeyError" in n["last_error"]
    assert [e for e in got["events"] if e["kind"] == "notification_failed"]
    assert console_login(c).status_code == 302
    page = c.get(f"/console/tickets/{t1}").get_data(as_text=True)
    section = page[page.index("<h2>Notifications</h2>"):page.index("<h2>Timeline</h2>")]
    assert "mail" in section and "KeyError" in section and 'class="notification-failed"' in section
    assert "<h2>Notifications</h2>" not in c.get(f"/console/tickets/{t2}").get_data(as_text=True)


def test_slack_markup_in_labels_is_escaped_and_our_mention_works(pg_db, fake, tmp_path):
    tok = tmp_path / "slack_token"
    tok.write_text("xoxb-test\n")
    cfg = T.config(pg_db, notifications={
        "channels": [{"name": "chat", "type": "slack", "url": fake.url + "/api/chat.postMessage",
                      "channel": "#incidents", "token_file": str(tok)}],
        "rules": [{"channels": ["chat"]}]},
        oncall={"people": [{"name": "ops-oncall", "email": "ops-oncall@example.com", "slack": "@U0OWNER"},
                           {"name": "it-manager"}, {"name": "cto"}]})
    app = create_app(cfg)
    try:
        c = T.reader(app.test_client())
        a = T.alert("ServiceDown", service="<!channel>")
        a["annotations"]["summary"] = "Ping <@U999> & see <https://evil.example|the runbook>"
        a["annotations"]["description"] = "<!here> <!subteam^S1>"
        post(c, T.payload([a]))
        scheduler.tick(state(app))
        [m] = fake.slack
        att = m["attachments"][0]
        posted = " ".join([m["text"], att["title"], att["text"], att["fallback"]])
        for raw in ("<!channel>", "<@U999>", "<https://evil.example|", "<!here>", "<!subteam^S1>"):
            assert raw not in posted
        assert "&lt;!channel&gt;" in m["text"] and "&lt;@U999&gt; &amp; see &lt;https://evil.example|" in att["text"]
        assert m["text"].endswith(" <@U0OWNER>")  # our own mention of the owner stays a mention
        assert m["text"].count("<") == 1
    finally:
        close_app(app)


def test_header_sanitiser_is_pure():
    from webhook_receiver.sanitize import email_address, header_value, slack_text

    assert header_value("a\r\nBcc: x@evil\x00\x1b[31m\u2028b\tc") == "a Bcc: x@evil [31m b c"
    assert header_value("x" * 2000, 10) == "x" * 10
    assert email_address("ops@example.com") == "ops@example.com"
    assert email_address("a@b.c\r\nBcc: x@evil.example") is None and email_address("a@b.c, x@evil.example") is None
    assert slack_text("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_rule_matching_is_pure():
    n = view(load_data({"notifications": {"channels": [{"name": "sms", "type": "webhook", "url": "http://127.0.0.1:1/"}],
                                          "rules": [{"severities": ["critical"], "levels": [3], "channels": ["sms"]}]}}),
             "notifications")
    assert notify.channels_for(n, "critical", 3) == ["sms"] and notify.channels_for(n, "critical", 2) == []
