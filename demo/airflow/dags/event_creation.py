"""The event-creation pipeline of issue 13 as an Apache Airflow 3 DAG (docs/automation.md "Airflow").

Intake (classification, validation, duplicate detection at the door) is the Event-request API's
own POST /api/v1/event-requests; this DAG is triggered once per accepted request with the conf
``{"request_id": N, "api": "http://127.0.0.1:<port>"}`` and drives the rest, one task per step:

    classify -> validate -> create -> approve -> approval (sensor) -> configure -> confirm
                                                                   \\-> rollback (one_failed)

Each step is ``POST <api>/api/v1/event-requests/<id>/steps/<step> {"run_id": ...}``; the API makes
every step idempotent, so a retried task never duplicates work. ``approve`` asks for the approval
the tier needs (auto tier: approved at once); the ``approval`` sensor polls
``GET .../approval`` in reschedule mode (it holds no worker slot between pokes) until a person or
the demo's approver simulator decides. A rejection skips the rest (the API records it). When a
step fails for good, ``rollback`` (trigger rule one_failed) calls ``POST .../rollback``, which
undoes create/configure; the run still ends failed (``confirm`` is a leaf that did not succeed),
so it counts in the error rate. ``confirm`` is the customer notification (the API mails the
contact through the configured mail sink, with the dashboard link).

Where the API is: the run's conf ``api``, else the Airflow Variable ``opsstack_eventreq_api``
(the demo launcher sets it as AIRFLOW_VAR_OPSSTACK_EVENTREQ_API). A conf URL must be that
Variable's URL or a loopback http(s) URL (the conf is input: no request goes anywhere else).
An optional bearer token: Variable ``opsstack_eventreq_token``. Parsing stays light: only the
Airflow SDK and the standard library at module level; HTTP happens inside the tasks.
"""
from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

from airflow.sdk import dag, task

DAG_ID = "event_creation"
API_VAR = "opsstack_eventreq_api"
TOKEN_VAR = "opsstack_eventreq_token"
PREFIX = "/api/v1/event-requests"
MAX_BODY = 256 * 1024  # bytes read of an API answer
HTTP_TIMEOUT = 30.0


def _env_float(name: str, default: float, lo: float, hi: float) -> float:
    try:
        v = float(os.environ.get(name, default))
    except ValueError:
        return default
    return min(max(v, lo), hi)


# read at parse time from the environment only (cheap): the demo and the tests shorten them.
# The poke interval stays >= 10 s: with shorter ones Airflow 3.3's scheduler can queue the
# rescheduled sensor again before it has handled the executor's event of the previous poke (the
# worker process still exiting), and then fails it ("task state changed externally").
POKE_SECONDS = _env_float("OPSSTACK_APPROVAL_POKE_SECONDS", 15.0, 10.0, 600.0)
APPROVAL_TIMEOUT = _env_float("OPSSTACK_APPROVAL_TIMEOUT_SECONDS", 7 * 86400.0, 60.0, 30 * 86400.0)
RETRY_SECONDS = _env_float("OPSSTACK_STEP_RETRY_SECONDS", 10.0, 1.0, 600.0)
STEPS = ("classify", "validate", "create", "approve", "configure", "confirm")


class StepRejected(Exception):
    """The API refused the call for good (a 4xx): retrying cannot help."""


# ----------------------------------------------------------------------------- pure helpers
def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_base(conf_api, configured) -> str:
    """The API's base URL: the conf's (checked) or the configured one; ValueError if none fits."""
    url = conf_api if conf_api not in (None, "") else configured
    if not isinstance(url, str) or not url or len(url) > 512:
        raise ValueError("no Event-request API URL: pass conf 'api' or set the Variable " + API_VAR)
    url = url.rstrip("/")
    p = urllib.parse.urlsplit(url)
    if p.scheme not in ("http", "https") or not p.hostname or p.query or p.fragment or p.username:
        raise ValueError("the Event-request API URL must be a plain http(s) URL")
    if url != (configured or "").rstrip("/") and not _loopback(p.hostname):
        raise ValueError("a conf 'api' URL must be the configured one or a loopback address")
    return url


def request_id(conf: dict) -> int:
    rid = (conf or {}).get("request_id")
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 < rid < 2 ** 63:
        if isinstance(rid, str) and rid.isdigit() and len(rid) < 19:
            return int(rid)
        raise ValueError("conf 'request_id' must be a positive integer")
    return rid


def call(base: str, method: str, path: str, body: dict | None = None, token: str | None = None,
         timeout: float = HTTP_TIMEOUT) -> tuple[int, dict]:
    """One JSON call; (status, decoded body). Transport errors raise OSError (a retry may help)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json", "User-Agent": "opsstack-airflow-dag"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (checked URL)
            status, raw = resp.status, resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise OSError(f"{method} {path}: answer over {MAX_BODY} bytes")
    try:
        doc = json.loads(raw.decode("utf-8") or "{}")
    except ValueError:
        doc = {"error": "not JSON"}
    return status, doc if isinstance(doc, dict) else {"value": doc}


def _short(doc: dict) -> str:
    return str(doc.get("error") or doc.get("status") or "")[:200]


def check(status: int, doc: dict, what: str) -> dict:
    """2xx -> the body; 4xx -> StepRejected (no retry helps); else RuntimeError (retried)."""
    if 200 <= status < 300:
        return doc
    if 400 <= status < 500 and status not in (408, 429):
        raise StepRejected(f"{what}: HTTP {status}: {_short(doc)}")
    raise RuntimeError(f"{what}: HTTP {status}: {_short(doc)}")


# ----------------------------------------------------------------------------- task side
def _ctx() -> tuple[str, int, str | None, str]:
    from airflow.sdk import Variable, get_current_context  # heavy: task runtime only

    ctx = get_current_context()
    conf = ctx["dag_run"].conf or {}
    base = api_base(conf.get("api"), Variable.get(API_VAR, default=None))
    return base, request_id(conf), Variable.get(TOKEN_VAR, default=None), ctx["run_id"]


def _fail_for_good(exc: Exception):
    from airflow.sdk.exceptions import AirflowFailException  # heavy: task runtime only

    raise AirflowFailException(str(exc)) from exc


def run_step(step: str) -> dict:
    try:
        base, rid, token, run_id = _ctx()
    except ValueError as e:
        _fail_for_good(e)
    try:
        status, doc = call(base, "POST", f"{PREFIX}/{rid}/steps/{step}", {"run_id": run_id}, token)
        return {"step": step, "status": check(status, doc, f"step {step}").get("status")}
    except StepRejected as e:
        _fail_for_good(e)


DEFAULTS = {"retries": 2, "retry_delay": timedelta(seconds=RETRY_SECONDS), "retry_exponential_backoff": False}


@dag(dag_id=DAG_ID, schedule=None, catchup=False, max_active_runs=16, tags=["opsstack", "automation"],
     default_args=DEFAULTS, doc_md=__doc__, is_paused_upon_creation=False,
     dagrun_timeout=timedelta(seconds=APPROVAL_TIMEOUT + 3600))
def event_creation():
    @task(task_id="classify")
    def classify():
        return run_step("classify")

    @task(task_id="validate")
    def validate():
        return run_step("validate")

    @task(task_id="create")
    def create():
        return run_step("create")

    @task(task_id="approve")
    def approve():
        return run_step("approve")

    @task.sensor(task_id="approval", poke_interval=POKE_SECONDS, timeout=APPROVAL_TIMEOUT, mode="reschedule",
                 retries=0)
    def approval() -> bool:
        from airflow.sdk.exceptions import AirflowSkipException  # heavy: task runtime only

        try:
            base, rid, token, _ = _ctx()
            status, doc = call(base, "GET", f"{PREFIX}/{rid}/approval", token=token)
            state = check(status, doc, "approval").get("state")
        except (ValueError, StepRejected) as e:
            _fail_for_good(e)
        except (OSError, RuntimeError):
            return False  # the API is away for a moment: poke again later
        if state in ("approved", "not_needed"):
            return True
        if state == "rejected":
            raise AirflowSkipException("the request was rejected by its approver")
        return False  # pending

    @task(task_id="configure")
    def configure():
        return run_step("configure")

    @task(task_id="confirm")
    def confirm():
        return run_step("confirm")

    @task(task_id="rollback", trigger_rule="one_failed", retries=3)
    def rollback():
        try:
            base, rid, token, run_id = _ctx()
        except ValueError as e:
            _fail_for_good(e)
        status, doc = call(base, "POST", f"{PREFIX}/{rid}/rollback",
                           {"run_id": run_id, "reason": "a pipeline step failed"}, token)
        try:
            return check(status, doc, "rollback")
        except StepRejected as e:
            _fail_for_good(e)

    steps = [classify(), validate(), create(), approve(), approval(), configure()]
    for up, down in zip(steps, steps[1:]):
        up >> down
    steps[-1] >> confirm()
    steps >> rollback()


event_creation()
