"""The automation exporter against a real Apache Airflow 3 (`airflow standalone` from .venv-airflow,
started the way the demo launcher starts it: demo/airflow/launcher.py), its REST API v2 with a
JWT from POST /auth/token: the request shapes the fake Airflow checks are the ones the real one
takes, and a run of the demo's DAG shows up in the figures.

The run is triggered with an event-request API that does not answer (a closed loopback port), so
its first step fails: a failed run and a failed task to find. Skipped only when .venv-airflow is
missing (`make airflow-venv`)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request

import pytest
from prometheus_client import generate_latest

from core.config import load_data, view
from core.exporter import registry_for
from core.procs import free_port, tail
from demo.airflow import launcher as AL
from exporters.automation.collector import AutomationCollector
from tests.support import receiver as T
from tests.support.http import json_call as _http
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not AL.installed(), reason=(
    f"Apache Airflow is not installed in {AL.venv()}: run `make airflow-venv`"))]

HOST = "127.0.0.1"
DAG = "event_creation"
START_TIMEOUT = 900  # a cold standalone on a busy 2-core machine
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-exp") / "home"
    ports = {k: free_port(HOST) for k in AL.PORT_KEYS}
    info = AL.render(home, HOST, ports)
    env = AL.environment(home, {})
    env.update(OPSSTACK_STEP_RETRY_SECONDS="1")
    log = home.parent / "standalone.log"
    out = open(log, "ab")
    proc = subprocess.Popen(AL.command(), env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    password = AL.admin_password(home)

    def token():
        st, doc = _http("POST", f"{info['url']}/auth/token", {"username": info["username"], "password": password})
        return doc.get("access_token") if st in (200, 201) else None

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"airflow standalone exited with {proc.returncode}\n{tail(log, 60)}")
        tok = token()
        return tok and _http("GET", f"{info['url']}/api/v2/dags/{DAG}", token=tok)[0] == 200

    try:
        try:
            wait_for(ready, timeout=START_TIMEOUT, interval=1, what=f"Airflow up with DAG {DAG} parsed")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{tail(log, 80)}") from None
        yield {"url": info["url"], "username": info["username"], "password": password, "token": token,
               "home": home}
    finally:
        out.close()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return

        def group_gone():  # standalone's parts (api-server, scheduler, triggerer) leave after it
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return True
            return False
        try:
            wait_for(group_gone, timeout=30, interval=0.2, what="airflow's processes gone")
        except TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.wait(30)


@pytest.fixture(scope="module")
def failed_run(airflow):
    tok = airflow["token"]()
    closed = f"http://{HOST}:{free_port(HOST)}"  # nothing answers: the first step fails
    st, doc = _http("POST", f"{airflow['url']}/api/v2/dags/{DAG}/dagRuns",
                    {"logical_date": None, "conf": {"request_id": 1, "api": closed}}, token=tok)
    assert st in (200, 201), (st, doc)
    run_id = doc["dag_run_id"]

    def done():
        s, d = _http("GET", f"{airflow['url']}/api/v2/dags/{DAG}/dagRuns/{urllib.request.quote(run_id, safe='')}",
                     token=airflow["token"]())
        return d if s == 200 and d.get("state") in ("success", "failed") else None
    return wait_for(done, timeout=RUN_TIMEOUT, interval=1, what=f"run {run_id} finished")


def _scrape(af, **over):
    a = {"cache_ttl": "0s", "timeout": "9s", "page_limit": 2,
         "airflow": {"url": af["url"], "username": af["username"], "password": af["password"]}}
    a.update(over)
    s = view(load_data({"exporters": {"automation": a}}), "exporters.automation")
    return T.samples(generate_latest(registry_for(AutomationCollector(s, af["url"]))).decode())


def ev(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))))


@pytest.mark.parametrize("runs_query", ["batch", "per_dag"])
def test_real_airflow_figures(airflow, failed_run, runs_query):
    assert failed_run["state"] == "failed"
    m = _scrape(airflow, runs_query=runs_query)
    P = "opsstack_automation_"
    assert ev(m, P + "up", source="airflow") == 1.0
    assert ev(m, P + "dags", state="active") == 1 and ev(m, P + "workflows_in_operation") == 1
    assert ev(m, P + "dag_runs", dag_id=DAG, state="failed") >= 1
    assert ev(m, P + "dag_run_success_ratio", dag_id=DAG) == 0.0
    assert ev(m, P + "error_ratio") == 1.0
    assert ev(m, P + "dag_run_duration_seconds", dag_id=DAG, quantile="0.5") > 0
    assert ev(m, P + "dag_run_queued_seconds", dag_id=DAG, quantile="0.5") >= 0  # v2 runs carry queued_at
    assert ev(m, P + "task_failures", dag_id=DAG, task_id="classify") >= 1
    assert ev(m, P + "scheduler_healthy") == 1.0
    assert ev(m, P + "scheduler_heartbeat_age_seconds") < 300
    assert ev(m, P + "time_saved_seconds", dag_id=DAG) == 0.0  # manual minutes set, no success yet


def test_real_airflow_version_found_and_bad_password_is_up_0(airflow):
    m = _scrape(airflow, airflow={"url": airflow["url"], "api_version": "auto", "password": airflow["password"]})
    assert ev(m, "opsstack_automation_up", source="airflow") == 1.0
    m = _scrape(airflow, airflow={"url": airflow["url"], "api_version": "v2", "password": "wrong-password"})
    assert ev(m, "opsstack_automation_up", source="airflow") == 0.0
    assert not [k for k in m if k[0] == "opsstack_automation_dag_runs"]
