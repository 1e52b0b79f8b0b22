"""A playbook with a schedule (the scheduled restart of a predicted OOM) against real PostgreSQL
and a real Prometheus: the run is recorded as scheduled in the next low-traffic window before the
deadline, its delayed job (automation_jobs, lane 'scheduled') runs the ladder when due through
the receiver's job runner, an imminent deadline acts at once, and a ticket that resolves first
cancels it (no action). The traffic profile and the deadline are PromQL the test controls: the
traffic is a function of the evaluation hour (lowest 6 hours from now), so a 7-day range query
has a daily shape without 7 days of data."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from core.config import view
from tests.integration.test_remediation_runner import (  # noqa: F401 - fixtures
    _restore_context, action, alert, make_cfg, prom, rows, runner, service, svc, ticket)
from webhook_receiver import jobs

pytestmark = pytest.mark.integration


def _schedule(deadline_s: int) -> dict:
    quiet = (datetime.now(timezone.utc).hour + 6) % 24
    return {"deadline": f"vector({deadline_s})",
            "traffic": f"1 + abs(hour() - {quiet})",
            "timezone": "UTC", "history": "2d", "quiet_share": 0.25, "min_lead": "1h", "margin": "30m"}


def _run_due(db, cfg, r, now):
    with psycopg.connect(db, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        return jobs.run_due(c, view(cfg, "remediation"), lambda tid: None, lambda: r, lane="scheduled", now=now)


def _comments(db, tid):
    return [e["details"].get("text", "") for e in rows(db, "select details from ticket_events where ticket_id = %s "
                                                           "and kind = 'comment' order by id", tid)]


def test_scheduled_in_the_low_traffic_window_then_run_by_its_job(pg_db, prom, svc):
    cfg = make_cfg(pg_db, prom, [action("fix", "/fix")], schedule=_schedule(2 * 86400))
    r = runner(cfg, pg_db, svc)
    a = alert(fp="sched-1")
    tid = ticket(pg_db, a)
    out = r.handle_ticket(tid)
    assert out.status == "scheduled", out
    run = rows(pg_db, "select * from remediation_runs where id = %s", out.run_id)[0]
    assert run["status"] == "scheduled" and run["scheduled_for"] > datetime.now(timezone.utc) + timedelta(hours=2)
    assert run["deadline_at"] > run["scheduled_for"]
    job = rows(pg_db, "select * from automation_jobs where ticket_id = %s and kind = 'scheduled'", tid)[0]
    assert job["lane"] == "scheduled" and job["next_attempt_at"] == run["scheduled_for"]
    text = _comments(pg_db, tid)[-1]
    assert "restart scheduled at" in text and "(low traffic), predicted OOM at" in text
    assert svc.calls == [], "nothing runs before the scheduled time"
    assert _run_due(pg_db, cfg, r, datetime.now(timezone.utc)) == 0, "not due yet"
    # at the scheduled time the receiver's job runner takes it and the ladder runs (and verifies)
    assert _run_due(pg_db, cfg, r, run["scheduled_for"] + timedelta(seconds=1)) == 1
    assert svc.calls == ["/fix"]
    run = rows(pg_db, "select * from remediation_runs where id = %s", out.run_id)[0]
    assert run["status"] == "recovered", run["reason"]
    assert rows(pg_db, "select status from automation_jobs where id = %s", job["id"])[0]["status"] == "done"


def test_an_imminent_oom_acts_at_once(pg_db, prom, svc):
    cfg = make_cfg(pg_db, prom, [action("fix", "/fix")], schedule=_schedule(1200))
    r = runner(cfg, pg_db, svc)
    tid = ticket(pg_db, alert(fp="sched-2"))
    out = r.handle_ticket(tid)
    assert out.status == "recovered" and svc.calls == ["/fix"]
    assert any("restarting now" in c and "too soon" in c for c in _comments(pg_db, tid))
    assert rows(pg_db, "select count(*) n from automation_jobs where ticket_id = %s and kind = 'scheduled'",
                tid)[0]["n"] == 0


def test_a_ticket_resolved_before_the_time_cancels_the_restart(pg_db, prom, svc):
    cfg = make_cfg(pg_db, prom, [action("fix", "/fix")], schedule=_schedule(2 * 86400))
    r = runner(cfg, pg_db, svc)
    assert "restore" in jobs.wanted(view(cfg, "enrichment"), view(cfg, "remediation"), r.playbooks, None)
    tid = ticket(pg_db, alert(fp="sched-3"))
    out = r.handle_ticket(tid)
    assert out.status == "scheduled"
    with psycopg.connect(pg_db) as c:
        c.execute("update tickets set status = 'resolved' where id = %s", (tid,))
        c.execute("update ticket_alerts set status = 'resolved' where ticket_id = %s", (tid,))
    got = r.restore(tid)                        # the ticket_resolved hook's restore job
    assert [o.status for o in got] == ["cancelled"]
    run = rows(pg_db, "select status, reason from remediation_runs where id = %s", out.run_id)[0]
    assert run["status"] == "cancelled" and "resolved" in run["reason"]
    assert "scheduled restart cancelled" in _comments(pg_db, tid)[-1]
    far = datetime.now(timezone.utc) + timedelta(days=3)
    assert _run_due(pg_db, cfg, r, far) == 1     # the job finds the run cancelled: done, no action
    assert svc.calls == []
    assert rows(pg_db, "select status from remediation_runs where id = %s", out.run_id)[0]["status"] == "cancelled"


def test_the_alert_resolved_at_the_time_cancels_too(pg_db, prom, svc):
    """The alert episode ended without the ticket's restore job (an incident's other alert still
    fires): the job itself cancels at its time."""
    cfg = make_cfg(pg_db, prom, [action("fix", "/fix")], schedule=_schedule(2 * 86400))
    r = runner(cfg, pg_db, svc)
    tid = ticket(pg_db, alert(fp="sched-4"))
    out = r.handle_ticket(tid)
    assert out.status == "scheduled"
    with psycopg.connect(pg_db) as c:
        c.execute("update ticket_alerts set status = 'resolved' where ticket_id = %s", (tid,))
    assert _run_due(pg_db, cfg, r, datetime.now(timezone.utc) + timedelta(days=3)) == 1
    assert svc.calls == []
    assert rows(pg_db, "select status from remediation_runs where id = %s", out.run_id)[0]["status"] == "cancelled"
