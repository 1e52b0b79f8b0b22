"""Reads need a credential (issue 10, anonymous read).

Every GET route of the receiver (every blueprint, walked from app.url_map with sample ids, so
a route added later is covered too) answers 401 without a credential, except the explicitly
public ones; with a read-scoped API token, the receiver token or a console session it answers.
Anonymous read remains possible, but only as an explicit setting.
"""
from __future__ import annotations

import re

import psycopg
import pytest

from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app
from webhook_receiver.auth import hash_password

pytestmark = pytest.mark.integration

READ_TOKEN = "read-only-token-1f2e"
PUBLIC = {"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/console/login"}
SECRET_WORDS = ("test-receiver-token", READ_TOKEN, "postgresql://", "scrypt:", "pbkdf2:")


@pytest.fixture
def app(pg_db):
    cfg = T.config(pg_db, receiver={"api": {"tokens": [{"name": "ro", "token": READ_TOKEN, "scopes": ["read"]}]},
                                    "console": {"users": [{"name": "alice", "password_hash": hash_password("pw-alice")}]}},
                   enrichment={"enabled": False})
    a = create_app(cfg)
    c = a.test_client()
    r = c.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
    assert r.status_code == 200, r.get_json()
    with psycopg.connect(pg_db) as conn:
        tid = conn.execute("select id from tickets").fetchone()[0]
        conn.execute("insert into ticket_attachments (ticket_id, kind, name, content_type, body) "
                     "values (%s, 'values', 'values.json', 'application/json', %s)", (tid, b"{}"))
    a.sample = {"tid": tid, "id": tid, "name": "values.json", "did": 1}
    yield a
    close_app(a)


def get_urls(app) -> list[tuple[str, str]]:
    """(rule, a concrete URL) for every GET route, with sample values for its variables."""
    out = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        sample = dict(app.sample, name="ServiceDown.md") if rule.rule.startswith("/runbooks/") else app.sample
        url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: str(sample.get(m.group(1), 1)), rule.rule)
        out.append((rule.rule, url))
    assert len(out) >= 10, out
    return sorted(out)


def test_every_get_route_needs_a_credential(app):
    c = app.test_client()
    seen = set()
    for rule, url in get_urls(app):
        seen.add(rule)
        r = c.get(url)
        if rule in PUBLIC:
            assert r.status_code in (200, 503), (url, r.status_code)
            body = r.get_data(as_text=True)
            assert not any(w in body for w in SECRET_WORDS), (url, body[:300])
            continue
        if rule.startswith("/runbooks"):  # documentation, open by design (docs/security.md): never a secret
            assert r.status_code == 200, (url, r.status_code)
            assert not any(w in r.get_data(as_text=True) for w in SECRET_WORDS), url
            continue
        if rule.startswith("/console"):  # pages: to the login form, never the content
            assert r.status_code in (302, 401), (url, r.status_code)
            if r.status_code == 302:
                assert "/console/login" in r.headers["Location"], (url, r.headers["Location"])
            continue
        assert r.status_code == 401, (url, r.status_code, r.get_data(as_text=True)[:200])
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), url
    # the routes of the issue are among those walked
    assert {"/api/v1/tickets", "/api/v1/tickets/<tid>", "/api/v1/tickets/<tid>/attachments/<name>",
            "/api/v1/tickets/<tid>/remediation", "/api/v1/remediation/runs", "/api/v1/oncall",
            "/metrics/automation"} <= seen


@pytest.mark.parametrize("who", ["read-token", "receiver-token"])
def test_every_get_route_answers_a_reader(app, who):
    c = app.test_client()
    headers = T.auth(READ_TOKEN if who == "read-token" else T.TOKEN)
    for rule, url in get_urls(app):
        if rule.startswith("/console"):
            continue
        r = c.get(url, headers=headers)
        assert r.status_code == 200, (url, r.status_code, r.get_data(as_text=True)[:200])


def test_a_console_session_reads_the_api(app):
    c = app.test_client()
    page = c.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/console/login", data={"csrf": csrf, "username": "alice", "password": "pw-alice"})
    assert r.status_code == 302, r.get_data(as_text=True)[:300]
    for rule, url in get_urls(app):
        r = c.get(url)
        assert r.status_code == 200, (url, r.status_code)


def test_a_wrong_token_is_refused_and_writes_still_need_write(app):
    c = app.test_client()
    assert c.get("/api/v1/tickets", headers=T.auth("not-a-token")).status_code == 401
    tid = app.sample["tid"]
    r = c.post(f"/api/v1/tickets/{tid}/acknowledge", headers=T.auth(READ_TOKEN))
    assert r.status_code == 403


def test_openapi_names_people_only_to_readers(app):
    c = app.test_client()
    anon = c.get("/api/v1/openapi.json").get_data(as_text=True)
    assert "ops-oncall" not in anon
    assert "ops-oncall" in c.get("/api/v1/openapi.json", headers=T.auth(READ_TOKEN)).get_data(as_text=True)


def test_anonymous_read_is_an_explicit_setting(pg_db):
    from core.config import defaults

    assert defaults()["receiver"]["api"]["anonymous_read"] is False
    a = create_app(T.config(pg_db, receiver={"api": {"anonymous_read": True}}, enrichment={"enabled": False}))
    try:
        c = a.test_client()
        assert c.get("/api/v1/tickets").status_code == 200
        assert c.post("/api/v1/tickets/1/acknowledge").status_code == 401  # writes never anonymous
    finally:
        close_app(a)
