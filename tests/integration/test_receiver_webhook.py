"""The webhook against real PostgreSQL: idempotency, resolve, reopen, auth, bad input, 503."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import psycopg
import pytest

from webhook_receiver import testing as T
from webhook_receiver.app import close_app, create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def app(pg_db):
    a = create_app(T.config(pg_db))
    yield a
    close_app(a)


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, body, token=T.TOKEN, raw=None):
    headers = T.auth(token) if token else {}
    return client.post("/webhook/alertmanager", data=raw if raw is not None else json.dumps(body),
                       headers={**headers, "Content-Type": "application/json"})


def rows(url, sql):
    with psycopg.connect(url) as c:
        return c.execute(sql).fetchall()


def test_same_notification_twice_is_one_ticket(client, pg_db):
    a = T.alert()
    body = T.payload([a])
    assert post(client, body).status_code == 200
    r = post(client, body)
    assert r.status_code == 200 and r.get_json()["duplicates"] == 1
    got = client.get("/api/v1/tickets?status=open").get_json()
    assert len(got) == 1
    t = got[0]
    for k in ("id", "status", "alertname", "service", "severity", "tier", "fingerprint", "opened_at",
              "acknowledged_at", "resolved_at"):
        assert k in t
    assert (t["status"], t["alertname"], t["service"], t["severity"], t["tier"]) == \
        ("open", "ServiceDown", "user-app", "critical", 1)
    assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 2
    assert [r[0] for r in rows(pg_db, "select kind from ticket_events")] == ["opened"]


def test_resolved_resolves_and_refire_reopens(client, pg_db):
    a = T.alert()
    post(client, T.payload([a]))
    assert post(client, T.payload([T.resolved(a)])).status_code == 200
    assert client.get("/api/v1/tickets?status=open").get_json() == []
    [t] = client.get("/api/v1/tickets?status=resolved").get_json()
    assert t["resolved_at"] is not None
    # the same episode firing again late (a stale retry) changes nothing
    post(client, T.payload([a]))
    assert client.get("/api/v1/tickets?status=open").get_json() == []
    # a new episode within the reopen window reopens the same ticket
    a2 = T.alert(starts_at=datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc))
    r = post(client, T.payload([a2])).get_json()
    assert r["reopened"] == [t["id"]]
    [t2] = client.get("/api/v1/tickets?status=open").get_json()
    assert t2["id"] == t["id"] and t2["reopened_count"] == 1
    kinds = [e["kind"] for e in client.get(f"/api/v1/tickets/{t['id']}").get_json()["events"]]
    assert kinds == ["opened", "resolved", "reopened"]


def test_refire_outside_window_opens_a_new_ticket(pg_db):
    app = create_app(T.config(pg_db, receiver={"reopen_window": 0}))
    try:
        c = app.test_client()
        a = T.alert()
        post(c, T.payload([a]))
        post(c, T.payload([T.resolved(a)]))
        post(c, T.payload([T.alert(starts_at=datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc))]))
        assert len(c.get("/api/v1/tickets").get_json()) == 2
    finally:
        close_app(app)


def test_group_alerts_are_linked(client):
    alerts = [T.alert(service=s) for s in ("user-app", "gate-management", "event-management")]
    post(client, T.payload(alerts, group_key='{}:{alertname="ServiceDown"}'))
    got = client.get("/api/v1/tickets").get_json()
    assert len(got) == 3
    gid = {t["group_id"] for t in got}
    assert len(gid) == 1 and None not in gid
    assert len(client.get(f"/api/v1/tickets?group_id={gid.pop()}").get_json()) == 3


@pytest.mark.parametrize("token", [None, "wrong", T.TOKEN + "x"])
def test_wrong_or_missing_token_is_401(client, pg_db, token):
    r = post(client, T.payload([T.alert()]), token=token)
    assert r.status_code == 401
    assert r.get_json()["error"] == "unauthorized"
    assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 0


@pytest.mark.parametrize("raw,field", [
    (b"{not json", None),
    (json.dumps({**T.payload([T.alert()]), "version": "3"}).encode(), "version"),
    (json.dumps({k: v for k, v in T.payload([T.alert()]).items() if k != "version"}).encode(), "version"),
    (json.dumps({**T.payload([T.alert()]), "alerts": "nope"}).encode(), "alerts"),
    (json.dumps(T.payload([{**T.alert(), "startsAt": "yesterday"}])).encode(), "alerts[0].startsAt"),
    (json.dumps(T.payload([{**T.alert(), "fingerprint": ""}])).encode(), "alerts[0].fingerprint"),
    (json.dumps(T.payload([{**T.alert(), "labels": {"severity": "critical"}}])).encode(), "alerts[0].labels.alertname"),
    (json.dumps([1, 2]).encode(), None),
    (json.dumps(T.payload([T.alert(service="a\x00b")])).encode(), None),
    (json.dumps(T.payload([T.alert(service="a\ud800b")])).encode(), None),
    (json.dumps({**T.payload([T.alert()]), "extra": "\udfff"}).encode(), None),
], ids=["not-json", "version-3", "no-version", "alerts-not-list", "bad-startsAt", "empty-fingerprint",
        "no-alertname", "json-list", "nul-char", "lone-surrogate-label", "lone-surrogate-extra"])
def test_bad_input_is_400_with_nothing_written(client, pg_db, raw, field):
    r = post(client, None, raw=raw)
    assert r.status_code == 400
    body = r.get_json()
    assert body["error"] in ("invalid_json", "invalid_payload") and body["message"]
    if field:
        assert body["field"] == field
    assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 0
    assert rows(pg_db, "select count(*) from tickets")[0][0] == 0


def test_body_over_the_limit_is_413(client, pg_db):
    big = T.payload([T.alert(description="x" * 2_000_000)])
    r = post(client, big)
    assert r.status_code == 413 and r.get_json()["error"]
    assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 0


def test_health_ready_metrics(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json() == {"status": "ok", "database": True}
    post(client, T.payload([T.alert()]))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'opsstack_tickets_open{severity="critical",status="open"} 1.0' in text
    assert "opsstack_receiver_database_up 1.0" in text
    assert 'opsstack_tickets_opened_total{service="user-app",severity="critical"} 1.0' in text
    assert 'opsstack_receiver_webhook_requests_total{outcome="stored"}' in text
    assert "opsstack_receiver_payloads_pending 0.0" in text
    import subprocess

    from stack.procs import binary

    res = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("mode", ["inline", "queued"])
def test_database_not_writable_is_503_then_retry_succeeds(app, client, pg_db, mode):
    """Revoke the receiver's privileges for real: 503 (Alertmanager retries), then it works."""
    role = "opsstack_rcv_" + pg_db.rsplit("/", 1)[1][-10:]
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f"create role {role} login")
        c.execute(f"grant select on all tables in schema public to {role}")
        c.execute(f"grant usage on all sequences in schema public to {role}")
    url = pg_db.replace("postgres@", f"{role}@")
    app2 = create_app(T.config(url, receiver={"processing": mode}))
    try:
        c2 = app2.test_client()
        r = post(c2, T.payload([T.alert()]))
        assert r.status_code == 503 and r.get_json()["error"] == "database_unavailable"
        assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 0
        with psycopg.connect(pg_db, autocommit=True) as c:
            c.execute(f"grant insert, update, delete on all tables in schema public to {role}")
        assert post(c2, T.payload([T.alert()])).status_code == 200
        if mode == "queued":
            from webhook_receiver.app import state
            from webhook_receiver.scheduler import process_pending

            assert process_pending(state(app2)) == 1
        assert rows(pg_db, "select count(*) from tickets")[0][0] == 1
    finally:
        close_app(app2)
        with psycopg.connect(pg_db, autocommit=True) as c:
            c.execute(f"drop owned by {role}")
            c.execute(f"drop role {role}")


def test_database_down_is_503_and_not_ready(make_pg_db, tmp_path):
    """A receiver pointed at a server that is stopped answers 503 and /readyz 503."""
    from stack.pgcluster import Cluster
    from stack.procs import free_port

    cl = Cluster(tmp_path / "data", port=free_port(), preload=())
    cl.start()
    app = create_app(T.config(cl.url(), receiver={"db_timeout": "1s"}))
    try:
        c = app.test_client()
        assert post(c, T.payload([T.alert()])).status_code == 200
        cl.stop()
        r = post(c, T.payload([T.alert(service="gate-management")]))
        assert r.status_code == 503
        assert c.get("/readyz").status_code == 503
        cl.start()
        assert post(c, T.payload([T.alert(service="gate-management")])).status_code == 200
        assert c.get("/readyz").status_code == 200
    finally:
        close_app(app)
        cl.stop()


# ------------------------------------------------------------------ queued processing (the default)

@pytest.fixture
def qapp(pg_db):
    a = create_app(T.config(pg_db, receiver={"processing": "queued"}))
    yield a
    close_app(a)


def test_queued_stores_first_then_applies(qapp, pg_db):
    from webhook_receiver.app import state
    from webhook_receiver.scheduler import process_pending

    c = qapp.test_client()
    a = T.alert()
    r = post(c, T.payload([a]))
    assert r.status_code == 200 and r.get_json()["status"] == "accepted"
    assert rows(pg_db, "select count(*) from ticket_payloads where processed_at is null")[0][0] == 1
    assert c.get("/api/v1/tickets").get_json() == []
    post(c, T.payload([a]))                   # a retry
    post(c, T.payload([T.resolved(a)]))       # then the resolve, same group
    assert process_pending(state(qapp)) == 3
    [t] = c.get("/api/v1/tickets").get_json()
    assert t["status"] == "resolved"
    assert rows(pg_db, "select count(*) from ticket_payloads where processed_at is null")[0][0] == 0


def test_queued_keeps_group_order_across_concurrent_processors(qapp, pg_db):
    """Many groups, each firing then resolved, applied by 4 threads at once: every ticket
    ends resolved (a resolve never overtakes its firing)."""
    import threading

    from webhook_receiver.app import state
    from webhook_receiver.scheduler import process_pending

    c = qapp.test_client()
    for i in range(30):
        a = T.alert(service=f"svc-{i}")
        gk = f"group-{i}"
        post(c, T.payload([a], group_key=gk))
        post(c, T.payload([T.resolved(a)], group_key=gk))
    st = state(qapp)
    threads = [threading.Thread(target=process_pending, args=(st,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    process_pending(st)
    got = c.get("/api/v1/tickets?limit=1000").get_json()
    assert len(got) == 30 and {t["status"] for t in got} == {"resolved"}


def test_queued_payload_that_cannot_be_applied_is_set_aside(qapp, pg_db):
    from webhook_receiver import tickets
    from webhook_receiver.app import state
    from webhook_receiver.scheduler import process_pending

    c = qapp.test_client()
    post(c, T.payload([T.alert()], group_key="bad"))
    post(c, T.payload([T.alert(service="gate-management")], group_key="bad"))
    post(c, T.payload([T.alert(service="event-management")], group_key="good"))
    with psycopg.connect(pg_db, autocommit=True) as conn:  # corrupt the first stored payload
        conn.execute("update ticket_payloads set body = jsonb_set(body, '{version}', '\"9\"') "
                     "where id = (select min(id) from ticket_payloads)")
    st = state(qapp)
    for _ in range(tickets.MAX_PROCESS_ATTEMPTS + 1):
        process_pending(st)
    services = sorted(t["service"] for t in c.get("/api/v1/tickets").get_json())
    assert services == ["event-management", "gate-management"]
    [(attempts, error, done)] = rows(pg_db, "select attempts, error, processed_at is not null from ticket_payloads "
                                            "where error is not null")
    assert attempts == tickets.MAX_PROCESS_ATTEMPTS and "version" in error and done
