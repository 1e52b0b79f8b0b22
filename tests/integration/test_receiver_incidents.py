"""Incidents (receiver.incident_by: group, the default): an Alertmanager group is one ticket,
opened and paged once however many alerts it holds; alerts that join later are recorded without
a page; it resolves with its last firing alert; payloads apply with set-based statements."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tests.support import receiver as T
from webhook_receiver import scheduler, tickets
from webhook_receiver.app import close_app, create_app, state

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
GK = '{}/{severity="critical"}:{alertname="ServiceDown", service="user-app"}'
# a channel nobody listens on: the scheduler is off, so pages stay in the outbox to be counted
NOTIFY = {"channels": [{"name": "sms", "type": "webhook", "url": "http://127.0.0.1:1/"}],
          "rules": [{"channels": ["sms"]}]}


def make(pg_db, **receiver):
    return create_app(T.config(pg_db, notifications=NOTIFY, receiver=receiver))


@pytest.fixture
def app(pg_db):
    a = make(pg_db)
    yield a
    close_app(a)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def hooks(app):
    seen = []
    for ev in ("ticket_opened", "ticket_updated", "ticket_resolved", "ticket_reopened"):
        state(app).hooks.subscribe(ev, lambda event=ev, **kw: seen.append((event, kw)))
    return seen


def region_alert(region: str, status: str = "firing", starts: datetime = T0, **kw) -> dict:
    a = T.alert(status=status, starts_at=starts, region=region, **kw)
    if status == "resolved":
        a["endsAt"] = T.rfc3339(starts + timedelta(minutes=5))
    return a


def post(client, alerts, group_key=GK):
    r = client.post("/webhook/alertmanager", json=T.payload(alerts, group_key=group_key), headers=T.auth())
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def q(url, sql, *args):
    with psycopg.connect(url) as c:
        return c.execute(sql, args).fetchall()


def pages(url, kind=None):
    sql = "select count(*) from ticket_notifications" + (" where kind = %s" if kind else "")
    return q(url, sql, *((kind,) if kind else ()))[0][0]


def test_a_storm_in_one_group_is_one_incident_paged_once(client, pg_db, hooks):
    alerts = [region_alert(f"r{i}") for i in range(50)]
    r = post(client, alerts)
    assert len(r["opened"]) == 1 and r["duplicates"] == 0
    [t] = client.get("/api/v1/tickets", headers=T.auth()).get_json()
    assert (t["alert_count"], t["firing_count"], t["incident_key"]) == (50, 50, GK)
    assert t["summary"] == "ServiceDown on user-app: 50 alerts - ServiceDown fired."
    # labels: the group's plus what every alert shares (not the region each has its own)
    assert t["labels"]["service"] == "user-app" and "region" not in t["labels"]
    assert pages(pg_db) == 1 and pages(pg_db, "opened") == 1
    assert [e for e, _ in hooks] == ["ticket_opened"]
    assert q(pg_db, "select kind, count(*) from ticket_events group by 1") == [("opened", 1)]
    full = client.get(f"/api/v1/tickets/{t['id']}", headers=T.auth()).get_json()
    assert full["alert_counts"] == {"alerts": 50, "episodes": 50, "firing": 50, "resolved": 0}
    assert len(full["alerts"]) == 50
    # the list filter by fingerprint finds the incident through any of its alerts
    got = client.get(f"/api/v1/tickets?fingerprint={alerts[7]['fingerprint']}", headers=T.auth()).get_json()
    assert [x["id"] for x in got] == [t["id"]]


def test_an_alert_joining_an_open_incident_is_recorded_without_a_page(client, pg_db, hooks):
    post(client, [region_alert("eu"), region_alert("us")])
    # Alertmanager re-sends the whole group with one more alert
    later = T0 + timedelta(minutes=2)
    r = post(client, [region_alert("eu"), region_alert("us"), region_alert("ap", starts=later)])
    assert r["opened"] == [] and len(r["attached"]) == 1 and r["attached_alerts"] == 1 and r["duplicates"] == 2
    [t] = client.get("/api/v1/tickets", headers=T.auth()).get_json()
    assert (t["alert_count"], t["firing_count"]) == (3, 3)
    assert pages(pg_db) == 1  # still only the "opened" page
    ev = q(pg_db, "select details from ticket_events where kind = 'alert_attached'")
    assert len(ev) == 1 and ev[0][0]["count"] == 1 and ev[0][0]["alerts"][0]["labels"]["region"] == "ap"
    upd = [kw for e, kw in hooks if e == "ticket_updated"]
    assert len(upd) == 1 and upd[0]["change"] == "alert_attached" and upd[0]["alerts"] == 1
    assert upd[0]["event_id"] is not None


def test_attaching_many_alerts_is_one_event_with_a_capped_list(client, pg_db):
    post(client, [region_alert("first")])
    r = post(client, [region_alert("first")] + [region_alert(f"x{i}") for i in range(60)])
    assert r["attached_alerts"] == 60
    [(details,)] = q(pg_db, "select details from ticket_events where kind = 'alert_attached'")
    assert details["count"] == 60 and len(details["alerts"]) == tickets.ATTACHED_LIST_CAP
    assert details["truncated"] == 60 - tickets.ATTACHED_LIST_CAP


def test_the_incident_resolves_with_its_last_alert_not_its_first(client, pg_db, hooks):
    a, b, c = region_alert("eu"), region_alert("us"), region_alert("ap")
    post(client, [a, b, c])
    r = post(client, [T.resolved(a), b, c])
    assert r["resolved"] == []
    [t] = client.get("/api/v1/tickets?status=open", headers=T.auth()).get_json()
    assert t["firing_count"] == 2
    r = post(client, [T.resolved(a), T.resolved(b), c])
    assert r["resolved"] == [] and client.get(f"/api/v1/tickets/{t['id']}", headers=T.auth()).get_json()[
        "alert_counts"]["firing"] == 1
    r = post(client, [T.resolved(a), T.resolved(b), T.resolved(c)])
    assert r["resolved"] == [t["id"]]
    [done] = client.get("/api/v1/tickets?status=resolved", headers=T.auth()).get_json()
    assert done["firing_count"] == 0
    assert [e for e, _ in hooks] == ["ticket_opened", "ticket_resolved"]
    assert pages(pg_db, "resolved") == 1
    assert [k for (k,) in q(pg_db, "select kind from ticket_events order by id")] == ["opened", "resolved"]


def test_reopen_window_applies_per_incident(client, pg_db):
    a = region_alert("eu")
    post(client, [a])
    post(client, [T.resolved(a)])
    [t] = client.get("/api/v1/tickets?status=resolved", headers=T.auth()).get_json()
    # another alert of the same group within the window: the incident reopens (paged again)
    r = post(client, [region_alert("us", starts=T0 + timedelta(minutes=20))])
    assert r["reopened"] == [t["id"]] and r["opened"] == []
    [t2] = client.get("/api/v1/tickets?status=open", headers=T.auth()).get_json()
    assert t2["id"] == t["id"] and t2["reopened_count"] == 1 and t2["firing_count"] == 1
    assert pages(pg_db, "reopened") == 1
    # a different group is a different incident, never a reopen of this one
    r = post(client, [region_alert("eu", alertname="Other")], group_key="other-group")
    assert len(r["opened"]) == 1 and r["opened"][0] != t["id"]


def test_outside_the_reopen_window_a_new_incident_opens(pg_db):
    app = make(pg_db, reopen_window=0)
    try:
        c = app.test_client()
        a = region_alert("eu")
        post(c, [a])
        post(c, [T.resolved(a)])
        r = post(c, [region_alert("us", starts=T0 + timedelta(minutes=20))])
        assert len(r["opened"]) == 1
        assert len(c.get("/api/v1/tickets", headers=T.auth()).get_json()) == 2
    finally:
        close_app(app)


def test_two_groups_are_two_incidents(client, pg_db):
    r1 = post(client, [region_alert("eu"), region_alert("us")], group_key="g-one")
    r2 = post(client, [region_alert("eu", alertname="Latency"), region_alert("us", alertname="Latency")],
              group_key="g-two")
    assert len(r1["opened"]) == 1 and len(r2["opened"]) == 1 and r1["opened"] != r2["opened"]
    got = client.get("/api/v1/tickets", headers=T.auth()).get_json()
    assert sorted(t["incident_key"] for t in got) == ["g-one", "g-two"]
    assert pages(pg_db, "opened") == 2


def test_alert_mode_is_one_ticket_per_alert(pg_db):
    app = make(pg_db, incident_by="alert")
    try:
        c = app.test_client()
        alerts = [region_alert(r) for r in ("eu", "us", "ap")]
        r = post(c, alerts)
        assert len(r["opened"]) == 3
        got = c.get("/api/v1/tickets", headers=T.auth()).get_json()
        assert sorted(t["incident_key"] for t in got) == sorted(a["fingerprint"] for a in alerts)
        assert pages(pg_db, "opened") == 3
        # the first resolved alert resolves its own ticket only
        r = post(c, [T.resolved(alerts[0]), alerts[1], alerts[2]])
        assert len(r["resolved"]) == 1
        assert len(c.get("/api/v1/tickets?status=open", headers=T.auth()).get_json()) == 2
    finally:
        close_app(app)


def test_retries_and_the_other_clustered_alertmanager_are_idempotent(client, pg_db, hooks):
    body = [region_alert("eu"), region_alert("us")]
    post(client, body)
    for _ in range(3):  # a retry, and the second member of the Alertmanager cluster, twice
        r = post(client, body)
        assert r["duplicates"] == 2 and r["opened"] == r["attached"] == []
    assert len(client.get("/api/v1/tickets", headers=T.auth()).get_json()) == 1
    assert pages(pg_db) == 1 and [e for e, _ in hooks] == ["ticket_opened"]
    assert q(pg_db, "select count(*) from ticket_alerts")[0][0] == 2
    resolved = [T.resolved(a) for a in body]
    post(client, resolved)
    post(client, resolved)  # the resolve again
    assert pages(pg_db, "resolved") == 1 and [e for e, _ in hooks] == ["ticket_opened", "ticket_resolved"]


def test_resolved_before_firing_opens_nothing_in_group_mode(client, pg_db):
    a, b = region_alert("eu"), region_alert("us")
    # the resolved notification of the group arrives first (the other cluster member was faster)
    r = post(client, [T.resolved(a), T.resolved(b)])
    assert r["opened"] == [] and r["duplicates"] == 2
    r = post(client, [a, b])  # the late firing one
    assert r["opened"] == [] and r["stale"] == 2
    assert client.get("/api/v1/tickets", headers=T.auth()).get_json() == []


def test_queued_batches_keep_each_groups_order(pg_db):
    """Queued processing applies a batch of payloads per transaction; within one group a resolved
    never overtakes its firing, different groups go in the same batch."""
    app = make(pg_db, processing="queued")
    try:
        c = app.test_client()
        a, b = region_alert("eu"), region_alert("us", alertname="Latency")
        for body, gk in (([a], "g-a"), ([b], "g-b"), ([T.resolved(a)], "g-a"), ([a], "g-a")):
            r = c.post("/webhook/alertmanager", json=T.payload(body, group_key=gk), headers=T.auth())
            assert r.status_code == 200 and r.get_json()["status"] == "accepted"
        assert scheduler.process_pending(state(app)) == 4
        got = {t["incident_key"]: t for t in c.get("/api/v1/tickets", headers=T.auth()).get_json()}
        assert got["g-a"]["status"] == "resolved" and got["g-b"]["status"] == "open"
        assert q(pg_db, "select count(*) from ticket_payloads where processed_at is null")[0][0] == 0
    finally:
        close_app(app)


def test_a_bad_payload_in_a_batch_fails_alone(pg_db):
    app = make(pg_db, processing="queued", intake="database")
    try:
        c = app.test_client()
        for gk in ("g-1", "g-2"):
            c.post("/webhook/alertmanager", json=T.payload([region_alert(gk, alertname=gk)], group_key=gk),
                   headers=T.auth())
        with psycopg.connect(pg_db, autocommit=True) as conn:  # one stored payload that no longer parses
            conn.execute("update ticket_payloads set body = body || '{\"version\": \"3\"}' where group_key = 'g-1'")
        assert scheduler.process_pending(state(app)) == 2
        got = c.get("/api/v1/tickets", headers=T.auth()).get_json()
        assert [t["incident_key"] for t in got] == ["g-2"]
        [(err, attempts)] = q(pg_db, "select error, attempts from ticket_payloads where group_key = 'g-1'")
        assert "version" in err and attempts == 1
    finally:
        close_app(app)


def test_clustered_alertmanagers_at_once_make_one_incident(pg_db):
    """Two members deliver the same group at the same moment to two processors."""
    app = make(pg_db, processing="queued")
    try:
        c = app.test_client()
        body = T.payload([region_alert(f"r{i}") for i in range(20)], group_key=GK)
        for _ in range(2):
            c.post("/webhook/alertmanager", json=body, headers=T.auth())
        st = state(app)
        threads = [threading.Thread(target=scheduler.process_pending, args=(st,)) for _ in range(3)]
        [t.start() for t in threads]
        [t.join(120) for t in threads]
        scheduler.process_pending(st)
        [t] = c.get("/api/v1/tickets", headers=T.auth()).get_json()
        assert t["alert_count"] == 20 and pages(pg_db) == 1
    finally:
        close_app(app)


def test_ten_thousand_alerts_in_one_payload_are_one_incident(client, pg_db):
    n = 10_000
    alerts = [T.alert("StormAlert", starts_at=T0, instance=f"host-{i}") for i in range(n)]
    body = T.payload(alerts, group_key="storm")
    r = client.post("/webhook/alertmanager", data=json.dumps(body),
                    headers={**T.auth(), "Content-Type": "application/json"})
    assert r.status_code == 200, r.get_json()
    assert len(r.get_json()["opened"]) == 1
    [t] = client.get("/api/v1/tickets", headers=T.auth()).get_json()
    assert (t["alert_count"], t["firing_count"]) == (n, n)
    assert q(pg_db, "select count(*), count(distinct ticket_id) from ticket_alerts")[0] == (n, 1)
    assert pages(pg_db) == 1
    full = client.get(f"/api/v1/tickets/{t['id']}", headers=T.auth()).get_json()
    assert full["alert_counts"]["alerts"] == n and len(full["alerts"]) == 500
    # all of it resolves: one resolved incident, one page
    client.post("/webhook/alertmanager", data=json.dumps(T.payload([T.resolved(a) for a in alerts],
                                                                   group_key="storm")),
                headers={**T.auth(), "Content-Type": "application/json"})
    [t] = client.get("/api/v1/tickets", headers=T.auth()).get_json()
    assert t["status"] == "resolved" and pages(pg_db, "resolved") == 1
