"""Escalation with real PostgreSQL: timers in the database, row locks, ack/resolve, hooks."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tests.support import receiver as T
from webhook_receiver import escalation, scheduler
from webhook_receiver.app import close_app, create_app, state

pytestmark = pytest.mark.integration

API_TOKEN = "api-token-for-tests"
ONCALL = {"people": [{"name": "ann", "email": "ann@example.com"}, {"name": "bob", "email": "bob@example.com"},
                     {"name": "it-manager"}, {"name": "cto"}],
          # ann's week: the rotation's first handover is still ahead (with the default start,
          # 2026-01-05, it was bob's week every other week and this test failed then)
          "schedules": [{"name": "ops", "members": ["ann", "bob"],
                         "start": (datetime.now(timezone.utc).date() + timedelta(days=1)).isoformat()},
                        {"name": "it-manager", "members": ["it-manager"]},
                        {"name": "cto", "members": ["cto"]}]}


@pytest.fixture
def app(pg_db):
    a = create_app(T.config(pg_db, oncall=ONCALL, receiver={
        "api": {"tokens": [{"name": "tests", "token": API_TOKEN}]}}))
    yield a
    close_app(a)


@pytest.fixture
def client(app):
    return T.reader(app.test_client())  # API reads need a credential


def post(client, body):
    r = client.post("/webhook/alertmanager", json=body, headers=T.auth())
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def api(client, path, body=None):
    return client.post(f"/api/v1/tickets/{path}", json=body or {}, headers={"Authorization": f"Bearer {API_TOKEN}"})


def ticket(client, tid):
    return client.get(f"/api/v1/tickets/{tid}").get_json()


def later(seconds):
    return escalation.utcnow() + timedelta(seconds=seconds)


def test_l1_then_l2_then_l3_then_repeat(app, client):
    [tid] = post(client, T.payload([T.alert()]))["opened"]
    t = ticket(client, tid)
    assert (t["level"], t["assignee"]) == (1, "ann")
    st = state(app)
    assert scheduler.tick(st, now=later(60))["escalated"] == 0
    assert scheduler.tick(st, now=later(301))["escalated"] == 1
    t = ticket(client, tid)
    assert (t["level"], t["assignee"], t["status"]) == (2, "it-manager", "open")
    assert scheduler.tick(st, now=later(301))["escalated"] == 0  # same time again: nothing twice
    assert scheduler.tick(st, now=later(300 + 900 + 1))["escalated"] == 1
    assert (ticket(client, tid)["level"], ticket(client, tid)["assignee"]) == (3, "cto")
    assert scheduler.tick(st, now=later(300 + 900 + 1800 + 1))["escalated"] == 1
    ev = [e for e in ticket(client, tid)["events"] if e["kind"] == "escalated"]
    assert [(e["details"]["level"], e["details"]["repeat"]) for e in ev] == [(2, 0), (3, 0), (3, 1)]
    assert all(e["actor"] == "scheduler" for e in ev)


def test_ack_stops_and_resolve_ends(app, client):
    st = state(app)
    # two incidents (two Alertmanager groups)
    [a] = post(client, T.payload([T.alert(service="user-app")], group_key="g-user"))["opened"]
    [b] = post(client, T.payload([T.alert(service="gate-management")], group_key="g-gate"))["opened"]
    r = api(client, f"{a}/acknowledge", {"note": "looking"})
    assert r.status_code == 200 and r.get_json()["status"] == "acknowledged"
    assert r.get_json()["next_escalation_at"] is None
    post(client, T.payload([T.resolved(T.alert(service="gate-management"))], group_key="g-gate"))
    assert scheduler.tick(st, now=later(100000))["escalated"] == 0
    assert ticket(client, a)["level"] == 1 and ticket(client, b)["status"] == "resolved"
    # a resolved alert resolves an acknowledged ticket too
    post(client, T.payload([T.resolved(T.alert(service="user-app"))], group_key="g-user"))
    assert ticket(client, a)["status"] == "resolved"
    kinds = [e["kind"] for e in ticket(client, a)["events"]]
    assert kinds == ["opened", "acknowledged", "resolved"]
    assert api(client, f"{a}/acknowledge").status_code == 409


def test_tier_chooses_entry_level(client):
    [tid] = post(client, T.payload([T.alert(tier="3")]))["opened"]
    t = ticket(client, tid)
    assert (t["tier"], t["level"], t["assignee"]) == (3, 3, "cto")


def test_durations_in_seconds_and_the_thread_runs(pg_db):
    """A real scheduler thread with a 1s policy escalates on its own (no clock injection)."""
    cfg = T.config(pg_db, escalation={"policies": [{"name": "default", "repeat_interval": "1s", "levels": [
        {"name": "L1", "schedule": "ops", "ack_timeout": "1s"}, {"name": "L2", "schedule": "cto", "ack_timeout": "1s"}]}]},
        receiver={"scheduler": {"enabled": True, "interval": "0.2s"}})
    app = create_app(cfg)
    from webhook_receiver.app import start_scheduler
    got = threading.Event()

    def on_update(**kw):
        if kw.get("change") == "escalated" and kw["level"] == 2:
            got.set()
    hooks = state(app).hooks
    hooks.subscribe("ticket_updated", on_update)
    try:
        c = T.reader(app.test_client())
        [tid] = post(c, T.payload([T.alert()]))["opened"]
        start_scheduler(app)
        assert got.wait(30), "the scheduler thread did not escalate"
        assert ticket(c, tid)["level"] == 2
    finally:
        hooks.unsubscribe("ticket_updated", on_update)
        close_app(app)


def test_concurrent_schedulers_never_escalate_twice(app, client, pg_db):
    ids = [tid for i in range(20)  # twenty incidents
           for tid in post(client, T.payload([T.alert(service=f"svc-{i}")], group_key=f"g-{i}"))["opened"]]
    st = state(app)
    now = later(301)
    barrier = threading.Barrier(4)
    counts = []

    def run():
        with psycopg.connect(pg_db, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
            barrier.wait()
            n = 0
            for _ in range(5):
                n += escalation.run_due(st.ctx, conn, now=now, batch=3)
            counts.append(n)
    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 20
    with psycopg.connect(pg_db) as c:
        per = c.execute("select ticket_id, count(*) from ticket_events where kind = 'escalated' "
                        "group by 1").fetchall()
    assert sorted(t for t, _ in per) == sorted(ids) and {n for _, n in per} == {1}


def test_escalate_now_from_other_code(app, client, pg_db):
    [tid] = post(client, T.payload([T.alert()]))["opened"]
    api(client, f"{tid}/acknowledge")
    with psycopg.connect(pg_db, autocommit=True) as conn:  # plain tuple rows, like any caller's
        t = escalation.escalate_now(conn, tid, "playbook ladder exhausted", "remediation", ctx=state(app).ctx)
        assert t["level"] == 2 and t["status"] == "open"
    t = ticket(client, tid)
    ev = t["events"][-1]
    assert (ev["kind"], ev["actor"], ev["details"]["reason"], ev["details"]["forced"]) == \
        ("escalated", "remediation", "playbook ladder exhausted", True)
    assert t["status"] == "open" and t["next_escalation_at"] is not None
    with psycopg.connect(pg_db, autocommit=True) as conn:
        assert escalation.escalate_now(conn, 999999, "x", "y", ctx=state(app).ctx) is None


def test_hooks_fire_after_commit_and_failures_are_contained(app, client):
    seen = []

    def good(**kw):
        with psycopg.connect(kw["db_url"]) as c:  # the row is committed already
            row = c.execute("select status from tickets where id = %s", (kw["ticket_id"],)).fetchone()
        seen.append((kw["event"], kw["ticket_id"], row[0]))

    def bad(**kw):
        raise RuntimeError("subscriber bug")
    hooks = state(app).hooks
    for ev in ("ticket_opened", "ticket_resolved", "ticket_reopened", "ticket_updated"):
        hooks.subscribe(ev, bad)
        hooks.subscribe(ev, good)
    try:
        a = T.alert()
        [tid] = post(client, T.payload([a]))["opened"]
        api(client, f"{tid}/comment", {"text": "on it"})
        post(client, T.payload([T.resolved(a)]))
        post(client, T.payload([T.alert(starts_at="2026-11-26T10:00:00Z")]))
    finally:
        for ev in ("ticket_opened", "ticket_resolved", "ticket_reopened", "ticket_updated"):
            hooks.unsubscribe(ev, bad)
            hooks.unsubscribe(ev, good)
    assert seen == [("ticket_opened", tid, "open"), ("ticket_updated", tid, "open"),
                    ("ticket_resolved", tid, "resolved"), ("ticket_reopened", tid, "open")]
    with pytest.raises(ValueError):
        hooks.subscribe("ticket_exploded", good)


def test_silent_watchdog_opens_a_ticket_and_its_return_resolves_it(app, client):
    st = state(app)
    wd = T.alert("Watchdog", severity="info", tier="3", service="opsstack")
    r = post(client, T.payload([wd], receiver="opsstack-watchdog"))
    assert r["heartbeats"] == 1 and r["opened"] == []
    assert client.get("/api/v1/tickets").get_json() == []
    assert scheduler.tick(st, now=later(60))["heartbeat_alarms"] == []      # within heartbeat_timeout
    [tid] = scheduler.tick(st, now=later(601))["heartbeat_alarms"]
    t = ticket(client, tid)
    assert (t["alertname"], t["severity"], t["status"], t["service"]) == ("AlertingPipelineDown", "critical",
                                                                          "open", "alerting")
    assert scheduler.tick(st, now=later(700))["heartbeat_alarms"] == []     # one alarm, not one per tick
    post(client, T.payload([wd], receiver="opsstack-watchdog"))
    assert ticket(client, tid)["status"] == "resolved"


def test_after_a_restart_the_heartbeat_gets_one_timeout_before_an_alarm(app, client):
    """The stack was down for hours: the Watchdog's last arrival is old, but the pipeline is not
    silent until it has had heartbeat_timeout since this receiver started to deliver again."""
    st = state(app)
    wd = T.alert("Watchdog", severity="info", tier="3", service="opsstack")
    post(client, T.payload([wd], receiver="opsstack-watchdog"))
    with st.db.connection() as conn:
        conn.execute("update ticket_heartbeats set last_seen = now() - interval '3 hours'")
    st.watching_since = None  # a receiver process that starts now
    assert scheduler.tick(st)["heartbeat_alarms"] == []
    assert scheduler.tick(st, now=later(300))["heartbeat_alarms"] == []
    assert len(scheduler.tick(st, now=later(601))["heartbeat_alarms"]) == 1
