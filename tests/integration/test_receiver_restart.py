"""Escalation timers live in PostgreSQL: a receiver restarted mid-escalation carries on, and
two gunicorn workers running the scheduler never escalate the same step twice."""
from __future__ import annotations

import psycopg
import pytest
import requests

from tests.support import receiver as T
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration




def test_restart_in_the_middle_of_an_escalation(pg_db, tmp_path):
    data = {"database": {"url": pg_db}, "receiver": {"token": T.TOKEN, "scheduler": {"interval": "0.2s"}},
            "escalation": {"policies": [{"name": "default", "repeat_interval": "1h", "levels": [
                {"name": "L1", "schedule": "ops", "ack_timeout": "1h"},
                {"name": "L2", "schedule": "it-manager", "ack_timeout": "1h"}]}]}}
    first = T.ReceiverProcess(data, tmp_path / "a").start()
    try:
        r = requests.post(first.url + "/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth(),
                          timeout=5)
        assert r.json()["status"] == "accepted"  # queued processing (the default)
        tid = wait_for(lambda: requests.get(first.url + "/api/v1/tickets", headers=T.auth(), timeout=5).json())[0]["id"]
    finally:
        first.stop()  # down before the L1 timer runs out

    # the L1 deadline passes while nobody runs: moved into the past in the database itself, so
    # no sleep and no race with a slow stop (a 1h timeout cannot run out while the first is up)
    with psycopg.connect(pg_db) as c:
        assert c.execute("select level from tickets where id = %s", (tid,)).fetchone()[0] == 1
        c.execute("""update tickets set level_since = level_since - interval '1 hour 1 second',
                     next_escalation_at = next_escalation_at - interval '1 hour 1 second' where id = %s""", (tid,))

    second = T.ReceiverProcess(data, tmp_path / "b", workers=2).start()
    try:
        def level():
            return requests.get(f"{second.url}/api/v1/tickets/{tid}", headers=T.auth(), timeout=5).json()["level"]
        wait_for(lambda: level() == 2)
        t = requests.get(f"{second.url}/api/v1/tickets/{tid}", headers=T.auth(), timeout=5).json()
        assert t["assignee"] == "it-manager"
        assert [e["details"]["level"] for e in t["events"] if e["kind"] == "escalated"] == [2]
    finally:
        second.stop()
