"""The webhook against real PostgreSQL: idempotency, resolve, reopen, auth, bad input, 503."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import psycopg
import pytest

from tests.support import receiver as T
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
    got = client.get("/api/v1/tickets?status=open", headers=T.auth()).get_json()
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
    assert client.get("/api/v1/tickets?status=open", headers=T.auth()).get_json() == []
    [t] = client.get("/api/v1/tickets?status=resolved", headers=T.auth()).get_json()
    assert t["resolved_at"] is not None
    # the same episode firing again late (a stale retry) changes nothing
    post(client, T.payload([a]))
    assert client.get("/api/v1/tickets?status=open", headers=T.auth()).get_json() == []
    # a new episode within the reopen window reopens the same ticket
    a2 = T.alert(starts_at=datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc))
    r = post(client, T.payload([a2])).get_json()
    assert r["reopened"] == [t["id"]]
    [t2] = client.get("/api/v1/tickets?status=open", headers=T.auth()).get_json()
    assert t2["id"] == t["id"] and t2["reopened_count"] == 1
    kinds = [e["kind"] for e in client.get(f"/api/v1/tickets/{t['id']}", headers=T.auth()).get_json()["events"]]
    assert kinds == ["opened", "resolved", "reopened"]


def test_refire_outside_window_opens_a_new_ticket(pg_db):
    app = create_app(T.config(pg_db, receiver={"reopen_window": 0}))
    try:
        c = app.test_client()
        a = T.alert()
        post(c, T.payload([a]))
        post(c, T.payload([T.resolved(a)]))
        post(c, T.payload([T.alert(starts_at=datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc))]))
        assert len(c.get("/api/v1/tickets", headers=T.auth()).get_json()) == 2
    finally:
        close_app(app)


def test_group_alerts_are_one_incident(client):
    """receiver.incident_by: group (the default): the alerts of one notification's group are one
    ticket holding them all."""
    alerts = [T.alert(service=s) for s in ("user-app", "gate-management", "event-management")]
    r = post(client, T.payload(alerts, group_key='{}:{alertname="ServiceDown"}')).get_json()
    assert len(r["opened"]) == 1
    [t] = client.get("/api/v1/tickets", headers=T.auth()).get_json()
    assert t["group_id"] is not None and t["alert_count"] == 3 and t["firing_count"] == 3
    assert t["summary"].startswith("ServiceDown on ") and ": 3 alerts - ServiceDown fired." in t["summary"]
    full = client.get(f"/api/v1/tickets/{t['id']}", headers=T.auth()).get_json()
    assert sorted(a["labels"]["service"] for a in full["alerts"]) == ["event-management", "gate-management", "user-app"]
    assert "service" not in t["labels"] and t["labels"]["alertname"] == "ServiceDown"


def test_group_alerts_are_linked_per_alert(pg_db):
    """receiver.incident_by: alert: one ticket per alert, linked by their group."""
    app = create_app(T.config(pg_db, receiver={"incident_by": "alert"}))
    try:
        client = app.test_client()
        alerts = [T.alert(service=s) for s in ("user-app", "gate-management", "event-management")]
        post(client, T.payload(alerts, group_key='{}:{alertname="ServiceDown"}'))
        got = client.get("/api/v1/tickets", headers=T.auth()).get_json()
        assert len(got) == 3
        gid = {t["group_id"] for t in got}
        assert len(gid) == 1 and None not in gid
        assert len(client.get(f"/api/v1/tickets?group_id={gid.pop()}", headers=T.auth()).get_json()) == 3
    finally:
        close_app(app)


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


def test_body_over_the_limit_is_413(pg_db):
    # limit = alertmanager.max_alerts x receiver.max_alert_bytes + 64 KiB = 104 KiB here
    cfg = T.config(pg_db, alertmanager={"max_alerts": 10}, receiver={"max_alert_bytes": 4096})
    assert cfg["receiver"]["max_body_bytes"] == 10 * 4096 + 65536
    app = create_app(cfg)
    try:
        client = app.test_client()
        big = T.payload([T.alert(description="x" * 200_000)])
        r = post(client, big)
        assert r.status_code == 413 and r.get_json()["error"]
        assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 0
        # ten alerts of the bound's size fit: the limit is sized for the largest notification
        fit = T.payload([T.alert(instance=f"i{i}", description="y" * 3000) for i in range(10)])
        assert len(json.dumps(fit)) < cfg["receiver"]["max_body_bytes"]
        assert post(client, fit).status_code == 200
    finally:
        close_app(app)


def test_default_body_limit_fits_max_alerts_alerts(client):
    """The default limit takes a notification of alertmanager.max_alerts alerts of max_alert_bytes
    each (the old 1 MiB refused a 3,000-alert storm with 413 for good)."""
    from core.config import defaults

    cfg = defaults()
    assert cfg["receiver"]["max_body_bytes"] >= cfg["alertmanager"]["max_alerts"] * cfg["receiver"]["max_alert_bytes"]
    storm = T.payload([T.alert("StormAlert", instance=f"host-{i}") for i in range(3000)])
    assert len(json.dumps(storm)) > 1048576
    r = post(client, storm)
    assert r.status_code == 200, r.get_json()
    assert len(r.get_json()["opened"]) == 1  # one incident (receiver.incident_by: group)
    assert r.get_json()["duplicates"] == 0


def test_config_refuses_a_body_limit_below_max_alerts():
    from core.config import ConfigError, load_data

    with pytest.raises(ConfigError, match="receiver.max_body_bytes"):
        load_data({"receiver": {"max_body_bytes": 1048576}})  # 10,000 alerts cannot fit in 1 MiB
    cfg = load_data({"alertmanager": {"max_alerts": 100}, "receiver": {"max_body_bytes": 1048576}})
    assert cfg["receiver"]["max_body_bytes"] == 1048576


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None, "application/jsonx"])
def test_webhook_not_json_is_415(client, pg_db, ctype):
    headers = {**T.auth(), **({"Content-Type": ctype} if ctype else {})}
    r = client.post("/webhook/alertmanager", data=json.dumps(T.payload([T.alert()])), headers=headers)
    assert r.status_code == 415 and r.get_json()["error"] == "unsupported_media_type"
    assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 0


def test_webhook_json_with_charset_is_accepted(client):
    r = client.post("/webhook/alertmanager", data=json.dumps(T.payload([T.alert()])),
                    headers={**T.auth(), "Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deeply_nested_json_is_400(client, pg_db, depth):
    for raw in ("[" * depth + "]" * depth,
                json.dumps(T.payload([T.alert()]))[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"):
        r = post(client, None, raw=raw.encode())
        assert r.status_code == 400, r.status_code
        assert r.get_json()["error"] == "invalid_json"
    assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 0


def test_truncated_alerts_recorded_on_the_group(client, pg_db):
    alerts = [T.alert("StormAlert", instance=f"host-{i}") for i in range(5)]
    body = {**T.payload(alerts), "truncatedAlerts": 995}
    r = post(client, body)
    assert r.status_code == 200 and r.get_json()["truncated_alerts"] == 995
    [g] = rows(pg_db, "select last_alert_count, truncated_alerts, max_truncated_alerts from ticket_groups")
    assert g == (5, 995, 995)
    t = client.get("/api/v1/tickets", headers=T.auth()).get_json()[0]
    full = client.get(f"/api/v1/tickets/{t['id']}", headers=T.auth()).get_json()
    assert full["group"]["truncated_alerts"] == 995 and full["group"]["last_alert_count"] == 5
    # the next notification of the group carries everything: now nothing is left out, the peak stays
    post(client, T.payload(alerts))
    assert rows(pg_db, "select truncated_alerts, max_truncated_alerts from ticket_groups")[0] == (0, 995)


def test_resolved_before_firing_leaves_nothing_open(client, pg_db):
    """Two clustered Alertmanagers / a retry: the resolved notification of an episode arrives
    before its firing one. The late firing must not open a ticket that nothing will ever resolve."""
    a = T.alert()
    r = post(client, T.payload([T.resolved(a)]))
    assert r.status_code == 200
    r = post(client, T.payload([a]))  # the late firing of the same episode (fingerprint + startsAt)
    assert r.status_code == 200 and r.get_json()["opened"] == [] and r.get_json()["stale"] == 1
    assert client.get("/api/v1/tickets?status=open,acknowledged", headers=T.auth()).get_json() == []
    assert rows(pg_db, "select count(*) from ticket_resolved_episodes")[0][0] == 1
    # the same resolved again, and the firing again: still nothing open
    post(client, T.payload([T.resolved(a)]))
    post(client, T.payload([a]))
    assert rows(pg_db, "select count(*) from tickets")[0][0] == 0
    # a new episode (a new startsAt) of the same alert is news: it opens a ticket
    from datetime import timedelta

    b = T.alert(starts_at=datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc) + timedelta(hours=1))
    assert len(post(client, T.payload([b])).get_json()["opened"]) == 1


def test_resolved_before_firing_does_not_reopen_a_recent_ticket(client, pg_db):
    """Episode 1 fired and resolved (ticket resolved, inside the reopen window); episode 2's resolved
    overtakes its firing: the late firing must not reopen the ticket."""
    from datetime import timedelta

    a1 = T.alert()
    post(client, T.payload([a1]))
    post(client, T.payload([T.resolved(a1)]))
    a2 = T.alert(starts_at=datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc) + timedelta(minutes=30))
    post(client, T.payload([T.resolved(a2)]))
    r = post(client, T.payload([a2]))
    assert r.get_json()["reopened"] == [] and r.get_json()["stale"] == 1
    assert rows(pg_db, "select status, reopened_count from tickets") == [("resolved", 0)]


def test_resolved_before_firing_queued_processing(pg_db):
    """The same through queued processing (the default): the stored payloads are applied in order."""
    from webhook_receiver.app import state
    from webhook_receiver.scheduler import process_pending

    app = create_app(T.config(pg_db, receiver={"processing": "queued"}))
    try:
        c = app.test_client()
        a = T.alert()
        assert post(c, T.payload([T.resolved(a)])).status_code == 200
        assert post(c, T.payload([a])).status_code == 200
        assert process_pending(state(app)) == 2
        assert rows(pg_db, "select count(*) from tickets")[0][0] == 0
    finally:
        close_app(app)


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

    from core.procs import binary

    res = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("mode", ["inline", "queued"])
def test_database_not_writable_is_503_then_retry_succeeds(app, client, pg_db, mode):
    """Revoke the receiver's privileges for real: 503 (Alertmanager retries), then it works."""
    with T.read_only_role(pg_db, "opsstack_rcv_") as (url, grant_writes):
        app2 = create_app(T.config(url, receiver={"processing": mode, "intake": "database"}))
        try:
            c2 = app2.test_client()
            r = post(c2, T.payload([T.alert()]))
            assert r.status_code == 503 and r.get_json()["error"] == "database_unavailable"
            assert rows(pg_db, "select count(*) from ticket_payloads")[0][0] == 0
            grant_writes()
            assert post(c2, T.payload([T.alert()])).status_code == 200
            if mode == "queued":
                from webhook_receiver.app import state
                from webhook_receiver.scheduler import process_pending

                assert process_pending(state(app2)) == 1
            assert rows(pg_db, "select count(*) from tickets")[0][0] == 1
        finally:
            close_app(app2)


def test_database_down_is_503_and_not_ready(make_pg_db, tmp_path):
    """A receiver pointed at a server that is stopped answers 503 and /readyz 503."""
    from stack.pgcluster import Cluster
    from core.procs import free_port

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
    # stored in the database at once (the spool's own tests: test_receiver_spool.py)
    a = create_app(T.config(pg_db, receiver={"processing": "queued", "intake": "database"}))
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
    assert c.get("/api/v1/tickets", headers=T.auth()).get_json() == []
    post(c, T.payload([a]))                   # a retry
    post(c, T.payload([T.resolved(a)]))       # then the resolve, same group
    assert process_pending(state(qapp)) == 3
    [t] = c.get("/api/v1/tickets", headers=T.auth()).get_json()
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
    got = c.get("/api/v1/tickets?limit=1000", headers=T.auth()).get_json()
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
    services = sorted(t["service"] for t in c.get("/api/v1/tickets", headers=T.auth()).get_json())
    assert services == ["event-management", "gate-management"]
    [(attempts, error, done)] = rows(pg_db, "select attempts, error, processed_at is not null from ticket_payloads "
                                            "where error is not null")
    assert attempts == tickets.MAX_PROCESS_ATTEMPTS and "version" in error and done
