"""A real two-node Alertmanager cluster delivers real notifications to the real receiver
(gunicorn): one ticket per alert episode, resolved when the alerts resolve; the Watchdog
heartbeat is recorded, never a ticket."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import requests

from stack import alertmanager_config as amc
from core.config import load_data
from tests.support.servers import Alertmanager
from tests.support import receiver as T
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

FAST = {"critical_group_wait": "1s", "critical_group_interval": "1s", "critical_repeat_interval": "1h",
        "warning_group_wait": "1s", "warning_group_interval": "1s", "watchdog_repeat_interval": "1h",
        "resolve_timeout": "1m"}




def push(ams, alerts):
    for am in ams:  # Prometheus sends every alert to every Alertmanager
        r = requests.post(am.url + "/api/v2/alerts", json=alerts, timeout=5)
        assert r.status_code == 200, r.text


def q(url, sql):
    with psycopg.connect(url) as c:
        return c.execute(sql).fetchall()


@pytest.fixture
def stack(pg_db, tmp_path):
    rcv = T.ReceiverProcess({"database": {"url": pg_db}, "receiver": {"token": T.TOKEN}}, tmp_path / "rcv").start()
    tok = tmp_path / "receiver_token"
    tok.write_text(T.TOKEN + "\n")
    am_cfg = amc.build(load_data({"alertmanager": FAST}), rcv.url + "/webhook/alertmanager", str(tok))
    a = b = None
    try:
        a = Alertmanager(am_cfg, workdir=tmp_path / "am1", cluster=True).start()
        b = Alertmanager(am_cfg, workdir=tmp_path / "am2", peers=[a.cluster_address]).start()
        wait_for(lambda: len(requests.get(a.url + "/api/v2/status", timeout=5).json()["cluster"]["peers"]) == 2)
        yield rcv, a, b
    finally:
        for am in (b, a):
            if am is not None:
                am.stop()
        rcv.stop()


def test_two_clustered_alertmanagers_make_one_ticket(stack, pg_db):
    rcv, a, b = stack
    starts = datetime.now(timezone.utc) - timedelta(minutes=1)
    labels = {"alertname": "ServiceDown", "severity": "critical", "tier": "1", "service": "user-app", "team": "ops"}
    alert = {"labels": labels, "annotations": {"summary": "A service is down."},
             "startsAt": T.rfc3339(starts), "generatorURL": "http://127.0.0.1:9090/graph"}
    wd = {"labels": {"alertname": "Watchdog", "severity": "info", "tier": "3", "service": "opsstack", "team": "ops"},
          "annotations": {"summary": "The alerting pipeline is alive."}, "startsAt": T.rfc3339(starts)}
    push([a, b], [alert, wd])

    tickets = wait_for(lambda: requests.get(rcv.url + "/api/v1/tickets?status=open", headers=T.auth(), timeout=5).json())
    assert len(tickets) == 1
    t = tickets[0]
    assert (t["alertname"], t["service"], t["severity"], t["tier"]) == ("ServiceDown", "user-app", "critical", 1)
    wait_for(lambda: q(pg_db, "select count(*) from ticket_heartbeats where alertname = 'Watchdog'")[0][0] == 1)
    # a warning on the same service is inhibited by the critical one while it fires
    warn = {"labels": {**labels, "alertname": "HighLatency", "severity": "warning"}, "startsAt": T.rfc3339(starts)}
    push([a, b], [warn])

    def inhibited(am):
        got = requests.get(am.url + "/api/v2/alerts", params={"filter": 'alertname="HighLatency"'}, timeout=5).json()
        return got and got[0]["status"]["state"] == "suppressed" and got[0]["status"]["inhibitedBy"]
    wait_for(lambda: inhibited(a) and inhibited(b))
    assert q(pg_db, "select count(*) from tickets where alertname in ('HighLatency', 'Watchdog')")[0][0] == 0

    ends = datetime.now(timezone.utc)
    push([a, b], [{**alert, "endsAt": T.rfc3339(ends)}])
    wait_for(lambda: requests.get(f"{rcv.url}/api/v1/tickets/{t['id']}", headers=T.auth(), timeout=5).json()["status"] == "resolved")
    # the critical is gone: the warning is no longer inhibited and becomes its own (one) ticket
    wait_for(lambda: requests.get(rcv.url + "/api/v1/tickets?status=open", headers=T.auth(), timeout=5).json())
    got = requests.get(rcv.url + "/api/v1/tickets", headers=T.auth(), timeout=5).json()
    assert sorted((x["alertname"], x["status"]) for x in got) == [("HighLatency", "open"), ("ServiceDown", "resolved")]
    assert q(pg_db, "select count(*) from tickets where alertname = 'Watchdog'")[0][0] == 0
    receivers = {r[0] for r in q(pg_db, "select receiver from ticket_payloads")}
    assert {"opsstack-critical", "opsstack-watchdog"} <= receivers
    kinds = [e["kind"] for e in requests.get(f"{rcv.url}/api/v1/tickets/{t['id']}", headers=T.auth(), timeout=5).json()["events"]]
    assert kinds == ["opened", "resolved"]


def test_two_independent_alertmanagers_both_deliver_one_ticket(pg_db, tmp_path):
    """Without gossip both certainly send the same alert: still one ticket."""
    rcv = T.ReceiverProcess({"database": {"url": pg_db}, "receiver": {"token": T.TOKEN}}, tmp_path / "rcv",
                            workers=2).start()
    tok = tmp_path / "receiver_token"
    tok.write_text(T.TOKEN)
    am_cfg = amc.build(load_data({"alertmanager": FAST}), rcv.url + "/webhook/alertmanager", str(tok))
    ams = []
    try:
        ams += [Alertmanager(am_cfg, workdir=tmp_path / f"am{i}").start() for i in (1, 2)]
        starts = datetime.now(timezone.utc) - timedelta(minutes=1)
        push(ams, [{"labels": {"alertname": "PlatformDown", "severity": "critical", "tier": "3",
                               "service": "integrated-platform", "team": "ops"}, "startsAt": T.rfc3339(starts)}])
        wait_for(lambda: q(pg_db, "select count(distinct body->>'externalURL') from ticket_payloads "
                                  "where processed_at is not null")[0][0] == 2)
        got = requests.get(rcv.url + "/api/v1/tickets", headers=T.auth(), timeout=5).json()
        assert len(got) == 1 and got[0]["level"] == 3
        assert {r[0] for r in q(pg_db, "select receiver from ticket_payloads")} == {"opsstack-critical-tier3"}
    finally:
        for am in ams:
            am.stop()
        rcv.stop()
