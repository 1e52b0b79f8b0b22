"""A real Apache Airflow 3 (`airflow standalone` from .venv-airflow, started the way the demo
launcher starts it: demo/airflow/launcher.py) imports demo/airflow/dags/event_creation.py and runs
it against the Event-request API of a real Event Management demo service (PostgreSQL):
an automatic-tier request ends completed, a manager-tier one waits in the approval sensor
(rescheduled, no worker slot held) until a manager approves, and a request whose configuration
step fails is rolled back and its run ends failed.

Skipped only when .venv-airflow is missing (`make airflow-venv` installs it)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from core.pg import with_dbname
from core.procs import free_port, tail
from demo.airflow import launcher as AL
from demo.airflow.client import AirflowClient, AirflowError
from demo.approver import Approver, Dispatcher
from tests.support.demo import DemoProcess, MailSinkProcess
from tests.support.http import json_call as _http
from tests.support.wait import wait_for

pytestmark = pytest.mark.skipif(not AL.installed(), reason=(
    f"Apache Airflow is not installed in {AL.venv()}: run `make airflow-venv` (pins in demo/airflow/requirements.txt)"))

HOST = "127.0.0.1"
SUPERVISE = ("import os, sys; from demo.airflow import launcher as AL; "
             "sys.exit(AL.supervise(AL.command(), dict(os.environ), sys.argv[1]))")
DAG = "event_creation"
START_TIMEOUT = 900   # a cold standalone (db migrate, four parts) on a busy 2-core machine
RUN_TIMEOUT = 900
EXPECTED_TASKS = {"classify", "validate", "create", "approve", "approval", "configure", "confirm", "rollback"}


class Airflow(AirflowClient):
    """The running standalone, through the demo's client (demo/airflow/client.py)."""

    def __init__(self, url: str, username: str, password: str, log):
        super().__init__(url, username, password, timeout=30)
        self.log = log

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """A raw call (status and body) with the token."""
        return _http(method, f"{self.url}/api/v2{path}", body, self.token())

    def tasks(self, run_id: str) -> dict[str, str]:
        return self.task_states(DAG, run_id)

    def wait_done(self, run_id: str) -> dict:
        def done():
            r = self.run(DAG, run_id)
            return r if r["state"] in ("success", "failed") else None
        try:
            return wait_for(done, timeout=RUN_TIMEOUT, interval=1, what=f"run {run_id} finished")
        except TimeoutError:
            raise AssertionError(f"run {run_id} did not finish: {self.tasks(run_id)}\n{tail(self.log, 60)}") from None


# ----------------------------------------------------------------------------- the Event-request API
class EventApi:
    """The Event-request API of a real Event Management demo service."""

    def __init__(self, url: str):
        self.url = url

    def intake(self, **body) -> dict:
        st, doc = _http("POST", f"{self.url}/api/v1/event-requests", body)
        assert st == 201, (st, doc)
        return doc

    def get(self, rid: int) -> dict:
        st, doc = _http("GET", f"{self.url}/api/v1/event-requests/{rid}")
        assert st == 200, (st, doc)
        return doc

    def approval(self, rid: int) -> dict:
        st, doc = _http("GET", f"{self.url}/api/v1/event-requests/{rid}/approval")
        assert st == 200, (st, doc)
        return doc

    def decide(self, rid: int, decision: str, role: str) -> dict:
        st, doc = _http("POST", f"{self.url}/api/v1/event-requests/{rid}/approval",
                        {"decision": decision, "approver": "test-manager", "role": role})
        assert st == 200, (st, doc)
        return doc


def _request(n: int, attendees: int, **extra) -> dict:
    starts = (datetime.now(timezone.utc) + timedelta(days=30 + n)).replace(microsecond=0).isoformat()
    return {"customer": f"airflow-test-customer-{n}", "title": f"Airflow test event {n}", "event_type": "conference",
            "attendees": attendees, "starts_at": starts, "venue": "Hall A",
            "contact_email": f"contact{n}@example.test", "channel": "api", **extra}


@pytest.fixture(scope="module")
def event_api(tmp_path_factory, pg_server_url):
    """A real Event Management demo service (its event-request API on a fresh database) and the
    demo mail sink the confirmations go to."""
    work = tmp_path_factory.mktemp("eventreq")
    name = f"opsstack_airflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as c:
        c.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    db_url = with_dbname(pg_server_url, name)
    mails = MailSinkProcess(work / "mail").start()
    demo = DemoProcess(work / "svc", service="event-management", load=False)
    demo.cfg["database"] = {"url": db_url}
    demo.cfg["stack"]["ports"] = {"mailsink_smtp": mails.smtp_port, "mailsink_web": mails.web_port}
    demo.write(demo.cfg)
    demo.start(timeout=120)
    try:
        yield EventApi(demo.url("admin")), mails
    finally:
        demo.stop()
        mails.stop()
        with psycopg.connect(pg_server_url, autocommit=True) as c:
            c.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


# ----------------------------------------------------------------------------- Airflow
@pytest.fixture(scope="module")
def airflow(tmp_path_factory, event_api):
    api, _ = event_api
    home = tmp_path_factory.mktemp("airflow") / "home"
    ports = {k: free_port(HOST) for k in AL.PORT_KEYS}
    info = AL.render(home, HOST, ports)
    env = AL.environment(home, {AL.API_VARIABLE: api.url})
    # shorter waits than the demo's: the approval sensor pokes every 10 s (the least the DAG takes), a failed step retries after 1 s
    env.update(OPSSTACK_APPROVAL_POKE_SECONDS="10", OPSSTACK_STEP_RETRY_SECONDS="1")
    log = home.parent / "standalone.log"
    out = open(log, "ab")
    t0 = time.monotonic()
    # as the demo runs it: the launcher's supervise() over `airflow standalone` (own process group)
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISE, str(home)], env=env, cwd=home, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    af = Airflow(info["url"], info["username"], AL.admin_password(home), log)

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"airflow standalone exited with {proc.returncode}\n{tail(log, 60)}")
        st, _ = _http("GET", f"{info['url']}{AL.HEALTH_PATH}", timeout=5)
        return st == 200

    def dag_parsed():
        st, _ = af.api("GET", f"/dags/{DAG}")
        return st == 200

    try:
        try:
            wait_for(ready, timeout=START_TIMEOUT, interval=1, what="the Airflow API server answering")
            wait_for(dag_parsed, timeout=START_TIMEOUT, interval=1, what=f"DAG {DAG} parsed")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{tail(log, 80)}") from None
        af.started_in = time.monotonic() - t0
        yield af
    finally:
        out.close()
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM standalone's process group (it and the parts it started), SIGKILL what is left
    after a generous while."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        pass
    # supervise() returns only once every part has stopped (what `opsstack down` relies on)
    left = AL._group_members(proc.pid, -1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == 0 and left == [], (proc.returncode, left)


@pytest.fixture(scope="module")
def runs(airflow, event_api):
    """Four requests taken in by the API, one run each, triggered together (parallelism 2)."""
    api, _ = event_api
    small = api.intake(**_request(1, 50))
    medium = api.intake(**_request(2, 300))
    broken = api.intake(**_request(3, 40, inject_failure="configure"))
    large = api.intake(**_request(4, 800))
    assert (small["approval_tier"], medium["approval_tier"], large["approval_tier"]) == ("auto", "manager", "executive")
    out = {}
    for key, req in (("small", small), ("medium", medium), ("broken", broken), ("large", large)):
        out[key] = (req["id"], airflow.trigger_event_creation(req["id"], api.url))
    return out


def test_dag_imports_without_errors(airflow):
    st, doc = airflow.api("GET", "/importErrors")
    assert st == 200 and doc["total_entries"] == 0, doc
    st, doc = airflow.api("GET", f"/dags/{DAG}/tasks")
    assert st == 200
    tasks = {t["task_id"]: t for t in doc["tasks"]}
    assert set(tasks) == EXPECTED_TASKS
    assert tasks["rollback"]["trigger_rule"] == "one_failed"
    st, doc = airflow.api("GET", "/dags")
    assert [d["dag_id"] for d in doc["dags"]] == [DAG]  # no example DAGs


def test_auth_is_required(airflow):
    st, _ = _http("GET", f"{airflow.url}/api/v2/dags")
    assert st == 401
    with pytest.raises(AirflowError) as err:
        AirflowClient(airflow.url, "admin", "wrong-password").token()
    assert err.value.status == 401
    assert airflow.import_errors() == []


def test_auto_tier_request_runs_to_completed(airflow, event_api, runs):
    api, mails = event_api
    rid, run_id = runs["small"]
    assert airflow.wait_done(run_id)["state"] == "success", airflow.tasks(run_id)
    tasks = airflow.tasks(run_id)
    assert {t: s for t, s in tasks.items() if t != "rollback"} == dict.fromkeys(EXPECTED_TASKS - {"rollback"},
                                                                                 "success")
    assert tasks["rollback"] == "skipped"
    req = api.get(rid)
    assert req["status"] == "completed" and req["manual_steps"] == 0
    assert req["approval"]["state"] in ("approved", "not_needed")
    wait_for(lambda: any(f"contact1@example.test" in m["envelope_to"] for m in mails.messages()),
             timeout=60, what="the confirmation mail")


def test_manager_tier_waits_in_the_sensor_until_approved(airflow, event_api, runs):
    api, _ = event_api
    rid, run_id = runs["medium"]
    # the sensor pokes, finds "pending" and gives its slot back until the next poke
    wait_for(lambda: airflow.tasks(run_id).get("approval") == "up_for_reschedule", timeout=RUN_TIMEOUT,
             interval=0.5, what="the approval sensor rescheduled")
    assert airflow.run(DAG, run_id)["state"] == "running"
    assert api.approval(rid)["state"] == "pending"
    api.decide(rid, "approve", "manager")
    assert airflow.wait_done(run_id)["state"] == "success", airflow.tasks(run_id)
    req = api.get(rid)
    assert req["status"] == "completed" and req["manual_steps"] == 1
    assert req["approval"]["role"] == "manager"


def test_failed_configuration_rolls_back(airflow, event_api, runs):
    api, _ = event_api
    rid, run_id = runs["broken"]
    assert airflow.wait_done(run_id)["state"] == "failed"
    tasks = airflow.tasks(run_id)
    assert tasks["configure"] == "failed" and tasks["rollback"] == "success"
    assert tasks["confirm"] == "upstream_failed"
    assert api.get(rid)["status"] == "rolled_back"


def test_rejected_request_skips_the_rest(airflow, event_api, runs):
    api, _ = event_api
    rid, run_id = runs["large"]
    wait_for(lambda: airflow.tasks(run_id).get("approval") == "up_for_reschedule", timeout=RUN_TIMEOUT,
             interval=0.5, what="the approval sensor rescheduled")
    api.decide(rid, "reject", "executive")
    assert airflow.wait_done(run_id)["state"] == "success"  # the pipeline worked; the approver said no
    tasks = airflow.tasks(run_id)
    assert tasks["approval"] == "skipped" and tasks["configure"] == "skipped" and tasks["confirm"] == "skipped"
    assert tasks["rollback"] == "skipped"
    assert api.get(rid)["status"] == "rejected"


CHECKS = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import event_creation as E
out = {}
def outcome(fn, *a):
    try:
        return ["ok", fn(*a)]
    except Exception as e:
        return [type(e).__name__, str(e)[:80]]
out["configured"] = outcome(E.api_base, None, "http://10.0.0.5:8080/")
out["loopback"] = outcome(E.api_base, "http://127.0.0.1:9000", "http://10.0.0.5:8080")
out["elsewhere"] = outcome(E.api_base, "http://169.254.169.254", "http://10.0.0.5:8080")
out["scheme"] = outcome(E.api_base, "file:///etc/passwd", None)
out["userinfo"] = outcome(E.api_base, "http://u:p@127.0.0.1:9000", None)
out["none"] = outcome(E.api_base, None, None)
out["rid"] = [outcome(E.request_id, c) for c in ({"request_id": 7}, {"request_id": "8"}, {"request_id": True},
                                                 {"request_id": -1}, {"request_id": "1; drop"}, {})]
out["check"] = [outcome(E.check, s, {"error": "x"}, "step") for s in (200, 409, 429, 500)]
print(json.dumps(out))
'''


def test_the_dags_checks_of_its_input():
    """The DAG's pure helpers, imported by Airflow's own Python: where a run may send requests
    (the conf is input), what a request id may be, which answers are retried."""
    res = subprocess.run([str(AL.venv() / "bin" / "python"), "-c", CHECKS, str(AL.DAGS)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["configured"] == ["ok", "http://10.0.0.5:8080"]
    assert out["loopback"] == ["ok", "http://127.0.0.1:9000"]
    for key in ("elsewhere", "scheme", "userinfo", "none"):
        assert out[key][0] == "ValueError", (key, out[key])
    assert [r[0] for r in out["rid"]] == ["ok", "ok", "ValueError", "ValueError", "ValueError", "ValueError"]
    assert [r[1] for r in out["rid"][:2]] == [7, 8]
    # 2xx: the body; a 4xx but 408/429: refused for good (no retry); 429 and 5xx: retried
    assert [r[0] for r in out["check"]] == ["ok", "StepRejected", "RuntimeError", "RuntimeError"]


def test_the_dispatcher_starts_each_new_request_once(airflow, event_api, runs):
    """`opsstack demo approver` with Airflow on: a request taken in gets one run, named after it;
    a restarted dispatcher (no memory) does not start a second one (Airflow refuses the name)."""
    api, _ = event_api
    for _rid, run_id in runs.values():  # the other tests' requests are past "received" by now
        assert airflow.run(DAG, run_id)["state"] in ("success", "failed")
    req = api.intake(**_request(5, 30))
    approver = Approver(api.url, delay=3600)
    assert Dispatcher(approver, airflow, api.url).once() == [req["id"]]
    with pytest.raises(AirflowError) as err:  # the same request again: refused by name
        airflow.trigger_event_creation(req["id"], api.url, once=True)
    assert err.value.status == 409
    restarted = Dispatcher(approver, airflow, api.url)
    assert req["id"] not in restarted.once()
    assert airflow.wait_done(f"event-request-{req['id']}")["state"] == "success"
    assert api.get(req["id"])["status"] == "completed"
    st, doc = airflow.api("GET", f"/dags/{DAG}/dagRuns?limit=100")
    assert [r["dag_run_id"] for r in doc["dag_runs"]].count(f"event-request-{req['id']}") == 1
