"""The automation exporter (exporters/automation) against a fake Airflow that checks request shapes
(tests/support/fakeairflow.py, v2 and v1), the real receiver (its API over HTTP, seeded ticket
rows) and the event-request API's documented shape. Every expected figure is computed by hand
from the runs the test writes."""
from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import threading
import time

import pytest
import requests
from prometheus_client import generate_latest
from psycopg.types.json import Jsonb
from werkzeug.serving import make_server

from core.config import load_data, view
from core.exporter import registry_for
from core.procs import binary, free_port
from demo.eventreq import PREFIX, EventRequests
from demo.http import Request as DemoRequest
from exporters.automation.collector import AutomationCollector, urls
from exporters.automation.server import serve
from tests.support import receiver as T
from tests.support.fakeairflow import FakeAirflow
from tests.support.fakehttp import FakeHTTP
from tests.support.wait import wait_for
from webhook_receiver.app import close_app, create_app
from webhook_receiver.db import connect

pytestmark = pytest.mark.integration

H = 3600.0
PASSWORD = "s3cret-pw"
LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")




def promtool_problems(text: str) -> list[str]:
    check = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=60)
    return [line for line in (check.stdout + check.stderr).splitlines() if line.strip()]


def settings(**over):
    a = {"manual_minutes": {"event_creation": 360}, "cache_ttl": "0s", "timeout": "9s", "page_limit": 2,
         "airflow": {"password": PASSWORD}}
    for k, v in over.items():
        a[k] = {**a[k], **v} if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return view(load_data({"exporters": {"automation": a}}), "exporters.automation")


def scrape(collector) -> dict:
    return T.samples(generate_latest(registry_for(collector)).decode())


def known_fleet(now: float):
    """Three DAGs and their runs; the module's expected figures come from these."""
    dags = [{"dag_id": "event_creation"}, {"dag_id": "etl"}, {"dag_id": "old_report", "is_paused": True}]
    runs = []

    def run(dag, i, state, queued, start, end):
        runs.append({"dag_id": dag, "dag_run_id": f"r{i}", "state": state, "queued_at": queued,
                     "start_date": start, "end_date": end})
    # event_creation: 4 successes (600, 900, 1200, 900 s), 1 failure (300 s), queued 10..50 s before start
    for i, (dur, q) in enumerate(((600, 10), (900, 20), (1200, 30), (900, 40))):
        s = now - (5 - i) * H
        run("event_creation", i, "success", s - q, s, s + dur)
    fs = now - 3.5 * H
    run("event_creation", 4, "failed", fs - 50, fs, fs + 300)
    run("event_creation", 5, "running", now - 1830, now - 1800, None)       # queued 30 s, 1800 s old
    run("event_creation", 6, "queued", now - 60, None, None)
    # etl: 2 successes (60, 120 s) and one two days old (outside the window)
    run("etl", 7, "success", now - 2 * H - 5, now - 2 * H, now - 2 * H + 60)
    run("etl", 8, "success", now - H - 5, now - H, now - H + 120)
    run("etl", 9, "success", now - 48 * H - 5, now - 48 * H, now - 48 * H + 60)
    tis = [{"dag_id": "event_creation", "dag_run_id": "r4", "task_id": "configure", "state": "failed",
            "end_date": fs + 300},
           {"dag_id": "etl", "dag_run_id": "r9", "task_id": "load", "state": "failed", "end_date": now - 47 * H},
           {"dag_id": "etl", "dag_run_id": "r8", "task_id": "load", "state": "success", "end_date": now - H + 120}]
    return dags, runs, tis


def ev(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))))


def assert_known_figures(m, queued: bool):
    P = "opsstack_automation_"
    assert ev(m, P + "up", source="airflow") == 1.0
    assert ev(m, "opsstack_exporter_up", exporter="automation", source="airflow") == 1.0
    assert ev(m, P + "dags", state="active") == 2 and ev(m, P + "dags", state="paused") == 1
    assert ev(m, P + "workflows_in_operation") == 2
    for state, n in (("success", 4), ("failed", 1), ("running", 1), ("queued", 1)):
        assert ev(m, P + "dag_runs", dag_id="event_creation", state=state) == n, state
    assert ev(m, P + "dag_runs", dag_id="etl", state="success") == 2
    assert ev(m, P + "dag_runs", dag_id="old_report", state="success") == 0
    assert ev(m, P + "dag_run_success_ratio", dag_id="event_creation") == pytest.approx(0.8)
    assert ev(m, P + "dag_run_success_ratio", dag_id="etl") == 1.0
    assert ev(m, P + "dag_run_success_ratio", dag_id="old_report") is None  # nothing finished: no sample
    # finished event_creation runs: 300, 600, 900, 900, 1200
    assert ev(m, P + "dag_run_duration_seconds", dag_id="event_creation", quantile="0.5") == pytest.approx(900)
    assert ev(m, P + "dag_run_duration_seconds", dag_id="event_creation", quantile="0.95") == pytest.approx(1140)
    if queued:  # 10, 20, 30, 30 (the running one), 40, 50
        assert ev(m, P + "dag_run_queued_seconds", dag_id="event_creation", quantile="0.5") == pytest.approx(30)
        assert ev(m, P + "dag_run_queued_seconds", dag_id="event_creation", quantile="0.95") == pytest.approx(47.5)
    else:  # Airflow 2's runs have no queued_at
        assert not [k for k in m if k[0] == P + "dag_run_queued_seconds"]
    assert ev(m, P + "oldest_running_seconds", dag_id="event_creation") == pytest.approx(1800, abs=120)
    assert ev(m, P + "oldest_running_seconds", dag_id="etl") is None
    assert ev(m, P + "task_failures", dag_id="event_creation", task_id="configure") == 1
    assert not [k for k in m if k[0] == P + "task_failures" and ("dag_id", "etl") in k[1]]  # outside the window
    assert ev(m, P + "error_ratio") == pytest.approx(1 / 7)
    assert ev(m, P + "processing_seconds_avg") == pytest.approx((600 + 900 + 1200 + 900 + 60 + 120) / 6)
    assert ev(m, P + "time_saved_seconds", dag_id="event_creation") == pytest.approx(360 * 4 * 60)
    assert ev(m, P + "speedup_ratio", dag_id="event_creation") == pytest.approx(360 * 60 / 900)
    assert ev(m, P + "time_saved_seconds", dag_id="etl") is None  # no manual minutes configured
    assert ev(m, P + "scheduler_healthy") == 1.0 and ev(m, P + "dag_processor_healthy") == 1.0
    assert 0 <= ev(m, P + "scheduler_heartbeat_age_seconds") < 600
    assert ev(m, P + "scrape_duration_seconds") >= 0


def test_v2_token_pagination_and_known_figures():
    now = time.time()
    dags, runs, tis = known_fleet(now)
    with FakeAirflow("v2", password=PASSWORD, dags=dags, runs=runs, task_instances=tis, max_page_limit=2) as af:
        m = scrape(AutomationCollector(settings(), af.url))
        assert af.shape_errors == []
        assert_known_figures(m, queued=True)
        assert af.issued == 1
        for r in af.find("GET", "/api/v2/*"):
            if r.path != "/api/v2/monitor/health":
                assert r.headers["Authorization"].startswith("Bearer ")
        # every page followed: 3 DAGs at 2 a page
        assert sorted(r.query["offset"] for r in af.find("GET", "/api/v2/dags")) == ["0", "2"]
        windowed = [r for r in af.find("GET", "/api/v2/dags/~/dagRuns") if "start_date_gte" in r.query]
        assert [r.query["offset"] for r in windowed] == ["0", "2", "4", "6"]  # 8 runs in the window
        assert all(r.query["order_by"] == "id" for r in windowed)
        current = [r for r in af.find("GET", "/api/v2/dags/~/dagRuns") if "state" in r.query_all]
        assert current and all(sorted(r.query_all["state"]) == ["queued", "running"] for r in current)
        ti = af.find("GET", "/api/v2/dags/~/dagRuns/~/taskInstances")
        assert ti and all(r.query_all["state"] == ["failed"] and "end_date_gte" in r.query for r in ti)
        token = af.find("POST", "/auth/token")
        assert token[0].json == {"username": "admin", "password": PASSWORD}


def test_v1_basic_auth_found_by_auto():
    now = time.time()
    dags, runs, tis = known_fleet(now)
    with FakeAirflow("v1", password=PASSWORD, dags=dags, runs=runs, task_instances=tis, max_page_limit=2) as af:
        m = scrape(AutomationCollector(settings(airflow={"api_version": "auto"}), af.url))
        assert af.shape_errors == []
        assert_known_figures(m, queued=False)
        assert not af.find("POST", "/auth/token")
        listed = [r for r in af.find("GET", "/api/v1/*") if r.path != "/api/v1/health"]
        assert listed and all(r.headers["Authorization"].startswith("Basic ") for r in listed)


def test_per_dag_listing_gives_the_same_figures():
    now = time.time()
    dags, runs, tis = known_fleet(now)
    with FakeAirflow("v2", password=PASSWORD, dags=dags, runs=runs, task_instances=tis, max_page_limit=2) as af:
        m = scrape(AutomationCollector(settings(runs_query="per_dag"), af.url))
        assert af.shape_errors == []
        assert_known_figures(m, queued=True)
        assert {r.path for r in af.find("GET", "/api/v2/dags/*/dagRuns")} == {
            "/api/v2/dags/event_creation/dagRuns", "/api/v2/dags/etl/dagRuns", "/api/v2/dags/old_report/dagRuns"}


def test_stale_token_is_refreshed_once_then_up_0():
    now = time.time()
    dags, runs, tis = known_fleet(now)
    with FakeAirflow("v2", password=PASSWORD, dags=dags, runs=runs, task_instances=tis) as af:
        c = AutomationCollector(settings(), af.url)
        assert ev(scrape(c), "opsstack_automation_up", source="airflow") == 1.0
        af.expire_tokens()  # the next call gets 401: one new token, one retry
        m = scrape(c)
        assert ev(m, "opsstack_automation_up", source="airflow") == 1.0
        assert af.issued == 2
        af.fail("GET", "/api/v2/dags", 401, {"detail": "Invalid JWT token"}, times=2)  # 401 again after the new one
        m = scrape(c)
        assert ev(m, "opsstack_automation_up", source="airflow") == 0.0
        assert af.issued == 3
        af.password = "changed"  # a token cannot be had at all
        af.expire_tokens()
        assert ev(scrape(c), "opsstack_automation_up", source="airflow") == 0.0
        assert af.shape_errors == []


@pytest.mark.parametrize("fault", ["5xx", "not_json", "truncated_shape", "huge", "timeout", "refused"])
def test_source_errors_are_up_0_with_a_logged_reason(fault, caplog):
    now = time.time()
    dags, runs, tis = known_fleet(now)
    s = settings()
    with FakeAirflow("v2", password=PASSWORD, dags=dags, runs=runs, task_instances=tis) as af:
        url = af.url
        if fault == "5xx":
            af.fail("GET", "/api/v2/dags/~/dagRuns", 503, {"detail": "down"})
        elif fault == "not_json":
            af.add_route("GET /api/v2/dags", (200, b"{not json", {"Content-Type": "application/json"}))
        elif fault == "truncated_shape":
            af.add_route("GET /api/v2/dags/~/dagRuns/~/taskInstances", (200, {"task_instances": "x"}))
        elif fault == "huge":
            af.dags = [{"dag_id": f"d{i:05d}" + "x" * 200} for i in range(200)]
            s = dataclasses.replace(s, max_response_bytes=4096, page_limit=100)
        elif fault == "timeout":
            s = dataclasses.replace(s, timeout=0.5)
            af.hang("GET", "/api/v2/dags")
        else:
            url = f"http://127.0.0.1:{free_port()}"
        c = AutomationCollector(s, url)
        with caplog.at_level(logging.WARNING, logger="opsstack.exporter"):
            m = scrape(c)
        af.release()
        assert ev(m, "opsstack_automation_up", source="airflow") == 0.0
        assert ev(m, "opsstack_exporter_up", exporter="automation", source="airflow") == 0.0
        assert not [k for k in m if k[0] == "opsstack_automation_dag_runs"]  # absent, not stale or zero
        assert any("source_failed" in r.getMessage() and "source=airflow" in r.getMessage() for r in caplog.records)
        if fault == "huge":
            assert any("over 4096" in r.getMessage() for r in caplog.records)
        assert PASSWORD not in caplog.text


def test_cardinality_cap_and_hostile_ids():
    now = time.time()
    hostile = ['a"b', "x\ny", "d" * 300, "_other", "évènement", 'dag{evil="1"}', "ok.dag-1", "z/../../etc"]
    dags = [{"dag_id": d} for d in hostile] + [{"dag_id": f"plain_{i}"} for i in range(10)]
    runs, tis = [], []
    for i, d in enumerate(dags):
        for j in range(i % 4 + 1):
            s = now - H - j * 60
            runs.append({"dag_id": d["dag_id"], "dag_run_id": f"r{i}_{j}", "state": "success", "queued_at": s - 1,
                         "start_date": s, "end_date": s + 30})
        tis.append({"dag_id": d["dag_id"], "dag_run_id": f"r{i}_0", "task_id": f'task"{i}\n' + "t" * 100,
                    "state": "failed", "end_date": now - 60})
    with FakeAirflow("v2", password=PASSWORD, dags=dags, runs=runs, task_instances=tis) as af:
        text = generate_latest(registry_for(AutomationCollector(
            settings(max_dags=5, max_tasks=4, page_limit=100), af.url))).decode()
        assert af.shape_errors == []
    m = T.samples(text)
    runs_by_dag = {dict(k[1])["dag_id"]: v for k, v in m.items()
                   if k[0] == "opsstack_automation_dag_runs" and dict(k[1])["state"] == "success"}
    assert len(runs_by_dag) == 6 and "_other" in runs_by_dag  # 5 own labels + the rest summed
    assert sum(runs_by_dag.values()) == len(runs)
    tasks = [dict(k[1]) for k in m if k[0] == "opsstack_automation_task_failures"]
    assert sum(v for k, v in m.items() if k[0] == "opsstack_automation_task_failures") == len(tis)
    assert len({t["task_id"] for t in tasks} - {"_other"}) <= 4
    for k in m:
        for name, value in k[1]:
            if name in ("dag_id", "task_id"):
                assert LABEL.match(value), value
    # the real DAG "_other" (4 runs: in the top 5) keeps a label of its own, not the overflow bucket's
    assert [d for d in runs_by_dag if d.startswith("_other_")]
    assert promtool_problems(text) == []


# ---------------------------------------------------------------------------- the receiver's tickets
def _ticket(conn, n, opened, resolved=None, resolved_by="alertmanager"):
    return conn.execute(
        f"""insert into tickets (incident_key, fingerprint, status, alertname, service, labels, starts_at, opened_at,
                                 resolved_at, resolved_by)
            values (%(k)s, %(k)s, %(st)s, 'A', 'shop', %(l)s, {opened}, {opened}, {resolved or 'null'}, %(rb)s)
            returning id""",
        {"k": f"fp-{n}", "st": "resolved" if resolved else "open", "l": Jsonb({"alertname": "A"}),
         "rb": resolved_by if resolved else None}).fetchone()["id"]


def _event(conn, tid, kind, actor, at):
    conn.execute(f"insert into ticket_events (ticket_id, kind, actor, at) values (%s, %s, %s, {at})", (tid, kind, actor))


def _attempt(conn, tid, at, dry=False):
    run = conn.execute("""insert into remediation_runs (ticket_id, playbook, target, alertname, fingerprint,
                              alert_starts_at, status, dry_run) values (%s, 'pb', %s, 'A', %s, now(), %s, %s)
                          returning id""", (tid, f"t{tid}", f"fp{tid}", "dry_run" if dry else "exhausted", dry)).fetchone()
    conn.execute(f"""insert into remediation_attempts (run_id, playbook, target, step, action, backend, operation,
                         dry_run, status, started_at, finished_at) values
                     (%s, 'pb', %s, 1, 'a', 'http', 'request', %s, %s, {at}, {at})""",
                 (run["id"], f"t{tid}", dry, "dry_run" if dry else "ok"))


@pytest.fixture
def receiver_url(pg_db):
    app = create_app(T.config(pg_db, enrichment={"enabled": False}))
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    close_app(app)


def test_incident_automation_rate_and_response_from_the_receiver(receiver_url, pg_db):
    b = "(now() - interval '20 hours')"
    with connect(pg_db, autocommit=True) as conn:
        # T1: a playbook acted at +1m, the alert resolved at +10m, only the runner commented -> automation
        t1 = _ticket(conn, 1, b, f"{b} + interval '10 minutes'")
        _attempt(conn, t1, f"{b} + interval '1 minute'")
        _event(conn, t1, "comment", "remediation", f"{b} + interval '2 minutes'")
        # T2: a playbook acted at +1m but alice acknowledged at +2m -> people
        o2 = f"({b} + interval '1 hour')"
        t2 = _ticket(conn, 2, o2, f"{o2} + interval '30 minutes'")
        _attempt(conn, t2, f"{o2} + interval '1 minute'")
        _event(conn, t2, "acknowledged", "alice", f"{o2} + interval '2 minutes'")
        # T3: bob resolved it by hand at +20m -> people, response 1200 s
        o3 = f"({b} + interval '2 hours')"
        t3 = _ticket(conn, 3, o3, f"{o3} + interval '20 minutes'", resolved_by="bob")
        _event(conn, t3, "resolved", "bob", f"{o3} + interval '20 minutes'")
        # T4: open for an hour, nobody answered
        t4 = _ticket(conn, 4, "(now() - interval '1 hour')")
        # T5: a dry run only, the alert resolved at +5m -> people, response 300 s
        o5 = f"({b} + interval '3 hours')"
        t5 = _ticket(conn, 5, o5, f"{o5} + interval '5 minutes'")
        _attempt(conn, t5, f"{o5} + interval '1 minute'", dry=True)
        # T0: resolved two days ago, outside the 24h window
        _ticket(conn, 0, "(now() - interval '50 hours')", "(now() - interval '49 hours')")
    c = AutomationCollector(settings(), None, receiver_url, T.TOKEN)
    m = scrape(c)
    assert ev(m, "opsstack_automation_up", source="receiver") == 1.0
    assert ev(m, "opsstack_automation_rate", kind="incidents") == pytest.approx(1 / 4)
    # responses: 60, 60, 300, 1200, ~3600 (T4 still waiting)
    assert ev(m, "opsstack_automation_response_seconds", quantile="0.5") == pytest.approx(300, abs=1)
    assert ev(m, "opsstack_automation_response_seconds", quantile="0.95") == pytest.approx(
        1200 + 0.8 * (3600 - 1200), abs=60)
    assert ev(m, "opsstack_automation_incidents", kind="resolved") == 4
    assert ev(m, "opsstack_automation_rate", kind="event_requests") is None  # not configured: absent
    # a second read keeps the resolved tickets' timelines; the open one (T4) is read again
    before = dict(c.receiver._cache)
    m2 = scrape(c)
    assert ev(m2, "opsstack_automation_rate", kind="incidents") == pytest.approx(1 / 4)
    after = c.receiver._cache
    assert set(after) == set(before) and len(after) == 5
    assert all(after[i][1] is before[i][1] for i in (t1, t2, t3, t5))
    assert after[t4][1] is not before[t4][1]
    # a wrong token: up 0, no rate
    bad = scrape(AutomationCollector(settings(), None, receiver_url, "wrong-token"))
    assert ev(bad, "opsstack_automation_up", source="receiver") == 0.0
    assert ev(bad, "opsstack_automation_rate", kind="incidents") is None


# ---------------------------------------------------------------------------- event requests
def test_event_request_rate_and_approval_queue():
    now = time.time()

    def iso(t):
        return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))

    def req(i, status, manual=0, tier="auto", created=now - H, completed=None, approve_at=None):
        r = {"id": i, "status": status, "approval_tier": tier, "manual_steps": manual, "created_at": iso(created),
             "completed_at": iso(completed) if completed else None,
             "approval": {"state": "pending" if status == "awaiting_approval" else "approved"}}
        if approve_at:
            r["steps"] = [{"step": "approve", "state": "running", "started_at": iso(approve_at)}]
        return r

    completed = [req(1, "completed", 0, completed=now - H), req(2, "completed", 1, "manager", completed=now - 2 * H),
                 req(3, "completed", 0, completed=now - 3 * H), req(4, "completed", 0, completed=now - 30 * H)]
    waiting = [req(5, "awaiting_approval", 0, "manager", created=now - 900),
               req(6, "awaiting_approval", 0, "executive", created=now - 7200, approve_at=now - 600),
               req(7, "awaiting_approval", 0, "manager", created=now - 300)]

    def listing(r):
        assert set(r.query) == {"status", "limit"} and r.query["limit"] == "500"
        return {"requests": completed if r.query["status"] == "completed" else waiting}

    with FakeHTTP({"GET /api/v1/event-requests": listing}) as er:
        m = scrape(AutomationCollector(settings(), None, event_requests_url=er.url))
        assert not er.errors
    assert ev(m, "opsstack_automation_up", source="event_requests") == 1.0
    assert ev(m, "opsstack_automation_rate", kind="event_requests") == pytest.approx(2 / 3)  # #4 is outside
    assert ev(m, "opsstack_automation_approvals_pending", tier="manager") == 2
    assert ev(m, "opsstack_automation_approvals_pending", tier="executive") == 1
    assert ev(m, "opsstack_automation_approval_oldest_seconds", tier="manager") == pytest.approx(900, abs=60)
    assert ev(m, "opsstack_automation_approval_oldest_seconds", tier="executive") == pytest.approx(600, abs=60)
    with FakeHTTP({"GET /api/v1/event-requests": (404, {"error": "no"})}) as er:
        m = scrape(AutomationCollector(settings(), None, event_requests_url=er.url))
    assert ev(m, "opsstack_automation_up", source="event_requests") == 0.0
    assert ev(m, "opsstack_automation_approvals_pending", tier="manager") is None


def test_event_request_figures_from_the_real_api(pg_db):
    """demo/eventreq.py's own API (its /stats for the queue), carried over loopback HTTP: requests of
    50, 300 and 800 attendees; the first completes on its own, the manager approves the second,
    the third waits for an executive."""
    store = EventRequests(pg_db)
    store.migrate()

    def serve_api(req):
        resp = store.handle(DemoRequest(req.method, req.path, req.query_all, req.headers, req.body))
        return resp.status, resp.body, {"Content-Type": resp.content_type}

    ids = []
    for n, attendees in enumerate((50, 300, 800)):
        r = store.intake({"customer": f"c{n}", "title": f"Summit {n}", "attendees": attendees,
                          "starts_at": "2027-03-01T10:00:00+00:00", "contact_email": f"c{n}@example.com",
                          "channel": "api"})
        ids.append(r["id"])
        for step in ("classify", "validate", "create", "approve"):
            store.step(r["id"], step, {"run_id": "t"})
    store.decide(ids[1], {"decision": "approve", "approver": "mia", "role": "manager"})
    for rid in ids[:2]:
        for step in ("configure", "confirm"):
            store.step(rid, step, {"run_id": "t"})
    with FakeHTTP({"* " + PREFIX + "*": serve_api}) as er:
        m = scrape(AutomationCollector(settings(), None, event_requests_url=er.url))
        assert not er.errors, er.errors
        assert er.find("GET", PREFIX + "/stats")
    assert ev(m, "opsstack_automation_up", source="event_requests") == 1.0
    assert ev(m, "opsstack_automation_rate", kind="event_requests") == pytest.approx(1 / 2)  # the manager's step
    assert ev(m, "opsstack_automation_approvals_pending", tier="executive") == 1
    assert ev(m, "opsstack_automation_approvals_pending", tier="manager") == 0
    assert 0 <= ev(m, "opsstack_automation_approval_oldest_seconds", tier="executive") < 3600
    assert ev(m, "opsstack_automation_approval_oldest_seconds", tier="manager") is None


# ---------------------------------------------------------------------------- served
def test_served_metrics_pass_promtool_and_urls_resolve(tmp_path):
    now = time.time()
    dags, runs, tis = known_fleet(now)
    with FakeAirflow("v2", password=PASSWORD, dags=dags, runs=runs, task_instances=tis) as af:
        port = free_port()
        cfg = load_data({"stack": {"run_dir": str(tmp_path), "ports": {"exporter_automation": port}},
                         "demo": {"enabled": False},
                         "exporters": {"automation": {"enabled": True, "receiver": {"enabled": False},
                                                      "airflow": {"url": af.url, "password": PASSWORD}}}})
        assert urls(cfg)["airflow"] == af.url and urls(cfg)["event_requests"] is None
        stop = threading.Event()
        t = threading.Thread(target=serve, args=(cfg, stop), daemon=True)
        t.start()
        try:
            text = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text,
                            timeout=60, what="the exporter's /metrics")
        finally:
            stop.set()
            t.join(30)
    assert 'opsstack_automation_up{source="airflow"} 1.0' in text
    assert promtool_problems(text) == []


def test_demo_airflow_password_file_is_read(tmp_path):
    """With airflow.url null the demo's Airflow is used: stack.ports.airflow and the password its
    launcher wrote into <run_dir>/airflow/passwords.json."""
    now = time.time()
    dags, runs, tis = known_fleet(now)
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "passwords.json").write_text('{"admin": "%s"}' % PASSWORD)
    with FakeAirflow("v2", password=PASSWORD, dags=dags, runs=runs, task_instances=tis) as af:
        cfg = load_data({"stack": {"run_dir": str(tmp_path)}, "demo": {"enabled": False},
                         "exporters": {"automation": {"cache_ttl": "0s", "receiver": {"enabled": False}}}})
        cfg["stack"]["ports"]["airflow"] = af.port  # what `opsstack up` resolves
        m = scrape(AutomationCollector.from_config(cfg))
        assert ev(m, "opsstack_automation_up", source="airflow") == 1.0
        assert af.find("POST", "/auth/token")[0].json["password"] == PASSWORD
