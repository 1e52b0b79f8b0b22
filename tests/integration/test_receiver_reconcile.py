"""Reconciliation with Alertmanager (webhook_receiver/reconcile.py): a real two-node Alertmanager
cluster delivers real notifications (captured by a fake webhook and replayed into the receiver,
so a lost resolved notification is simply one not replayed); the receiver, on real PostgreSQL,
closes the episodes whose alert no member has any more, and nothing else."""
from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import requests

from core.config import load_data
from core.procs import free_port
from stack import alertmanager_config as amc
from tests.support import receiver as T
from tests.support.fakehttp import FakeHTTP
from tests.support.servers import Alertmanager
from tests.support.wait import wait_for
from webhook_receiver import heartbeat, reconcile, scheduler
from webhook_receiver.app import close_app, create_app, state

pytestmark = pytest.mark.integration

HOOK = "/webhook/alertmanager"
AM = {"critical_group_wait": "1s", "critical_group_interval": "1s", "critical_repeat_interval": "1h",
      "warning_group_wait": "1s", "warning_group_interval": "1s", "watchdog_repeat_interval": "1h",
      "resolve_timeout": "1h"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(fake webhook that records Alertmanager's notifications, member a, member b)."""
    tmp = tmp_path_factory.mktemp("reconcile")
    hook = FakeHTTP({"POST " + HOOK: 200}).start()
    tok = tmp / "receiver_token"
    tok.write_text(T.TOKEN + "\n")
    cfg = amc.build(load_data({"alertmanager": AM}), hook.url + HOOK, str(tok))
    a = b = None
    try:
        a = Alertmanager(cfg, workdir=tmp / "am1", cluster=True).start()
        b = Alertmanager(cfg, workdir=tmp / "am2", peers=[a.cluster_address]).start()
        wait_for(lambda: len(requests.get(a.url + "/api/v2/status", timeout=5).json()["cluster"]["peers"]) == 2)
        yield hook, a, b
    finally:
        for am in (b, a):
            if am is not None:
                am.stop()
        hook.stop()


def settings(*urls, **kw):
    base = {"alertmanager_urls": list(urls), "grace": "0s", "min_uptime": "0s", "timeout": "5s"}
    return {"reconcile": {**base, **kw}}


@pytest.fixture
def make_app(pg_db, cluster):
    made = []

    def make(**receiver):
        _, a, b = cluster
        rec = {**settings(a.url, b.url)["reconcile"], **receiver.pop("reconcile", {})}
        app = create_app(T.config(pg_db, receiver={"reconcile": rec, **receiver}))
        made.append(app)
        return app
    yield make
    for app in made:
        close_app(app)


def am_alert(service: str, alertname: str = "ServiceDown", ends: datetime | None = None, **labels) -> dict:
    now = datetime.now(timezone.utc)
    return {"labels": {"alertname": alertname, "severity": "critical", "tier": "1", "service": service,
                       "team": "ops", **labels},
            "annotations": {"summary": f"{alertname} on {service}"},
            "startsAt": T.rfc3339(now - timedelta(minutes=1)),
            "endsAt": T.rfc3339(ends or now + timedelta(hours=1)),
            "generatorURL": "http://127.0.0.1:9090/graph"}


def push(ams, alerts):
    for am in ams:  # Prometheus sends every alert to every member
        r = requests.post(am.url + "/api/v2/alerts", json=alerts, timeout=5)
        assert r.status_code == 200, r.text


def gone_from(ams, alerts):
    """Push the alerts as ended (endsAt in the past, same startsAt) and wait until no member lists them."""
    now = datetime.now(timezone.utc)
    push(ams, [{**x, "endsAt": T.rfc3339(now - timedelta(seconds=1))} for x in alerts])
    wait_for(lambda: not any(x["labels"] == y["labels"] for am in ams for x in active(am) for y in alerts),
             what="the alerts ended in Alertmanager")


def active(am) -> list[dict]:
    r = requests.get(am.url + "/api/v2/alerts", params=reconcile.ALERT_PARAMS, timeout=5)
    assert r.status_code == 200
    return r.json()


def notification(hook, service: str, n: int = 1) -> dict:
    """The first firing notification Alertmanager sent for ``service`` with ``n`` alerts."""
    def find():
        for req in hook.find("POST", HOOK):
            body = req.json
            if (body["status"] == "firing" and len(body["alerts"]) == n
                    and all(x["labels"].get("service") == service for x in body["alerts"])):
                return body
        return None
    return wait_for(find, timeout=90, what=f"a notification for {service}")


def deliver(app, body: dict) -> None:
    r = app.test_client().post(HOOK, json=body, headers=T.auth())
    assert r.status_code == 200, r.get_json()


def ticket(app, tid: int) -> dict:
    return T.reader(app.test_client()).get(f"/api/v1/tickets/{tid}").get_json()


def q(app, sql, *args):
    with psycopg.connect(state(app).cfg["database"]["url"]) as c:
        return c.execute(sql, args).fetchall()


def open_ticket(app, hook, ams, *alerts) -> int:
    """Alerts fired in Alertmanager, notified, the notification applied: the ticket's id."""
    push(ams, list(alerts))
    body = notification(hook, alerts[0]["labels"]["service"], len(alerts))
    deliver(app, body)
    rows = q(app, "select id from tickets where status = 'open' and service = %s", alerts[0]["labels"]["service"])
    assert len(rows) == 1
    return rows[0][0]


def run(app, **over):
    st = state(app)
    rec = dataclasses.replace(st.receiver.reconcile, **over)
    with st.db.connection() as conn:
        return reconcile.run(st.ctx, conn, rec, None)


def svc() -> str:
    return "svc-" + uuid.uuid4().hex[:8]


def test_api_fingerprint_is_the_webhook_fingerprint(cluster):
    hook, a, b = cluster
    s = svc()
    push([a, b], [am_alert(s)])
    body = notification(hook, s)
    for am in (a, b):
        listed = [x["fingerprint"] for x in active(am) if x["labels"]["service"] == s]
        assert listed == [body["alerts"][0]["fingerprint"]]


def test_ticket_of_a_gone_alert_resolves_with_the_event(cluster, make_app):
    hook, a, b = cluster
    app = make_app()
    x = am_alert(svc())
    tid = open_ticket(app, hook, [a, b], x)
    gone_from([a, b], [x])  # its resolved notification is never applied: lost

    out = run(app)
    assert out["outcome"] == "ok" and out["closed"] == 1
    t = ticket(app, tid)
    assert t["status"] == "resolved"
    kinds = [(e["kind"], e["details"].get("reason")) for e in t["events"]]
    assert (reconcile.EVENT_KIND, reconcile.REASON) in kinds
    assert ("resolved", reconcile.REASON) in kinds
    assert q(app, "select status from ticket_alerts where ticket_id = %s", tid) == [("resolved",)]
    assert run(app)["closed"] == 0  # nothing left to close


def test_active_alert_stays_open_in_either_member_and_when_silenced(cluster, make_app):
    hook, a, b = cluster
    app = make_app()
    both, only_b, silenced = am_alert(svc()), am_alert(svc()), am_alert(svc())
    t_both = open_ticket(app, hook, [a, b], both)
    t_b = open_ticket(app, hook, [b], only_b)  # a never heard of it (alerts are not gossiped)
    t_sil = open_ticket(app, hook, [a, b], silenced)
    now = datetime.now(timezone.utc)
    sil = {"matchers": [{"name": "service", "value": silenced["labels"]["service"], "isRegex": False}],
           "startsAt": T.rfc3339(now), "endsAt": T.rfc3339(now + timedelta(hours=1)),
           "createdBy": "test", "comment": "maintenance"}
    assert requests.post(a.url + "/api/v2/silences", json=sil, timeout=5).status_code == 200

    def suppressed(am):
        got = [x for x in active(am) if x["labels"]["service"] == silenced["labels"]["service"]]
        return got and got[0]["status"]["state"] == "suppressed" and got[0]["status"]["silencedBy"]
    wait_for(lambda: suppressed(a) and suppressed(b), what="the silence gossiped to both members")

    out = run(app)
    assert out["outcome"] == "ok" and out["closed"] == 0 and out["candidates"] == 3
    for tid in (t_both, t_b, t_sil):
        assert ticket(app, tid)["status"] == "open"
    gone_from([b], [only_b])  # now in no member: closed
    assert run(app)["closed"] == 1
    assert ticket(app, t_b)["status"] == "resolved"
    assert ticket(app, t_both)["status"] == ticket(app, t_sil)["status"] == "open"


def test_a_member_that_fails_closes_nothing(cluster, make_app):
    hook, a, b = cluster
    app = make_app()
    x = am_alert(svc())
    tid = open_ticket(app, hook, [a, b], x)
    gone_from([a, b], [x])
    before = _runs("member_error")
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeHTTP({"GET /api/v2/status": requests.get(a.url + "/api/v2/status", timeout=5).json(),
                   "GET /api/v2/alerts": (200, "{not json", {"Content-Type": "application/json"})}) as bad, \
            FakeHTTP({"GET /api/v2/status": 503}) as down:
        for urls in ([a.url, dead], [a.url, bad.url], [down.url, b.url]):
            out = run(app, alertmanager_urls=tuple(urls))
            assert out["outcome"] == "member_error" and out["closed"] == 0, urls
            assert ticket(app, tid)["status"] == "open"
    assert _runs("member_error") == before + 3
    assert run(app)["closed"] == 1  # every member answers again


def _runs(outcome: str) -> float:
    from webhook_receiver.metrics import RECONCILE_RUNS
    return RECONCILE_RUNS.labels(outcome)._value.get()


def test_incident_stays_open_until_its_last_alert_is_gone(cluster, make_app):
    hook, a, b = cluster
    app = make_app()
    s = svc()
    x1, x2 = am_alert(s, region="eu"), am_alert(s, region="us")
    tid = open_ticket(app, hook, [a, b], x1, x2)
    assert ticket(app, tid)["firing_count"] == 2
    gone_from([a, b], [x2])

    assert run(app)["closed"] == 1
    t = ticket(app, tid)
    assert t["status"] == "open" and t["firing_count"] == 1
    eps = dict(q(app, "select labels->>'region', status from ticket_alerts where ticket_id = %s", tid))
    assert eps == {"eu": "firing", "us": "resolved"}
    gone_from([a, b], [x1])
    assert run(app)["closed"] == 1
    assert ticket(app, tid)["status"] == "resolved"


def test_nothing_closes_within_the_grace_period_or_while_alertmanager_is_young(cluster, make_app):
    hook, a, b = cluster
    app = make_app()
    x = am_alert(svc())
    tid = open_ticket(app, hook, [a, b], x)
    gone_from([a, b], [x])
    out = run(app, grace=3600.0)
    assert out["closed"] == 0 and ticket(app, tid)["status"] == "open"
    out = run(app, min_uptime=3600.0)
    assert out["outcome"] == "young_alertmanager" and ticket(app, tid)["status"] == "open"
    assert run(app)["closed"] == 1


def test_heartbeat_alarm_is_not_reconciled(cluster, make_app):
    _, a, b = cluster
    app = make_app()
    st = state(app)
    now = datetime.now(timezone.utc)
    with st.db.connection() as conn:
        conn.execute("insert into ticket_heartbeats (alertname, last_seen) values ('Watchdog', %s)",
                     (now - timedelta(hours=1),))
        # the Watchdog is silent: the pipeline alarm opens (an alert no Alertmanager has)
        assert heartbeat.check(st.ctx, conn, now, 600.0)
    assert q(app, "select count(*) from tickets where alertname = 'AlertingPipelineDown' and status = 'open'") == [(1,)]
    run(app)
    assert q(app, "select count(*) from tickets where alertname = 'AlertingPipelineDown' and status = 'open'") == [(1,)]


def test_runs_at_start_of_the_receiver(cluster, pg_db, make_app, tmp_path):
    hook, a, b = cluster
    app = make_app()
    x = am_alert(svc())
    tid = open_ticket(app, hook, [a, b], x)
    gone_from([a, b], [x])  # while the receiver was down
    rcv = T.ReceiverProcess({"database": {"url": pg_db}, "receiver": {
        "token": T.TOKEN, **settings(a.url, b.url, interval="1h")}}, tmp_path / "rcv").start()
    try:
        wait_for(lambda: ticket(app, tid)["status"] == "resolved", timeout=90, what="reconciled at start")
    finally:
        rcv.stop()


def test_scheduler_runs_it_at_the_first_pass_then_every_interval(make_app):
    st = state(make_app())
    assert scheduler.tick(st)["reconcile"]["outcome"] == "ok"
    assert "reconcile" not in scheduler.tick(st)  # interval 5m: not again yet
    for off in ({"alertmanager_urls": None}, {"alertmanager_urls": []}, {"enabled": False}):
        assert "reconcile" not in scheduler.tick(state(make_app(reconcile=off))), off
