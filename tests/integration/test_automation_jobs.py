"""Enrichment and remediation are durable jobs in PostgreSQL (webhook_receiver/jobs.py): a ticket
opened while no worker runs is enriched after a restart, a job that hit a database error is
retried, and a remediation run whose replica died is marked failed on its ticket."""
from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from core.procs import free_port
from tests.support import receiver as T
from webhook_receiver import scheduler
from webhook_receiver.app import close_app, create_app, state
from webhook_receiver.escalation import utcnow
from webhook_receiver.remediation import store
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

PLAYBOOK = {"name": "restart-service", "match": {"alertname": "ServiceDown"}, "target": "demo-{service}",
            "actions": [{"name": "restart", "backend": "command",
                         "params": {"argv": ["echo", "restarted demo-{service}"]}, "verify_window": "0s"}]}




def rows(db, q, *args):
    with psycopg.connect(db, autocommit=True, row_factory=dict_row) as c:
        return c.execute(q, args).fetchall()


def fire(c, alertname="ServiceDown", **labels) -> int:
    r = c.post("/webhook/alertmanager", json=T.payload([T.alert(alertname, **labels)]), headers=T.auth())
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["opened"][0]


def test_a_ticket_opened_while_no_worker_runs_is_enriched_after_a_restart(pg_db, tmp_path):
    for svc in ("user-app", "gate-management"):
        (tmp_path / f"{svc}.log").write_text("".join(f"{svc} line {i}\n" for i in range(10)))
    enrichment = {"prometheus_url": f"http://127.0.0.1:{free_port()}", "alertmanager_url": None,
                  "timeout": "2s", "logs": {"source": "file", "file": str(tmp_path / "{service}.log"), "lines": 2}}
    # the web process of a `background: process` receiver whose background process is down
    first = create_app(T.config(pg_db, enrichment=enrichment, receiver={"background": "process"}))
    try:
        c = first.test_client()
        t1 = fire(c)
        t2 = fire(c, "HighLatency", service="gate-management")
    finally:
        close_app(first)
    jobs = rows(pg_db, "select ticket_id, kind, status from automation_jobs order by id")
    assert [(j["ticket_id"], j["kind"], j["status"]) for j in jobs] == [(t1, "enrichment", "pending"),
                                                                       (t2, "enrichment", "pending")]
    # t2's receiver died between the ticket's commit and its hook: no job at all
    rows(pg_db, "delete from automation_jobs where ticket_id = %s returning id", t2)
    assert rows(pg_db, "select count(*) n from ticket_attachments")[0]["n"] == 0

    second = create_app(T.config(pg_db, enrichment=enrichment))  # the restart: a new process, same DB
    try:
        scheduler.tick(state(second))  # sweeps t2's missing job, runs both
        for tid, svc in ((t1, "user-app"), (t2, "gate-management")):
            body = wait_for(lambda: rows(pg_db, "select body from ticket_attachments where ticket_id = %s "
                                                "and name = 'logs.txt'", tid))[0]["body"]
            assert bytes(body).decode() == f"{svc} line 8\n{svc} line 9"
        done = wait_for(lambda: [j for j in rows(pg_db, "select * from automation_jobs order by ticket_id")
                                 if j["status"] == "done"] if all(
            j["status"] == "done" for j in rows(pg_db, "select status from automation_jobs")) else None)
        assert [(j["ticket_id"], j["kind"], j["attempts"]) for j in done] == [(t1, "enrichment", 1),
                                                                              (t2, "enrichment", 1)]
        scheduler.tick(state(second))  # nothing twice
        assert rows(pg_db, "select count(*) n from automation_jobs")[0]["n"] == 2
    finally:
        close_app(second)


def test_a_remediation_job_that_hit_a_database_error_is_retried(pg_db):
    cfg = T.config(pg_db, enrichment={"enabled": False},
                   remediation={"playbooks": [PLAYBOOK], "verify_interval": "0.05s",
                                "jobs": {"initial_backoff": "30s", "max_backoff": "1m"}})
    app = create_app(cfg)
    try:
        st, c = state(app), app.test_client()
        with psycopg.connect(pg_db, autocommit=True) as conn:  # the runs table is unreachable for a while
            conn.execute("alter table remediation_runs rename to remediation_runs_away")
        tid = fire(c)
        job = wait_for(lambda: [j for j in rows(pg_db, "select * from automation_jobs where kind = 'remediation'")
                                if j["attempts"] == 1])[0]
        assert job["status"] == "pending" and "remediation_runs" in job["last_error"]
        assert job["next_attempt_at"] > utcnow()  # backoff
        with psycopg.connect(pg_db, autocommit=True) as conn:
            conn.execute("alter table remediation_runs_away rename to remediation_runs")
        scheduler.tick(st, now=utcnow() + timedelta(seconds=31))  # the retry is due
        job = wait_for(lambda: [j for j in rows(pg_db, "select * from automation_jobs where kind = 'remediation'")
                                if j["status"] == "done"])[0]
        assert job["attempts"] == 2 and job["last_error"] is None
        with store.connect(pg_db, autocommit=True) as conn:
            [run] = store.ticket_runs(conn, tid)
        assert run["playbook"] == "restart-service" and run["attempts"][0]["status"] == "ok"
    finally:
        close_app(app)


def test_a_run_whose_replica_died_is_marked_failed_on_its_ticket(pg_db):
    cfg = T.config(pg_db, enrichment={"enabled": False},
                   remediation={"playbooks": [PLAYBOOK], "orphan_after": "60s"},
                   receiver={"api": {"anonymous_read": True}})
    app = create_app(cfg)
    try:
        st, c = state(app), app.test_client()
        tid = fire(c, "DiskAlmostFull")  # no playbook: no run of its own

        def run(target, status, age):
            return rows(pg_db, """insert into remediation_runs (ticket_id, playbook, target, alertname, fingerprint,
                                      alert_starts_at, status, created_at, started_at, replica)
                                  values (%s, 'restart-service', %s, 'DiskAlmostFull', %s, now(), %s,
                                          now() - make_interval(secs => %s), now() - make_interval(secs => %s),
                                          'host-a:4242') returning id""",
                        tid, target, target, status, age, age)[0]["id"]
        dead = run("demo-a", "running", 3600)        # its replica was killed mid-ladder
        alive = run("demo-b", "running", 3600)       # a long run whose replica still holds the run lock
        young = run("demo-c", "running", 5)          # too young to judge
        with psycopg.connect(pg_db, autocommit=True) as holder:
            holder.execute("select pg_advisory_lock(%s, hashtext(%s))",
                           (store.RUN_LOCK_CLASS, "restart-service|demo-b"))
            out = scheduler.tick(st)
            assert out["remediation_orphans"] == 1, out
            assert scheduler.tick(st)["remediation_orphans"] == 0  # once; the live run is left alone
        status = {r["id"]: r for r in rows(pg_db, "select id, status, reason from remediation_runs")}
        assert status[dead]["status"] == "failed" and "host-a:4242" in status[dead]["reason"]
        assert status[alive]["status"] == "running" and status[young]["status"] == "running"
        t = c.get(f"/api/v1/tickets/{tid}").get_json()
        [ev] = [e for e in t["events"] if e["kind"] == "remediation"]
        assert ev["details"]["status"] == "failed" and ev["details"]["target"] == "demo-a"
        assert [e for e in t["events"] if e["kind"] == "escalated"] and t["level"] == 2  # handed to people
    finally:
        close_app(app)


def test_alerts_joining_an_incident_queue_remediation_only_for_a_playbook_and_once_while_one_waits(pg_db):
    # background: process: this web process runs no job, so queued ones stay pending
    cfg = T.config(pg_db, enrichment={"enabled": False}, remediation={"playbooks": [PLAYBOOK]},
                   receiver={"background": "process"})
    app = create_app(cfg)
    key = '{}/{severity="critical"}:{group="g1"}'

    def send(*alerts) -> dict:
        r = app.test_client().post("/webhook/alertmanager", json=T.payload(list(alerts), group_key=key),
                                   headers=T.auth())
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.get_json()

    def remediation_jobs():
        return rows(pg_db, "select dedup_key, status from automation_jobs where kind = 'remediation' order by id")

    try:
        first = T.alert("ServiceDown", service="user-app")
        [tid] = send(first)["opened"]
        assert [j["dedup_key"] for j in remediation_jobs()] == [f"remediation:{tid}:0"]
        other = T.alert("DiskFull", service="user-app")  # no playbook matches it
        assert send(first, other)["attached"] == [tid]
        assert len(remediation_jobs()) == 1
        second = T.alert("ServiceDown", service="gate-management")  # matches, but the first job still waits
        assert send(first, other, second)["attached"] == [tid]
        assert len(remediation_jobs()) == 1
        rows(pg_db, "update automation_jobs set status = 'done', done_at = now() returning id")
        third = T.alert("ServiceDown", service="lost-found")  # matches, no job waits: one more
        assert send(first, other, second, third)["attached"] == [tid]
        jobs = remediation_jobs()
        assert len(jobs) == 2 and jobs[1]["status"] == "pending" and jobs[1]["dedup_key"].startswith(f"remediation:{tid}:0:a")
    finally:
        close_app(app)


def test_incidents_no_playbook_knows_queue_no_remediation_and_no_restore(pg_db):
    """A storm of alerts no playbook matches: each incident's remediation job is written done and
    skipped (no worker runs it, no run is recorded), the sweep does not queue it again, and its
    resolve writes the restore skipped too; an incident a playbook knows is remediated, then restored."""
    restoring = {**PLAYBOOK, "on_resolved": [{"name": "restore", "backend": "command",
                                               "params": {"argv": ["echo", "restored demo-{service}"]}}]}
    cfg = T.config(pg_db, enrichment={"enabled": False},
                   remediation={"playbooks": [restoring], "verify_interval": "0.05s"})
    app = create_app(cfg)
    try:
        st, c = state(app), app.test_client()
        storm = [T.alert("DiskAlmostFull", service=f"svc-{i}") for i in range(20)]
        r = c.post("/webhook/alertmanager", json=T.payload(storm[:10], group_key="storm-a"), headers=T.auth())
        assert r.status_code == 200
        r = c.post("/webhook/alertmanager", json=T.payload(storm[10:], group_key="storm-b"), headers=T.auth())
        assert r.status_code == 200
        known = fire(c)  # ServiceDown: the playbook's
        incidents = [x["id"] for x in rows(pg_db, "select id from tickets where id <> %s order by id", known)]
        assert len(incidents) == 2
        skipped = rows(pg_db, "select ticket_id, status, payload->>'skipped' why from automation_jobs "
                              "where kind = 'remediation' and ticket_id <> %s order by ticket_id", known)
        assert [(j["ticket_id"], j["status"], j["why"]) for j in skipped] == \
            [(t, "done", "no playbook matches the incident's alerts") for t in incidents]
        wait_for(lambda: rows(pg_db, "select 1 from automation_jobs where kind = 'remediation' and ticket_id = %s "
                                     "and status = 'done'", known), what="the known incident's remediation ran")
        assert rows(pg_db, "select playbook from remediation_runs where ticket_id = %s", known) == \
            [{"playbook": "restart-service"}]
        scheduler.tick(st)  # the sweep: the skipped jobs keep their dedup keys
        assert rows(pg_db, "select count(*) n from automation_jobs where kind = 'remediation'")[0]["n"] == 3
        assert rows(pg_db, "select count(*) n from remediation_runs where ticket_id <> %s", known)[0]["n"] == 0
        for group, alerts in (("storm-a", storm[:10]), ("storm-b", storm[10:])):
            r = c.post("/webhook/alertmanager", json=T.payload([T.resolved(a) for a in alerts], group_key=group),
                       headers=T.auth())
            assert r.status_code == 200
        r = c.post("/webhook/alertmanager", json=T.payload([T.resolved(T.alert())]), headers=T.auth())
        assert r.status_code == 200
        restores = {j["ticket_id"]: j for j in rows(pg_db, "select ticket_id, status, payload->>'skipped' why "
                                                          "from automation_jobs where kind = 'restore'")}
        assert {t: (restores[t]["status"], restores[t]["why"]) for t in incidents} == \
            {t: ("done", "the incident's remediation never ran: nothing to restore") for t in incidents}
        assert restores[known]["why"] is None
        wait_for(lambda: rows(pg_db, "select 1 from automation_jobs where kind = 'restore' and ticket_id = %s "
                                     "and status = 'done'", known), what="the known incident restored")
    finally:
        close_app(app)
