"""Alert storms through the real Alertmanager into the real receiver (gunicorn, queued processing):
a group of 10,000 alerts is recorded whole, as ONE incident (receiver.incident_by: group), and
resolves whole.

Before: webhook max_alerts 0 (unlimited) and a 1 MiB body limit; a group of a few thousand alerts
got 413, which Alertmanager never retries: the storm was lost, and so was its resolved flush.
Now max_alerts is alertmanager.max_alerts (10,000 by default) and receiver.max_body_bytes is sized
for that many alerts; a larger group arrives truncated and the group records truncatedAlerts."""
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
        "resolve_timeout": "1h"}
STORM = 10_000




def q(url, sql, *args):
    with psycopg.connect(url) as c:
        return c.execute(sql, args or None).fetchall()


def storm_alerts(n: int, starts: datetime, ends: datetime | None = None, alertname="StormAlert") -> list[dict]:
    out = []
    for i in range(n):
        a = {"labels": {"alertname": alertname, "severity": "critical", "tier": "1", "service": "user-app",
                        "team": "ops", "instance": f"host-{i:05d}"},
             "annotations": {"summary": "A host of the user app is down.",
                             "description": f"host-{i:05d} of user-app does not answer its health check.",
                             "runbook_url": f"https://example.invalid/runbooks/{alertname}.md"},
             "startsAt": T.rfc3339(starts), "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up"}
        if ends is not None:
            a["endsAt"] = T.rfc3339(ends)
        out.append(a)
    return out


def push(am, alerts):
    r = requests.post(am.url + "/api/v2/alerts", json=alerts, timeout=120)
    assert r.status_code == 200, r.text


@pytest.fixture
def stack(pg_db, tmp_path):
    made = []

    def start(alertmanager: dict | None = None):
        am_section = {**FAST, **(alertmanager or {})}
        # the receiver sizes its body limit from the same alertmanager section
        rcv = T.ReceiverProcess({"database": {"url": pg_db}, "alertmanager": am_section,
                                 "receiver": {"token": T.TOKEN}}, tmp_path / "rcv")
        made.append(rcv)
        rcv.start(timeout=60)
        tok = tmp_path / "receiver_token"
        tok.write_text(T.TOKEN + "\n")
        am_cfg = amc.build(load_data({"alertmanager": am_section}), rcv.url + "/webhook/alertmanager", str(tok))
        am = Alertmanager(am_cfg, workdir=tmp_path / "am")
        made.append(am)
        am.start()
        return rcv, am

    yield start
    for p in reversed(made):
        p.stop()


def test_storm_of_10000_alerts_is_recorded_whole_and_resolves_whole(stack, pg_db):
    rcv, am = stack()
    starts = datetime.now(timezone.utc) - timedelta(minutes=5)
    push(am, storm_alerts(STORM, starts))

    def opened():
        n = q(pg_db, "select coalesce(sum(alert_count), 0) from tickets where alertname = 'StormAlert' "
                     "and status = 'open'")[0][0]
        return n == STORM or n
    wait_for(lambda: opened() is True, timeout=600, what=f"{STORM} alerts in open incidents")
    assert q(pg_db, "select count(*), count(distinct fingerprint) from ticket_alerts where status = 'firing'")[0] \
        == (STORM, STORM)
    # one group, one incident: one ticket, one page (however Alertmanager split its flushes)
    assert q(pg_db, "select count(*), sum(firing_count) from tickets")[0] == (1, STORM)
    assert q(pg_db, "select count(*) from ticket_events where kind = 'opened'")[0][0] == 1
    # one Alertmanager group; its notifications carried every alert and left none out
    [(count, truncated, peak)] = q(pg_db, "select last_alert_count, truncated_alerts, max_truncated_alerts "
                                          "from ticket_groups where group_key like '%StormAlert%'")
    assert (count, truncated, peak) == (STORM, 0, 0)
    assert q(pg_db, "select count(*) from ticket_payloads where error is not null")[0][0] == 0
    metrics = requests.get(rcv.url + "/metrics", timeout=30).text
    assert 'outcome="too_large"' not in metrics

    # every alert ends (endsAt in the past): Alertmanager sends the resolved flush of the group
    push(am, storm_alerts(STORM, starts, ends=datetime.now(timezone.utc) - timedelta(seconds=1)))
    wait_for(lambda: q(pg_db, "select count(*) from tickets where status <> 'resolved'")[0][0] == 0,
             timeout=600, what="every storm ticket resolved")
    assert q(pg_db, "select count(*) from tickets where status = 'resolved' and resolved_by = 'alertmanager'")[0][0] \
        == 1
    assert q(pg_db, "select count(*) from ticket_alerts where status = 'resolved' and ends_at is not null")[0][0] \
        == STORM


def test_group_larger_than_max_alerts_records_truncated_alerts(stack, pg_db):
    """Alertmanager leaves out what is above max_alerts (and says how many): the group shows it."""
    rcv, am = stack({"max_alerts": 100})
    starts = datetime.now(timezone.utc) - timedelta(minutes=5)
    push(am, storm_alerts(150, starts, alertname="TruncatedStorm"))
    # (the first flush may come while the 150 are still arriving: wait for the complete group)
    wait_for(lambda: q(pg_db, "select last_alert_count, truncated_alerts, max_truncated_alerts from ticket_groups "
                              "where group_key like '%TruncatedStorm%'") == [(100, 50, 50)],
             timeout=600, what="the group recorded with 50 alerts left out")
    wait_for(lambda: q(pg_db, "select count(*), sum(alert_count) from tickets where alertname = 'TruncatedStorm'")
             == [(1, 100)], timeout=600, what="one incident of 100 alerts")
    t = q(pg_db, "select id from tickets where alertname = 'TruncatedStorm' limit 1")[0][0]
    got = requests.get(f"{rcv.url}/api/v1/tickets/{t}", headers=T.auth(), timeout=10).json()
    assert got["group"]["truncated_alerts"] == 50
