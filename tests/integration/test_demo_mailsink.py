"""The demo mail sink (issue 14): a receiver configured as `opsstack up` configures it sends its
pages to the sink, whose JSON lists them; the sink's page escapes the alert text; the console
links to the mailbox when notifications.mailbox_url is set."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import smtplib
from datetime import timedelta
from email.message import EmailMessage

import pytest

from core.config import load_data
from stack import runtime
from tests.support import receiver as T
from tests.support.demo import MailSinkProcess
from tests.support.wait import wait_for
from webhook_receiver import escalation, scheduler
from webhook_receiver.app import close_app, create_app, state
from webhook_receiver.auth import hash_password

pytestmark = pytest.mark.integration

ATTACK = '<script>alert(1)</script><img src=x onerror=alert(2)> & "q"'


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    s = MailSinkProcess(tmp_path_factory.mktemp("mailsink")).start()
    yield s
    s.stop()


def up_like_config(db_url: str, sink: MailSinkProcess) -> dict:
    """T.config with the notification part `opsstack up` adds (stack.runtime.default_mailbox)."""
    cfg = T.config(db_url, receiver={"console": {"users": [{"name": "alice", "password_hash": hash_password("pw")}]}})
    runtime.default_mailbox(cfg, "127.0.0.1", {"mailsink_smtp": sink.smtp_port, "mailsink_web": sink.web_port,
                                               "receiver": 9095})
    return load_data(cfg)  # what the receiver reads back from opsstack.resolved.yaml


def test_up_configures_the_sink_only_when_no_channel_is_configured(sink, pg_db):
    cfg = up_like_config(pg_db, sink)
    n = cfg["notifications"]
    assert [c["name"] for c in n["channels"]] == ["mailbox"]
    assert n["channels"][0]["smtp_port"] == sink.smtp_port
    assert n["rules"][0]["levels"] == [1, 2, 3] and n["mailbox_url"] == sink.url("/")
    own = T.config(pg_db, notifications={"channels": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/x"}]})
    runtime.default_mailbox(own, "127.0.0.1", {"mailsink_smtp": 1, "mailsink_web": 2, "receiver": 3})
    assert [c["name"] for c in own["notifications"]["channels"]] == ["ops"] and own["notifications"]["mailbox_url"] is None


def test_pages_of_a_ticket_arrive_in_the_sink_and_its_page_escapes_them(sink, pg_db):
    app = create_app(up_like_config(pg_db, sink))
    try:
        st, c = state(app), app.test_client()
        a = T.alert("ServiceDown", service="user-app", instance="mailsink-test")
        a["annotations"]["summary"] = ATTACK
        r = c.post("/webhook/alertmanager", json=T.payload([a]), headers=T.auth())
        assert r.status_code == 200
        [tid] = r.get_json()["opened"]
        scheduler.tick(st)  # L1 page
        scheduler.tick(st, now=escalation.utcnow() + timedelta(seconds=301))  # -> L2
        scheduler.tick(st, now=escalation.utcnow() + timedelta(seconds=301))

        def mine():
            return [m for m in sink.messages() if f"#{tid} ServiceDown" in m["subject"]]
        msgs = wait_for(lambda: len(mine()) >= 2 and mine(), timeout=60, what="the L1 and L2 mails in the sink")
        assert "(opened," in msgs[-1]["subject"] and "(escalated," in msgs[0]["subject"]  # newest first
        assert "oncall@opsstack.localhost" in msgs[0]["envelope_to"]
        assert ATTACK in msgs[-1]["body"]  # the JSON carries the text as it was

        html = sink.page()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<script" not in html and "<img" not in html
        assert html.index(f"#{tid} ServiceDown on user-app (escalated") < html.index(f"#{tid} ServiceDown on user-app (opened")
    finally:
        close_app(app)


def test_a_raw_mail_with_html_headers_is_escaped(sink):
    msg = EmailMessage()
    msg["Subject"] = "<b>bold</b> subject"
    msg["From"] = "x@example.invalid"
    msg["To"] = "y@example.invalid"
    msg.set_content("</pre><script>alert(3)</script>")
    with smtplib.SMTP("127.0.0.1", sink.smtp_port, timeout=10) as s:
        s.send_message(msg)
    wait_for(lambda: any(m["subject"] == "<b>bold</b> subject" for m in sink.messages()), timeout=30,
             what="the raw mail in the sink")
    html = sink.page()
    assert "&lt;b&gt;bold&lt;/b&gt; subject" in html and "<b>bold" not in html
    assert "&lt;/pre&gt;&lt;script&gt;alert(3)" in html


def login(c):
    page = c.get("/console/login").get_data(as_text=True)
    tok = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/console/login", data={"username": "alice", "password": "pw", "csrf": tok}, follow_redirects=True)
    assert r.status_code == 200
    return r.get_data(as_text=True)


def test_the_console_links_to_the_mailbox_when_configured(sink, pg_db):
    app = create_app(up_like_config(pg_db, sink))
    try:
        page = login(app.test_client())
        assert f'id="mailbox" href="{sink.url("/")}"' in page
    finally:
        close_app(app)
    app = create_app(T.config(pg_db, receiver={"console": {"users": [{"name": "alice",
                                                                       "password_hash": hash_password("pw")}]}}))
    try:
        assert 'id="mailbox"' not in login(app.test_client())
    finally:
        close_app(app)


def test_the_sms_gateway_keeps_valid_texts_and_refuses_the_rest(sink):
    def post(data: bytes, ctype: str = "application/json") -> int:
        req = urllib.request.Request(sink.url("/api/sms"), data=data, method="POST", headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post(json.dumps({"to": "+821012345678", "body": "hello <b>"}).encode()) == 201
    assert post(json.dumps({"to": "call me", "body": "x"}).encode()) == 422
    assert post(json.dumps({"to": "+821012345678", "body": "x" * 1601}).encode()) == 422
    assert post(json.dumps({"to": "+821012345678", "body": ""}).encode()) == 422
    assert post(b"not json") == 400
    assert post(b"[1, 2]") == 400
    with urllib.request.urlopen(sink.url("/api/sms"), timeout=10) as r:
        texts = json.loads(r.read())["messages"]
    assert [(t["to"], t["body"]) for t in texts] == [("+821012345678", "hello <b>")]


# ------------------------------------------------------------------ the direct route (alert path down)

def test_up_gives_alertmanager_a_direct_route_to_the_sink_unless_one_is_configured(sink):
    cfg = load_data({})
    runtime.default_direct_route(cfg, "127.0.0.1", {"mailsink_smtp": sink.smtp_port})
    d = cfg["alertmanager"]["direct"]
    assert (d["email_to"], d["smarthost"], d["require_tls"]) == (["oncall@opsstack.localhost"],
                                                                 f"127.0.0.1:{sink.smtp_port}", False)
    v6 = load_data({})
    runtime.default_direct_route(v6, "::1", {"mailsink_smtp": 2525})
    assert v6["alertmanager"]["direct"]["smarthost"] == "[::1]:2525"
    own = load_data({"alertmanager": {"direct": {"email_to": ["sre@example.test"],
                                                 "smarthost": "mail.example.test:587"}}})
    runtime.default_direct_route(own, "127.0.0.1", {"mailsink_smtp": sink.smtp_port})
    assert own["alertmanager"]["direct"]["smarthost"] == "mail.example.test:587"
    assert own["alertmanager"]["direct"]["require_tls"] is True


def test_alertmanager_emails_a_direct_alert_while_the_receiver_fails_and_only_that_one(sink, tmp_path):
    """The real Alertmanager with the generated config; the receiver answers every notification
    503 (its database is down): the route="direct" alert reaches the sink by e-mail, its
    attacker-written annotation escaped, and is offered to the receiver too; a page of the same
    severity without the label goes to the receiver only."""
    from stack import alertmanager_config as amc
    from tests.support.fakehttp import FakeHTTP
    from tests.support.servers import Alertmanager

    cfg = load_data({"alertmanager": {"critical_group_wait": "0s",
                                      "direct": {"email_to": ["oncall@example.test"], "require_tls": False,
                                                 "smarthost": f"127.0.0.1:{sink.smtp_port}"}}})
    token = tmp_path / "token"
    token.write_text("t")
    tag = f"run-{tmp_path.name}"  # this test's alerts, told apart from other mail in the module's sink
    base = {"severity": "critical", "tier": "1", "team": "ops", "run": tag}
    direct = {"labels": {**base, "alertname": "ReceiverDown", "service": "opsstack", "route": "direct",
                         "instance": "127.0.0.1:9095"},
              "annotations": {"summary": "The webhook receiver is down.", "description": ATTACK}}
    page = {"labels": {**base, "alertname": "ServiceDown", "service": "user-app"},
            "annotations": {"summary": "A service is down.", "description": "user-app down"}}

    def offered() -> set[str]:  # alertnames the receiver was offered
        return {a["labels"]["alertname"] for r in hook.find("POST") for a in json.loads(r.body)["alerts"]}

    with FakeHTTP({"POST /webhook/alertmanager": (503, {"error": "database_unavailable"})}) as hook, \
            Alertmanager(amc.build(cfg, hook.url + "/webhook/alertmanager", str(token)), tmp_path / "am") as am:
        req = urllib.request.Request(am.url + "/api/v2/alerts", data=json.dumps([page, direct]).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        mine = lambda: [m for m in sink.messages() if tag in m["body"]]  # noqa: E731
        got = wait_for(mine, timeout=120, what="the direct alert e-mailed to the sink")
        assert got[0]["to"] == "oncall@example.test"
        assert "ReceiverDown" in got[0]["subject"] + got[0]["body"]
        assert "<script>" not in got[0]["body"] and "<img src=x" not in got[0]["body"]
        # the direct alert went on down the tree to the receiver too (continue), the page only there
        wait_for(lambda: offered() == {"ReceiverDown", "ServiceDown"}, timeout=120,
                 what="both alerts offered to the receiver")
        assert all("ServiceDown" not in m["subject"] + m["body"] for m in mine())
        assert len(mine()) == 1
