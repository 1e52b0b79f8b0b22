"""The incident console over HTTP (Flask test client, real PostgreSQL): pages and actions, and the
attacks on its authentication (issue 10): forged session cookies, reuse after logout, login
CSRF, password guessing, links from alert data, security headers."""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time

import psycopg
import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app, state
from webhook_receiver.auth import hash_password

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pw_hash():
    return hash_password("correct horse")


def make_app(pg_db, pw_hash, users=None, **console):
    users = users if users is not None else [{"name": "alice", "password_hash": pw_hash, "display_name": "Alice"}]
    return create_app(T.config(pg_db, receiver={"api": {"anonymous_read": False},
                                                "console": {"users": users, **console}}))


@pytest.fixture
def app(pg_db, pw_hash):
    a = make_app(pg_db, pw_hash)
    yield a
    close_app(a)


@pytest.fixture
def client(app):
    return app.test_client()


def login_csrf(c) -> str:
    """The login form's CSRF token (kept in the pre-login session cookie); '' when the form has none."""
    m = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/login").get_data(as_text=True))
    return m.group(1) if m else ""


def login(c, user="alice", pw="correct horse", **kw):
    return c.post("/console/login", data={"username": user, "password": pw, "csrf": login_csrf(c)}, **kw)


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def open_ticket(c, **alert) -> int:
    r = c.post("/webhook/alertmanager", data=json.dumps(T.payload([T.alert(**alert)])), headers=T.auth(),
               content_type="application/json")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["opened"][0]


def sign(key: str, data: dict) -> str:
    """A session cookie signed the way Flask signs them, with ``key``."""
    forger = Flask("forger")
    forger.secret_key = key
    return SecureCookieSessionInterface().get_signing_serializer(forger).dumps(data)


def old_derived_key(db_url: str) -> str:
    """The key the receiver used to derive from two values in the world-readable resolved config."""
    return hashlib.sha256(("opsstack-console|" + T.TOKEN + "|" + db_url).encode()).hexdigest()


def session_cookie(c) -> str:
    return c.get_cookie("session").value


def test_requires_login(client):
    r = client.get("/console/")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    r = login(client, pw="wrong")
    assert r.status_code == 401 and "Wrong user name or password" in r.get_data(as_text=True)
    assert client.get("/console/").status_code == 302


def test_list_detail_and_actions(client):
    # two incidents: a critical one of two alerts (one Alertmanager group), a warning one
    for body in (T.payload([T.alert(service="user-app"), T.alert(service="gate-management")]),
                 T.payload([T.alert("HighLatency", severity="warning", service="user-app")])):
        client.post("/webhook/alertmanager", data=json.dumps(body), headers=T.auth(), content_type="application/json")
    assert login(client).status_code == 302
    html = client.get("/console/").get_data(as_text=True)
    assert html.index('data-severity="critical"') < html.index('data-severity="warning"')
    assert "ops-oncall" in html and '<td class="level">L1 ops team</td>' in html
    assert re.search(r'<td class="next">in [45]m', html)
    tid = int(re.search(r'id="ticket-(\d+)"', html).group(1))
    page = client.get(f"/console/tickets/{tid}").get_data(as_text=True)
    assert 'id="acknowledge"' in page and "opened" in page
    # the incident lists its alerts
    assert "2 alert(s) in this incident: 2 firing" in page and "gate-management" in page
    # a POST without the CSRF token is refused
    assert client.post(f"/console/tickets/{tid}/acknowledge").status_code == 400
    tok = csrf(page)
    r = client.post(f"/console/tickets/{tid}/acknowledge", data={"csrf": tok}, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Acknowledged." in page and 'id="status" class="st-acknowledged"' in page and "stopped" in page
    r = client.post(f"/console/tickets/{tid}/comment", data={"csrf": tok, "text": "restarting <b>it</b>"},
                    follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "restarting &lt;b&gt;it&lt;/b&gt;" in page  # escaped
    r = client.post(f"/console/tickets/{tid}/reassign", data={"csrf": tok, "assignee": "cto"}, follow_redirects=True)
    assert 'id="owner">cto<' in r.get_data(as_text=True)
    r = client.post(f"/console/tickets/{tid}/resolve", data={"csrf": tok}, follow_redirects=True)
    assert 'class="st-resolved"' in r.get_data(as_text=True)
    events = [e["kind"] for e in client.get(f"/api/v1/tickets/{tid}").get_json()["events"]]
    assert events == ["opened", "acknowledged", "comment", "reassigned", "resolved"]
    assert client.get(f"/api/v1/tickets/{tid}").get_json()["acknowledged_by"] == "alice"
    assert client.get("/console/tickets/999999").status_code == 404


# --- forged and stale sessions ------------------------------------------------------------------

def test_forged_session_cookies_are_rejected(app, client, pg_db):
    """Anyone who reads the resolved config (token + database URL) used to be able to sign a
    session: for a user that does not exist, or for a real one. Neither gets in now."""
    tid = open_ticket(client)
    old_key = old_derived_key(pg_db)
    for user in ("mallory", "alice"):
        c = app.test_client()
        c.set_cookie("session", sign(old_key, {"user": user, "display": user, "csrf": "x" * 32}))
        r = c.get("/console/")
        assert r.status_code == 302 and "/console/login" in r.headers["Location"], user
        r = c.post(f"/console/tickets/{tid}/acknowledge", data={"csrf": "x" * 32})
        assert r.status_code == 302 and "/console/login" in r.headers["Location"], user
        assert c.get(f"/api/v1/tickets/{tid}").status_code == 401  # not a reader either
    assert client.get(f"/api/v1/tickets/{tid}", headers=T.auth()).get_json()["status"] == "open"

    # the key is a random secret of its own, kept in PostgreSQL, the same for every process
    assert login(client).status_code == 302
    with psycopg.connect(pg_db) as conn:
        key = conn.execute("select value from receiver_secrets where name = 'console_session_key'").fetchone()[0]
    assert app.secret_key == key and len(key) == 64 and key != old_key
    other = make_app(pg_db, None, users=[{"name": "alice", "password_hash": hash_password("x")}])
    try:
        assert other.test_client().get("/console/login").status_code == 200 and other.secret_key == key
    finally:
        close_app(other)

    # even signed with the real key, a cookie is nothing without a live server-side session
    for data in ({"user": "mallory", "sid": "made-up", "csrf": "x" * 32},
                 {"user": "alice", "sid": "made-up", "csrf": "x" * 32},
                 {"user": "alice", "csrf": "x" * 32}):
        c = app.test_client()
        c.set_cookie("session", sign(key, data))
        r = c.post(f"/console/tickets/{tid}/acknowledge", data={"csrf": "x" * 32})
        assert r.status_code == 302 and "/console/login" in r.headers["Location"], data
    assert client.get(f"/api/v1/tickets/{tid}", headers=T.auth()).get_json()["status"] == "open"


def test_session_of_a_user_no_longer_configured_is_dropped(pg_db, pw_hash):
    """A session names an existing user, checked on every request: remove the user from the
    config and the same (valid, server-side) session is logged out."""
    a = make_app(pg_db, pw_hash)
    try:
        c = a.test_client()
        assert login(c).status_code == 302 and c.get("/console/").status_code == 200
        cookie = session_cookie(c)
    finally:
        close_app(a)
    b = make_app(pg_db, pw_hash, users=[{"name": "bob", "password_hash": pw_hash}])
    try:
        c = b.test_client()
        c.set_cookie("session", cookie)
        r = c.get("/console/")
        assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    finally:
        close_app(b)


def test_logout_ends_the_session_on_the_server(app, client):
    assert login(client).status_code == 302
    cookie = session_cookie(client)
    page = client.get("/console/").get_data(as_text=True)
    assert client.get("/api/v1/tickets").status_code == 200  # the session reads the API
    r = client.post("/console/logout", data={"csrf": csrf(page)})
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    # a copy of the cookie taken before logout is dead
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    r = thief.get("/console/")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    assert thief.get("/api/v1/tickets").status_code == 401


def test_idle_session_expires(app, client, pg_db):
    assert login(client).status_code == 302 and client.get("/console/").status_code == 200
    with psycopg.connect(pg_db, autocommit=True) as conn:  # 12h (the default idle timeout) went by
        conn.execute("update console_sessions set last_seen = now() - interval '12 hours 1 minute'")
    r = client.get("/console/")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    with psycopg.connect(pg_db, autocommit=True) as conn:
        assert conn.execute("select count(*) from console_sessions").fetchone()[0] == 1
    assert login(client).status_code == 302  # the next login sweeps the expired row
    with psycopg.connect(pg_db, autocommit=True) as conn:
        assert conn.execute("select count(*) from console_sessions").fetchone()[0] == 1


# --- login form ---------------------------------------------------------------------------------

def test_login_needs_its_csrf_token(client):
    data = {"username": "alice", "password": "correct horse"}
    assert client.post("/console/login", data=data).status_code == 400  # no pre-session, no token
    login_csrf(client)
    assert client.post("/console/login", data=data).status_code == 400  # a pre-session, no token
    assert client.post("/console/login", data={**data, "csrf": "forged"}).status_code == 400
    assert client.post("/console/login", data={**data, "csrf": "ünïcode"}).status_code == 400
    assert client.get("/console/").status_code == 302
    assert login(client).status_code == 302 and client.get("/console/").status_code == 200


def test_cookie_flags_follow_tls(app, client):
    r = client.get("/console/login")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    r = app.test_client().get("/console/login", base_url="https://localhost")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_login_redirects_only_inside_the_console(client):
    tok = login_csrf(client)
    r = client.post("/console/login?next=//evil.example/console/", data={
        "username": "alice", "password": "correct horse", "csrf": tok})
    assert r.status_code == 302 and r.headers["Location"] == "/console/"


# --- password guessing --------------------------------------------------------------------------

def test_wrong_passwords_lock_the_user_out_then_the_lock_ends(pg_db, pw_hash):
    """After free_attempts wrong passwords the user name is locked (429 + Retry-After) and the
    password is not even checked: the right one is refused too. The lock is shared by every
    process on the database and ends after the backoff."""
    a = make_app(pg_db, pw_hash, login={"free_attempts": 3, "address_free_attempts": 1000, "backoff": "3s",
                                        "max_backoff": "3s"})
    b = make_app(pg_db, pw_hash, login={"free_attempts": 3, "address_free_attempts": 1000, "backoff": "3s",
                                        "max_backoff": "3s"})
    try:
        c = a.test_client()
        for _ in range(4):
            assert login(c, pw="guess").status_code == 401
        r = login(c)
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 3
        assert "Too many failed logins" in r.get_data(as_text=True)
        assert c.get("/console/").status_code == 302
        r = login(b.test_client())  # another worker / replica: the same lock
        assert r.status_code == 429
        deadline = time.monotonic() + 30
        while True:  # attempts during the lock do not extend it
            r = login(c)
            if r.status_code == 302:
                break
            assert r.status_code == 429 and time.monotonic() < deadline
            time.sleep(0.1)
        assert c.get("/console/").status_code == 200
        # the success forgot the user's failures: one wrong password does not lock again
        c2 = b.test_client()
        assert login(c2, pw="guess").status_code == 401 and login(c2).status_code == 302
    finally:
        close_app(a)
        close_app(b)


def test_one_address_guessing_many_users_is_locked_out(pg_db, pw_hash):
    a = make_app(pg_db, pw_hash, login={"free_attempts": 100, "address_free_attempts": 3, "backoff": "5m"})
    try:
        attacker = a.test_client()
        attacker.environ_base["REMOTE_ADDR"] = "192.0.2.7"
        for i in range(4):
            assert login(attacker, user=f"user{i}", pw="guess").status_code == 401
        r = login(attacker)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 60
        other = a.test_client()  # someone else, from another address, is not affected
        other.environ_base["REMOTE_ADDR"] = "198.51.100.3"
        assert login(other).status_code == 302
    finally:
        close_app(a)


def test_password_checks_are_bounded_per_process(app, client):
    """Only receiver.console.login.concurrent_checks password hashes run at once per process;
    a login past that is answered at once (503), it does not queue on the webhook's threads."""
    tok = login_csrf(client)
    slots = state(app).login_slots
    assert slots.acquire(blocking=False)  # another login is being checked right now
    try:
        r = client.post("/console/login", data={"username": "alice", "password": "correct horse", "csrf": tok})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    finally:
        slots.release()
    assert login(client).status_code == 302
    # the webhook still answers while every login slot is taken
    assert slots.acquire(blocking=False)
    try:
        body = T.payload([T.alert(service="gate-management")])
        r = client.post("/webhook/alertmanager", data=json.dumps(body), headers=T.auth(),
                        content_type="application/json")
        assert r.status_code == 200
    finally:
        slots.release()


def test_parallel_bad_logins_mostly_do_not_reach_the_hash(pg_db, pw_hash):
    """32 parallel wrong passwords: each either is checked (401), refused because the process is
    busy checking another (503) or locked out (429); at most free_attempts + 1 + what ran in
    parallel before the lock were checked, never all 32."""
    a = make_app(pg_db, pw_hash, login={"free_attempts": 3, "address_free_attempts": 1000, "backoff": "5m"})
    try:
        tokens = []
        clients = [a.test_client() for _ in range(32)]
        for c in clients:
            tokens.append(login_csrf(c))
        codes, barrier = [], threading.Barrier(len(clients))

        def go(c, tok):
            barrier.wait()
            r = c.post("/console/login", data={"username": "alice", "password": "guess", "csrf": tok})
            codes.append(r.status_code)
        ts = [threading.Thread(target=go, args=(c, t)) for c, t in zip(clients, tokens)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert set(codes) <= {401, 429, 503} and len(codes) == 32
        assert codes.count(401) < 32
        for _ in range(6):  # sequentially, past the free attempts: locked
            r = login(clients[0], pw="guess")
            assert r.status_code in (401, 429)
        assert login(clients[0]).status_code == 429
    finally:
        close_app(a)


# --- links from alert data and headers ----------------------------------------------------------

ATTACK = "javascript:document.forms[1].submit()//https://example.invalid/runbook"


def test_links_from_alert_data_are_http_only(client):
    a = T.alert(service="user-app")
    a["annotations"]["runbook_url"] = ATTACK
    a["generatorURL"] = "JaVaScRiPt:alert(1)"
    b = T.alert("HighLatency", service="gate-management")
    b["annotations"]["runbook_url"] = "java\tscript:alert(1)"
    c = T.alert("DiskFull", service="event-management")  # a normal https runbook stays a link
    opened = []
    for x in (a, b, c):
        r = client.post("/webhook/alertmanager", data=json.dumps(T.payload([x], group_key=x["fingerprint"])),
                        headers=T.auth(), content_type="application/json")
        opened += r.get_json()["opened"]
    assert len(opened) == 3
    assert login(client).status_code == 302
    pages = [client.get(f"/console/tickets/{tid}").get_data(as_text=True) for tid in opened]
    for page in pages:
        hrefs = re.findall(r'href="([^"]*)"', page)
        assert hrefs and all(h.startswith(("/", "http://", "https://")) for h in hrefs), hrefs
        assert "javascript" not in " ".join(hrefs).lower()
    assert '<span class="unsafe-link" title="not an http(s) link">javascript:document.forms[1].submit()' in pages[0]
    assert '<dd id="source"><span class="unsafe-link"' in pages[0]
    assert 'href="https://example.invalid/runbooks/DiskFull.md"' in pages[2]
    assert 'href="http://127.0.0.1:9090/graph?g0.expr=up"' in pages[2]


def test_security_headers(client):
    tid = open_ticket(client)
    anon = [client.get("/console/login"), client.get("/console/"), client.get("/console/nope")]
    login(client)
    pages = [client.get("/console/"), client.get(f"/console/tickets/{tid}"), client.get("/console/tickets/99999"),
             client.get("/console/static/console.css")]
    for r in anon + pages:
        csp = r.headers.get("Content-Security-Policy", "")
        assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, r
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert pages[1].headers["Cache-Control"] == "no-store"
    assert pages[3].status_code == 200 and pages[3].mimetype == "text/css"
    for page in (pages[0], pages[1]):  # nothing inline that the policy would block
        html = page.get_data(as_text=True)
        assert "<script" not in html and "<style" not in html and " style=" not in html
        assert not re.search(r"\son[a-z]+=", html)
    for r in (client.get("/healthz"), client.get("/api/v1/tickets"),
              client.post("/webhook/alertmanager", data="{}", headers=T.auth(), content_type="application/json")):
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_ticket_page_says_when_alertmanager_left_alerts_out(client):
    """A group larger than alertmanager.max_alerts: the console says how many alerts were cut."""
    login(client)
    body = {**T.payload([T.alert("StormAlert", instance="host-1")]), "truncatedAlerts": 42}
    assert client.post("/webhook/alertmanager", json=body, headers=T.auth()).status_code == 200
    tid = client.get("/api/v1/tickets", headers=T.auth()).get_json()[0]["id"]
    html = client.get(f"/console/tickets/{tid}").get_data(as_text=True)
    assert 'id="truncated"' in html and "left 42 alert(s)" in html
    # the next notification carries the whole group: the page says what was cut at most
    assert client.post("/webhook/alertmanager", json=T.payload([T.alert("StormAlert", instance="host-1")]),
                       headers=T.auth()).status_code == 200
    html = client.get(f"/console/tickets/{tid}").get_data(as_text=True)
    assert "left 0 alert(s)" in html and "42 at most" in html
