"""The Event Management service's event-request API (issue 13, demo/eventreq.py) against a real
PostgreSQL (a fresh database for this module) and a real mail sink: through the HTTP routes of a
real `opsstack demo serve --service event-management` process, and in process
(``EventRequests``): tiers, the whole pipeline to completed with the confirmation e-mail,
duplicates, missing fields, wrong order, an injected configure failure rolled back (what create
and configure made is really gone), approvals by role, idempotent retries, hostile input, and
the approver simulator (`opsstack demo approver`)."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import yaml

from core.procs import free_port, stop_process
from demo import eventreq as E
from demo.approver import Approver
from demo.mailsink import MailSink
from tests.conftest import _create_db, _drop_db
from tests.support.demo import DemoProcess, opsstack_argv
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
FLOW = ["classify", "validate", "create", "approve", "configure", "confirm"]


@pytest.fixture(scope="module")
def db_url(pg_server_url):
    name, url = _create_db(pg_server_url, "opsstack_eventreq")
    yield url
    _drop_db(pg_server_url, name)


@pytest.fixture(scope="module")
def mails():
    sink = MailSink(HOST, free_port(HOST), free_port(HOST)).start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def store(db_url, mails):
    return E.EventRequests(db_url, smtp=(HOST, mails.smtp_port), public_url="http://127.0.0.1:9")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, db_url, mails):
    """A real Event Management demo service on this module's database and mail sink."""
    p = DemoProcess(tmp_path_factory.mktemp("eventreq-svc"), service="event-management", load=False)
    p.cfg["database"] = {"url": db_url}
    p.cfg["stack"]["ports"] = {"mailsink_smtp": mails.smtp_port, "mailsink_web": mails.web_port}
    p.write(p.cfg)
    p.start(timeout=120)
    yield p
    p.stop()


def body(attendees: int = 50, days: int = 40, **extra) -> dict:
    """A valid request of a customer of its own (no duplicate of another test's)."""
    starts = (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0).isoformat()
    b = {"customer": f"Customer {uuid.uuid4().hex[:8]}", "title": "Spring Tech Conference",
         "attendees": attendees, "starts_at": starts, "venue": "Hall A",
         "contact_email": f"c{uuid.uuid4().hex[:6]}@example.test", "channel": "api"}
    b.update(extra)
    return b


def raw(p: DemoProcess, method: str, path: str, data: bytes | None = None,
        content_type: str = "application/json") -> tuple[int, dict]:
    """One HTTP request with a body given as bytes (not necessarily JSON)."""
    conn = http.client.HTTPConnection(HOST, p.ports["admin"], timeout=30)
    try:
        conn.request(method, path, body=data, headers={"Content-Type": content_type} if data is not None else {})
        r = conn.getresponse()
        payload = r.read()
        return r.status, json.loads(payload) if payload else {}
    finally:
        conn.close()


def too_long(p: DemoProcess, path: str) -> int:
    """A POST announcing a body over the 64 KiB limit: refused before it is read."""
    conn = http.client.HTTPConnection(HOST, p.ports["admin"], timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(65 * 1024))
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def step(p: DemoProcess, rid: int, name: str, run_id: str = "run-1") -> tuple[int, dict]:
    return p.admin("POST", f"/api/v1/event-requests/{rid}/steps/{name}", {"run_id": run_id})


def q(db_url: str, query: str, *args):
    with psycopg.connect(db_url) as c:
        return c.execute(query, args).fetchall()


def schema_exists(db_url: str, name: str) -> bool:
    return bool(q(db_url, "select 1 from pg_namespace where nspname = %s", name))


def made_by(db_url: str, rid: int) -> dict:
    """What create/configure left in the database for request ``rid``."""
    ev = q(db_url, "select id from automation.events where request_id = %s", rid)
    return {"events": len(ev),
            "resources": q(db_url, "select count(*) from automation.event_resources r join automation.events e "
                                   "on e.id = r.event_id where e.request_id = %s", rid)[0][0],
            "api_endpoints": q(db_url, "select count(*) from automation.api_endpoints where request_id = %s", rid)[0][0],
            "monitoring_targets": q(db_url, "select count(*) from automation.monitoring_targets where request_id = %s",
                                    rid)[0][0]}


# ------------------------------------------------------------------------------ HTTP: the pipeline
@pytest.mark.parametrize("attendees,tier,size", [(50, "auto", "small"), (300, "manager", "medium"),
                                                 (800, "executive", "large")])
def test_a_request_runs_every_step_to_completed_with_the_approval_its_size_needs(svc, mails, db_url, attendees,
                                                                               tier, size):
    b = body(attendees)
    st, doc = svc.admin("POST", "/api/v1/event-requests", b)
    assert st == 201, doc
    assert doc["status"] == "received" and doc["approval_tier"] == tier and doc["duplicate_of"] is None
    # 40 days ahead: small low, medium and large normal (size + closeness of the start)
    assert doc["classification"] == {"type": "conference", "size": size,
                                     "priority": "low" if size == "small" else "normal"}
    rid = doc["id"]
    for name in ["classify", "validate", "create", "approve"]:
        st, out = step(svc, rid, name)
        assert st == 200, (name, out)
    assert out["status"] == ("approved" if tier == "auto" else "awaiting_approval")
    st, appr = svc.admin("GET", f"/api/v1/event-requests/{rid}/approval")
    assert st == 200 and appr["tier"] == tier
    if tier == "auto":
        assert appr["state"] == "not_needed"
    else:
        assert appr["state"] == "pending" and appr["requested"] is True
        st, out = step(svc, rid, "configure")
        assert st == 409 and "waiting for approval" in out["error"]
        st, out = svc.admin("POST", f"/api/v1/event-requests/{rid}/approval",
                            {"decision": "approve", "approver": "pat", "role": tier})
        assert st == 200 and out["status"] == "approved" and out["approval"]["approver"] == "pat"
    st, out = step(svc, rid, "configure")
    assert st == 200 and out["status"] == "configured"
    assert schema_exists(db_url, out["schema"]) and out["schema"].startswith("evt_")
    st, out = step(svc, rid, "confirm")
    assert st == 200 and out["status"] == "completed" and out["email"]["sent"] is True
    link = out["dashboard_url"]
    assert link == f"http://127.0.0.1:{svc.ports['admin']}/api/v1/event-requests/{rid}/dashboard"
    mail = wait_for(lambda: [m for m in mails.box.newest_first() if b["contact_email"] in m["envelope_to"]],
                    timeout=60, what="the confirmation e-mail")
    assert len(mail) == 1 and link in mail[0]["body"] and b["title"] in mail[0]["subject"]

    st, got = svc.admin("GET", f"/api/v1/event-requests/{rid}")
    assert st == 200 and got["status"] == "completed" and got["completed_at"]
    assert [s["step"] for s in got["steps"]] == FLOW and {s["state"] for s in got["steps"]} == {"done"}
    assert got["manual_steps"] == (0 if tier == "auto" else 1)
    assert got["approval"]["state"] == ("not_needed" if tier == "auto" else "approved")
    assert got["template_id"] and got["event_id"]
    st, dash = svc.admin("GET", link.split(str(svc.ports["admin"]))[1])
    ev = dash["event"]
    assert st == 200 and ev["id"] == got["event_id"] and ev["type"] == "conference"
    # the closest conference template by attendees, its resources scaled to the attendees
    template = {"auto": 4, "manager": 5, "executive": 5}[tier]  # Workshop day 60, Tech conference 450
    assert got["template_id"] == template and ev["entry_policy"]["tickets"] == "badge"
    assert ev["resources"]["staff"] >= attendees // 30 and dash["monitoring_target"]["labels"]["event_id"] == \
        str(ev["id"])
    assert dash["api_endpoint"] == f"/api/events/{ev['id']}"


def test_missing_fields_are_a_422_listing_them(svc):
    st, doc = svc.admin("POST", "/api/v1/event-requests", {})
    assert st == 422 and sorted(doc["missing"]) == sorted(E.REQUIRED)
    b = body()
    del b["contact_email"], b["attendees"]
    b["channel"] = ""
    st, doc = svc.admin("POST", "/api/v1/event-requests", b)
    assert st == 422 and sorted(doc["missing"]) == ["attendees", "channel", "contact_email"]
    st, doc = svc.admin("POST", "/api/v1/event-requests", body(channel="fax", event_type="rave"))
    assert st == 422 and doc["missing"] == [] and set(doc["invalid"]) == {"channel", "event_type"}


def test_the_same_customer_title_and_date_while_open_is_a_409_naming_the_first(svc, store):
    b = body(120)
    st, first = svc.admin("POST", "/api/v1/event-requests", b)
    assert st == 201
    again = dict(b, title="  spring TECH conference!! ", customer=b["customer"].upper(),
                 starts_at=b["starts_at"].replace("+00:00", "+00:00"))
    st, doc = svc.admin("POST", "/api/v1/event-requests", again)
    assert st == 409 and doc["duplicate_of"] == first["id"]
    with pytest.raises(E.Conflict) as exc:  # in process too
        store.intake(again)
    assert exc.value.body["duplicate_of"] == first["id"]
    # another day, or another customer, is another request
    other_day = (datetime.fromisoformat(b["starts_at"]) + timedelta(days=1)).isoformat()
    assert svc.admin("POST", "/api/v1/event-requests", dict(b, starts_at=other_day))[0] == 201
    assert svc.admin("POST", "/api/v1/event-requests", dict(b, customer=b["customer"] + " Ltd"))[0] == 201
    # once the first is finished (rolled back here), the same request may come again
    assert svc.admin("POST", f"/api/v1/event-requests/{first['id']}/rollback", {"reason": "t"})[0] == 200
    st, doc = svc.admin("POST", "/api/v1/event-requests", b)
    assert st == 201 and doc["id"] != first["id"]


def test_steps_out_of_order_are_a_409_and_change_nothing(svc):
    rid = svc.admin("POST", "/api/v1/event-requests", body(300))[1]["id"]
    for name in ["validate", "create", "approve", "configure", "confirm"]:
        st, doc = step(svc, rid, name)
        assert st == 409, (name, doc)
        assert doc["status"] == "received"
    st, doc = svc.admin("POST", f"/api/v1/event-requests/{rid}/approval",
                        {"decision": "approve", "approver": "pat", "role": "manager"})
    assert st == 409 and "approve step" in doc["error"]
    assert step(svc, rid, "classify")[0] == 200
    st, doc = step(svc, rid, "create")
    assert st == 409 and "run validate first" in doc["error"]
    got = svc.admin("GET", f"/api/v1/event-requests/{rid}")[1]
    assert got["status"] == "classified" and [s["step"] for s in got["steps"]] == ["classify"]
    assert step(svc, rid, "nonsense")[0] == 404


def test_an_injected_configure_failure_is_a_500_and_rollback_removes_what_create_and_configure_made(svc, db_url):
    rid = svc.admin("POST", "/api/v1/event-requests", body(40, inject_failure="configure"))[1]["id"]
    for name in ["classify", "validate", "create", "approve"]:
        assert step(svc, rid, name)[0] == 200
    st, doc = step(svc, rid, "configure")
    assert st == 500 and doc["status"] == "failed" and "injected" in doc["error"]
    got = svc.admin("GET", f"/api/v1/event-requests/{rid}")[1]
    schema = f"evt_{got['event_id']}"
    # half configured: the schema and the endpoint were made before the monitoring part failed
    assert got["status"] == "failed" and schema_exists(db_url, schema)
    assert made_by(db_url, rid) == {"events": 1, "resources": made_by(db_url, rid)["resources"],
                                    "api_endpoints": 1, "monitoring_targets": 0}
    assert made_by(db_url, rid)["resources"] > 0
    st, doc = step(svc, rid, "configure", "run-1-retry")  # a retry runs again, and fails again
    assert st == 500
    got = svc.admin("GET", f"/api/v1/event-requests/{rid}")[1]
    conf = next(s for s in got["steps"] if s["step"] == "configure")
    assert conf["state"] == "failed" and conf["attempts"] == 2 and "injected" in conf["error"]
    assert step(svc, rid, "confirm")[0] == 409

    st, doc = svc.admin("POST", f"/api/v1/event-requests/{rid}/rollback", {"run_id": "r", "reason": "configure"})
    assert st == 200 and doc["status"] == "rolled_back" and doc["replayed"] is False
    assert doc["undone"] == {"schema": schema, "events": 1, "resources": doc["undone"]["resources"],
                             "api_endpoints": 1, "monitoring_targets": 0}
    assert not schema_exists(db_url, schema)
    assert made_by(db_url, rid) == {"events": 0, "resources": 0, "api_endpoints": 0, "monitoring_targets": 0}
    got = svc.admin("GET", f"/api/v1/event-requests/{rid}")[1]
    states = {s["step"]: s["state"] for s in got["steps"]}
    assert got["status"] == "rolled_back" and got["event_id"] is None
    assert states == {"classify": "done", "validate": "done", "create": "rolled_back", "approve": "done",
                      "configure": "rolled_back", "rollback": "done"}
    st, again = svc.admin("POST", f"/api/v1/event-requests/{rid}/rollback", {"run_id": "r2"})
    assert st == 200 and again["replayed"] is True and again["undone"]["schema"] == schema
    assert step(svc, rid, "configure")[0] == 409


def test_a_configured_event_is_really_removed_by_a_rollback_and_a_completed_one_is_kept(store, db_url):
    rid = store.intake(body(60))["id"]
    for name in FLOW[:-1]:
        store.step(rid, name, {"run_id": "x"})
    before = made_by(db_url, rid)
    assert before["events"] == before["api_endpoints"] == before["monitoring_targets"] == 1
    schema = f"evt_{store.get(rid)['event_id']}"
    assert q(db_url, "select count(*) from information_schema.tables where table_schema = %s", schema)[0][0] == 2
    out = store.rollback(rid, {"reason": "customer cancelled"})
    assert out["undone"]["monitoring_targets"] == 1 and not schema_exists(db_url, schema)
    assert made_by(db_url, rid) == {"events": 0, "resources": 0, "api_endpoints": 0, "monitoring_targets": 0}
    done = store.intake(body(60))["id"]
    for name in FLOW:
        store.step(done, name, {})
    with pytest.raises(E.Conflict):
        store.rollback(done, {})


# ------------------------------------------------------------------------------ approvals
def test_an_approval_needs_the_role_of_the_tier_and_counts_as_a_manual_step(svc):
    rid = svc.admin("POST", "/api/v1/event-requests", body(800))[1]["id"]
    for name in ["classify", "validate", "create", "approve"]:
        assert step(svc, rid, name)[0] == 200
    url = f"/api/v1/event-requests/{rid}/approval"
    st, doc = svc.admin("POST", url, {"decision": "approve", "approver": "mia", "role": "manager"})
    assert st == 403 and doc["tier"] == "executive"
    assert svc.admin("GET", url)[1]["state"] == "pending"
    for bad in ({"decision": "maybe", "approver": "mia", "role": "executive"},
                {"decision": "approve", "approver": "mia", "role": "ceo"},
                {"decision": "approve", "role": "executive"},
                {"decision": "approve", "approver": "x" * 500, "role": "executive"}):
        assert svc.admin("POST", url, bad)[0] == 422, bad
    st, doc = svc.admin("POST", url, {"decision": "approve", "approver": "eve", "role": "executive"})
    assert st == 200 and doc["approval"] == dict(doc["approval"], state="approved", approver="eve", role="executive")
    st, doc = svc.admin("POST", url, {"decision": "approve", "approver": "eve", "role": "executive"})
    assert st == 200 and doc["replayed"] is True
    assert svc.admin("POST", url, {"decision": "reject", "approver": "eve", "role": "executive"})[0] == 409
    assert svc.admin("GET", f"/api/v1/event-requests/{rid}")[1]["manual_steps"] == 1

    auto = svc.admin("POST", "/api/v1/event-requests", body(20))[1]["id"]
    for name in ["classify", "validate", "create", "approve"]:
        assert step(svc, auto, name)[0] == 200
    st, doc = svc.admin("POST", f"/api/v1/event-requests/{auto}/approval",
                        {"decision": "approve", "approver": "eve", "role": "manager"})
    assert st == 409 and "auto tier" in doc["error"]


def test_a_rejected_request_stops_and_its_rollback_removes_the_created_event(store, db_url):
    rid = store.intake(body(250))["id"]
    for name in ["classify", "validate", "create", "approve"]:
        store.step(rid, name, {})
    out = store.decide(rid, {"decision": "reject", "approver": "max", "role": "manager"})
    assert out["status"] == "rejected" and store.get(rid)["manual_steps"] == 1
    with pytest.raises(E.Conflict):
        store.step(rid, "configure", {})
    assert made_by(db_url, rid)["events"] == 1
    assert store.rollback(rid, {})["undone"]["events"] == 1 and made_by(db_url, rid)["events"] == 0


# ------------------------------------------------------------------------------ idempotence
def test_a_retried_step_replays_its_result_without_doing_the_work_again(store, db_url, mails):
    b = body(75)
    rid = store.intake(b)["id"]
    for name in FLOW[:3]:
        store.step(rid, name, {"run_id": "a"})
    again = store.step(rid, "create", {"run_id": "b"})
    assert again["replayed"] is True and again["event_id"] == store.get(rid)["event_id"]
    assert made_by(db_url, rid)["events"] == 1
    for name in FLOW[3:]:
        store.step(rid, name, {"run_id": "a"})
    resent = store.step(rid, "confirm", {"run_id": "c"})
    assert resent["replayed"] is True and resent["status"] == "completed"
    wait_for(lambda: [m for m in mails.box.newest_first() if b["contact_email"] in m["envelope_to"]], timeout=60,
             what="the confirmation")
    assert len([m for m in mails.box.newest_first() if b["contact_email"] in m["envelope_to"]]) == 1
    steps = {s["step"]: s for s in store.get(rid)["steps"]}
    assert steps["create"]["attempts"] == 1 and steps["confirm"]["run_id"] == "a"


def test_concurrent_calls_of_one_step_do_the_work_once(svc, db_url):
    rid = svc.admin("POST", "/api/v1/event-requests", body(90))[1]["id"]
    for name in ["classify", "validate"]:
        assert step(svc, rid, name)[0] == 200
    answers = []

    def call(i):
        answers.append(step(svc, rid, "create", f"run-{i}"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a[0] for a in answers] == [200] * 6
    assert sorted(a[1]["replayed"] for a in answers) == [False] + [True] * 5
    assert len({a[1]["event_id"] for a in answers}) == 1 and made_by(db_url, rid)["events"] == 1


# ------------------------------------------------------------------------------ hostile input
def test_hostile_input_is_refused_cleanly_and_sql_text_is_only_data(svc, db_url):
    url = "/api/v1/event-requests"
    assert raw(svc, "POST", url, b"{not json")[0] == 400
    assert raw(svc, "POST", url, b"[1, 2, 3]")[0] == 400
    assert raw(svc, "POST", url, b"\xff\xfe\x00")[0] == 400
    assert raw(svc, "POST", url, b'{"a":' * 5000 + b"1" + b"}" * 5000)[0] == 400  # nested too deep
    assert raw(svc, "POST", url, json.dumps(body()).encode(), "text/plain")[0] == 400
    assert too_long(svc, url) == 413
    for bad in (dict(body(), title="t" * 5000), dict(body(), customer="a\r\nb"),
                dict(body(), contact_email="a@example.test\r\nBcc: victim@example.test"),
                dict(body(), attendees="50"), dict(body(), attendees=True), dict(body(), attendees=10 ** 12),
                dict(body(), attendees=2.5), dict(body(), starts_at="tomorrow"),
                dict(body(), starts_at="9999-01-01T00:00:00"), dict(body(), customer=["x"]),
                dict(body(), venue={"$ne": 1}), dict(body(), inject_failure="drop"),
                dict(body(), contact_phone="call me maybe")):
        st, doc = svc.admin("POST", url, bad)
        assert st == 422 and doc["invalid"], bad
    evil = "Robert'); drop table automation.event_requests; -- \" $$ \\ %s {0}"
    st, doc = svc.admin("POST", url, body(customer=evil, title=evil, venue=evil))
    assert st == 201
    got = svc.admin("GET", f"{url}/{doc['id']}")[1]
    assert got["customer"] == evil and got["title"] == evil and got["classification"]["type"] == "other"
    assert q(db_url, "select count(*) from automation.event_requests where customer = %s", evil)[0][0] == 1
    for path in (f"{url}/99999999999999999999", f"{url}/1%27%20or%201=1", f"{url}/-1", f"{url}/{doc['id']}/steps/drop",
                 f"{url}/{doc['id']}/steps/../../admin", f"{url}/../admin/state"):
        assert raw(svc, "GET" if "steps" not in path else "POST", path)[0] in (404, 405), path
    assert svc.admin("GET", f"{url}/424242424")[0] == 404
    assert svc.admin("GET", f"{url}?status=nonsense")[0] == 422
    assert svc.admin("GET", f"{url}?limit=1;drop")[0] == 422
    assert svc.admin("DELETE", f"{url}/{doc['id']}")[0] == 405
    st, doc2 = svc.admin("POST", f"{url}/{doc['id']}/steps/classify", {"run_id": {"x": 1}})
    assert st == 422
    # the service still answers, and the table is still there
    st, listed = svc.admin("GET", f"{url}?limit=500")
    assert st == 200 and any(r["id"] == doc["id"] for r in listed["requests"])


def test_a_start_in_the_past_fails_the_validate_step(store):
    rid = store.intake(body(30, days=-2))["id"]
    store.step(rid, "classify", {})
    with pytest.raises(E.StepFailed) as exc:
        store.step(rid, "validate", {})
    assert exc.value.status == 500 and "past" in str(exc.value)
    assert store.get(rid)["status"] == "failed"


# ------------------------------------------------------------------------------ lists, stats, approver
def test_the_approver_simulator_approves_pending_requests_after_its_delay(svc, tmp_path):
    rids = []
    for attendees in (150, 700):
        rid = svc.admin("POST", "/api/v1/event-requests", body(attendees))[1]["id"]
        for name in ["classify", "validate", "create", "approve"]:
            assert step(svc, rid, name)[0] == 200
        rids.append(rid)
    listed = svc.admin("GET", "/api/v1/event-requests?status=awaiting_approval")[1]["requests"]
    assert set(rids) <= {r["id"] for r in listed}
    stats = svc.admin("GET", "/api/v1/event-requests/stats")[1]
    assert stats["approvals_pending"]["manager"]["count"] >= 1 and stats["approvals_pending"]["executive"]["count"] >= 1
    assert stats["requests"]["awaiting_approval"] >= 2
    # a long delay: nothing is due yet
    assert Approver(svc.url("admin"), delay=3600).once() == []
    assert all(svc.admin("GET", f"/api/v1/event-requests/{r}/approval")[1]["state"] == "pending" for r in rids)
    # the real command, with the resolved config of the running service and no delay
    cfg = yaml.safe_load(svc.config_file.read_text())
    cfg["demo"]["airflow_approver_delay"] = "0s"
    conf = tmp_path / "approver.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "approver.log", "ab")
    proc = subprocess.Popen(opsstack_argv() + ["-c", str(conf), "demo", "approver"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: all(svc.admin("GET", f"/api/v1/event-requests/{r}/approval")[1]["state"] == "approved"
                             for r in rids), timeout=120, what="the approver simulator's decisions")
    finally:
        stop_process(proc, 10)
        log.close()
    for rid, role in zip(rids, ("manager", "executive")):
        got = svc.admin("GET", f"/api/v1/event-requests/{rid}")[1]
        assert got["status"] == "approved" and got["manual_steps"] == 1
        assert got["approval"]["approver"] == "approver-simulator" and got["approval"]["role"] == role


def test_the_api_needs_a_database_and_is_only_on_event_management(tmp_path):
    other = DemoProcess(tmp_path / "u", service="user-app", load=False).start()
    try:
        assert other.admin("GET", "/api/v1/event-requests")[0] == 404
    finally:
        other.stop()
    if os.environ.get("OPSSTACK_DATABASE_URL"):  # the service would use that one
        return
    nodb = DemoProcess(tmp_path / "e", service="event-management", load=False).start()
    try:
        st, doc = nodb.admin("POST", "/api/v1/event-requests", body())
        assert st == 503 and "database" in doc["error"]
    finally:
        nodb.stop()


def _page(p: DemoProcess, method: str, path: str, data: bytes | None = None,
          content_type: str = "application/x-www-form-urlencoded") -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection(HOST, p.ports["admin"], timeout=30)
    try:
        conn.request(method, path, body=data, headers={"Content-Type": content_type} if data is not None else {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def test_the_web_form_takes_a_request_in_and_the_confirmation_goes_by_mail_and_sms(svc, mails):
    st, headers, page = _page(svc, "GET", "/api/v1/event-requests/form")
    assert st == 200 and headers["content-type"].startswith("text/html") and "<form" in page
    assert "default-src 'none'" in headers["content-security-policy"]
    b = body(50, contact_phone="+82 10-1234-5678")
    b.pop("channel")
    st, headers, _ = _page(svc, "POST", "/api/v1/event-requests",
                           urllib.parse.urlencode({**b, "ignored_field": "x"}).encode())
    assert st == 303, headers
    st, doc = svc.admin("GET", headers["location"])
    assert st == 200 and doc["channel"] == "web" and doc["attendees"] == 50 and doc["approval_tier"] == "auto"
    rid = doc["id"]
    for name in ["classify", "validate", "create", "approve", "configure", "confirm"]:
        st, out = step(svc, rid, name)
        assert st == 200, (name, out)
    assert out["status"] == "completed"
    texts = [m for m in list(mails.sms) if m["to"] == "+821012345678"]
    assert len(texts) == 1 and f"/api/v1/event-requests/{rid}/dashboard" in texts[0]["body"]
    assert any(b["contact_email"] in m["envelope_to"] for m in mails.box.newest_first())


def test_a_refused_web_form_comes_back_with_what_was_wrong_escaped(svc):
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    st, headers, page = _page(svc, "POST", "/api/v1/event-requests",
                              urllib.parse.urlencode({"customer": hostile, "title": hostile, "attendees": "lots",
                                                      "starts_at": "tomorrow"}).encode())
    assert st == 422 and headers["content-type"].startswith("text/html")
    assert "missing: contact_email" in page and "&lt;script&gt;" in page
    assert "<script>" not in page and "<img" not in page
    st, _, page = _page(svc, "POST", "/api/v1/event-requests", b"\xff\xfe=\xff")
    assert st == 400 and "could not be read" in page
    st, _, _ = _page(svc, "DELETE", "/api/v1/event-requests/form")
    assert st == 405
