"""Bad input is a 4xx JSON error and a database outage a 503 on EVERY route, never a 500.

- every registered route (from the app's own URL map, so a new route is covered the day it is
  added) with NUL / garbage path parts, query strings and bodies (all pairs of them), against
  a real PostgreSQL;
- the same routes with the database unreachable (a closed port): 503 (or an answer that needs
  no database), never 500;
- JSON nested 10,000 deep (was a RecursionError -> 500) on the webhook and the JSON API;
- a NUL in an attachment name (was psycopg DataError -> 500);
- a chunked webhook body over receiver.max_body_bytes through real gunicorn: 413, not truncated
  and accepted.
"""
from __future__ import annotations

import json
import re
from urllib.parse import quote

import psycopg
import pytest
import requests

from core.procs import free_port
from tests.conftest import _create_db, _drop_db
from tests.support import receiver as T
from tests.support.allpairs import all_pairs, uncovered_pairs
from webhook_receiver.app import close_app, create_app

pytestmark = pytest.mark.integration

SKIP_METHODS = {"HEAD", "OPTIONS"}
GARBAGE_PARTS = ["\x00", "a\x00b", "-1", "0", "9" * 40, "1e3", "..", "%ff", "\ud800", "x" * 3000, " ", "1"]
DEEP = "[" * 10_000 + "]" * 10_000
GARBAGE_BODIES = [
    (b"", None),
    (b"{not json", "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (DEEP.encode(), "application/json"),
    ('{"note": ' + "[" * 10_000 + "]" * 10_000 + "}", "application/json"),
    (json.dumps({"note": "a\x00b", "text": "\x00", "assignee": "\x00", "reason": "\x00", "enabled": "\x00",
                 "dry_run": "\x00"}).encode(), "application/json"),
    (json.dumps({"note": "\ud800", "text": "\udfff", "assignee": 7, "enabled": [1]}).encode(), "application/json"),
    (json.dumps([1, 2, 3]).encode(), "application/json"),
    (b"username=%00&password=%00&csrf=%00&note=%00&text=%00&assignee=%00", "application/x-www-form-urlencoded"),
    (b"\x00" * 100, "text/plain"),
]
QUERY = ("?status=%00&severity=%00&service=a%00b&alertname=%00&fingerprint=%00&group_id=%00&limit=%00"
         "&offset=-1&ticket_id=%00&playbook=%00&next=%00")


def _paths(rule, part: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?[^>]+>", quote(part, safe="", errors="surrogatepass"), rule.rule)


def _routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - SKIP_METHODS):
            yield rule, method


def _check(resp, what: str) -> None:
    assert resp.status_code < 500 or resp.status_code == 503, \
        f"{what}: {resp.status_code} {resp.get_data(as_text=True)[:300]}"
    if resp.status_code >= 400 and resp.request.path.startswith(("/api/", "/webhook/")):
        assert resp.is_json, f"{what}: {resp.status_code} is not JSON: {resp.get_data(as_text=True)[:200]}"
        assert resp.get_json().get("error"), what


@pytest.fixture
def app(pg_db):
    a = create_app(T.config(pg_db))
    yield a
    close_app(a)


def _login(client):
    """A console session (the console's real login form), when users are configured."""
    r = client.get("/console/login")
    m = re.search(rb'name="csrf[^"]*" value="([^"]+)"', r.data)
    form = {"username": "admin", "password": "admin-password"}
    if m:
        form[re.search(rb'name="(csrf[^"]*)"', r.data).group(1).decode()] = m.group(1).decode()
    client.post("/console/login", data=form)


def test_every_route_answers_garbage_with_4xx_never_500(app, pg_db):
    c = app.test_client()
    r = c.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
    assert r.status_code == 200
    # pairwise, not the full product (routes x parts x bodies x 2 was ~8,600 requests): every
    # route meets every path part and every body, every part every body, each with and without
    # the garbage query string (tests/support/allpairs.py; deterministic, so a failure replays)
    routes = list(_routes(app))
    queries = ["", QUERY]
    rows = all_pairs(routes, GARBAGE_PARTS, GARBAGE_BODIES, queries)
    assert not uncovered_pairs(rows, routes, GARBAGE_PARTS, GARBAGE_BODIES, queries)
    for (rule, method), part, (body, ctype), query in rows:
        url = _paths(rule, part) + query
        headers = {**T.auth(), **({"Content-Type": ctype} if ctype else {})}
        resp = c.open(url, method=method, data=body, headers=headers)
        _check(resp, f"{method} {url[:120]} body={body[:40]!r}")
    assert len(routes) > 30 and len(rows) >= len(routes) * len(GARBAGE_PARTS)
    # garbage headers too: a NUL / non-ASCII bearer token, a NUL cookie
    for rule, method in _routes(app):
        path = _paths(rule, "1")
        for headers in ({"Authorization": "Bearer \x00"}, {"Authorization": "Bearer \u00ff\u0100"},
                        {"Authorization": "\x00"}, {"Cookie": "session=\x00; csrf=%00"}):
            _check(c.open(path, method=method, headers=headers), f"{method} {path} {headers!r}")


def test_nul_in_attachment_name_is_404_json(app):
    c = app.test_client()
    c.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
    for name in ("%00", "graph%00.png", "a" * 300):
        r = c.get(f"/api/v1/tickets/1/attachments/{name}", headers=T.auth())
        assert r.status_code == 404 and r.get_json()["error"] == "not_found", (name, r.status_code)


@pytest.mark.parametrize("path", ["/api/v1/tickets/1/comment", "/api/v1/tickets/1/acknowledge",
                                  "/api/v1/tickets/1/reassign", "/api/v1/remediation/kill-switch"])
def test_deeply_nested_json_on_the_api_is_400(app, path):
    c = app.test_client()
    c.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
    method = "PUT" if path.endswith("kill-switch") else "POST"
    for body in (DEEP, '{"text": ' + "[" * 10_000 + "]" * 10_000 + "}"):
        r = c.open(path, method=method, data=body, headers={**T.auth(), "Content-Type": "application/json"})
        assert r.status_code == 400 and r.is_json, (path, r.status_code, r.get_data(as_text=True)[:200])


def test_database_unreachable_is_503_on_every_route_never_500():
    """The receiver's database is a closed port: every route answers 503 (or, where no database
    is needed, its usual answer), always JSON for the API and the webhook."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/opsstack_none"
    app = create_app(T.config(url, receiver={"db_timeout": "0.5s"}))
    try:
        c = app.test_client()
        seen = {}
        for rule, method in _routes(app):
            path = _paths(rule, "1")
            body = json.dumps(T.payload([T.alert()]) if rule.rule.startswith("/webhook") else {"text": "x"})
            headers = {**T.auth(), "Content-Type": "application/json"}
            resp = c.open(path, method=method, data=body, headers=headers)
            _check(resp, f"{method} {path}")
            seen[(method, rule.rule)] = resp.status_code
        # the routes that need the database say it is away (so Alertmanager retries the webhook)
        for key in (("POST", "/webhook/alertmanager"), ("GET", "/api/v1/tickets"), ("GET", "/api/v1/tickets/<tid>"),
                    ("POST", "/api/v1/tickets/<tid>/acknowledge"), ("GET", "/readyz"),
                    ("GET", "/api/v1/tickets/<tid>/attachments/<name>")):
            assert seen[key] == 503, (key, seen[key])
        r = c.get("/api/v1/tickets", headers=T.auth())
        assert r.get_json()["error"] == "database_unavailable"
    finally:
        close_app(app)


def test_database_connections_terminated_mid_flight_is_503_not_500(app, pg_db):
    """The server kills the pool's connections and then refuses new ones for this database."""
    c = app.test_client()
    assert c.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth()).status_code == 200
    db = pg_db.rsplit("/", 1)[1]
    admin = pg_db.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(f'alter database "{db}" with allow_connections false')
        a.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (db,))
    try:
        for path, method in (("/api/v1/tickets", "GET"), ("/api/v1/tickets/1", "GET"),
                             ("/api/v1/tickets/1/comment", "POST"), ("/api/v1/tickets/1/attachments", "GET"),
                             ("/api/v1/tickets/1/attachments/graph.png", "GET"), ("/webhook/alertmanager", "POST")):
            body = json.dumps(T.payload([T.alert()]) if path.startswith("/webhook") else {"text": "x"})
            r = c.open(path, method=method, data=body, headers={**T.auth(), "Content-Type": "application/json"})
            assert r.status_code == 503 and r.is_json, (path, r.status_code, r.get_data(as_text=True)[:200])
    finally:
        with psycopg.connect(admin, autocommit=True) as a:
            a.execute(f'alter database "{db}" with allow_connections true')


# --- the webhook through real gunicorn: chunked bodies -------------------------------------------


@pytest.fixture(scope="module")
def small_db(pg_server_url):
    """The database of the module's gunicorn receiver (the two tests below write nothing but the
    one ticket the chunked test counts; the 415 request is refused before the database)."""
    name, url = _create_db(pg_server_url)
    yield url
    _drop_db(pg_server_url, name)


@pytest.fixture(scope="module")
def small_receiver(small_db, tmp_path_factory):
    # body limit = 10 alerts x 4096 + 64 KiB = 106,496 bytes
    rcv = T.ReceiverProcess({"database": {"url": small_db}, "alertmanager": {"max_alerts": 10},
                             "receiver": {"token": T.TOKEN, "max_alert_bytes": 4096, "processing": "inline"}},
                            tmp_path_factory.mktemp("rcv")).start()
    yield rcv
    rcv.stop()


def _chunks(data: bytes, size: int = 8192):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_chunked_body_over_the_limit_is_413_not_truncated(small_receiver, small_db):
    limit = 10 * 4096 + 65536
    body = json.dumps(T.payload([T.alert()])).encode()
    # a valid payload, padded past the limit: cut at the limit it would still parse and be stored
    padded = body + b" " * (limit + 50_000 - len(body))
    headers = {**T.auth(), "Content-Type": "application/json"}
    r = requests.post(small_receiver.url + "/webhook/alertmanager", data=_chunks(padded), headers=headers, timeout=30)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "request_entity_too_large"
    assert psycopg.connect(small_db).execute("select count(*) from ticket_payloads").fetchone()[0] == 0
    # within the limit, chunked is fine
    r = requests.post(small_receiver.url + "/webhook/alertmanager", data=_chunks(body), headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert psycopg.connect(small_db).execute("select count(*) from tickets").fetchone()[0] == 1


def test_webhook_not_json_is_415_through_gunicorn(small_receiver, small_db):
    before = psycopg.connect(small_db).execute("select count(*) from ticket_payloads").fetchone()[0]
    r = requests.post(small_receiver.url + "/webhook/alertmanager", data=json.dumps(T.payload([T.alert()])),
                      headers={**T.auth(), "Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    assert psycopg.connect(small_db).execute("select count(*) from ticket_payloads").fetchone()[0] == before
