"""Issue 13 end to end: `opsstack up` with `demo.airflow: true` runs Apache Airflow, the
event-creation DAG, the approver/dispatcher and the automation exporter. Event requests of 50,
300 and 800 attendees are taken in by the Event Management service's API only; nothing else is
called by the test: the dispatcher starts one DAG run per request, the approver simulator
approves the manager and executive tiers, each ends configured and its contact is mailed
(the demo mail sink), and a request whose configuration step fails is rolled back and counted
in the error rate that Prometheus scrapes from the automation exporter. The contact who gave a
phone number also gets a text (the mail sink's SMS gateway).

Its own small stack (no edge, no forecaster, no history: what this path needs), after the
shared stack's tests. Skipped only when .venv-airflow is missing (`make test` installs it).
"""
from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from demo.airflow import launcher as AL
from tests.support.harness import automation_stack
from tests.support.http import json_call as _http
from tests.support.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not AL.installed(), reason=(
    f"Apache Airflow is not installed in {AL.venv()}: run `make airflow-venv`"))]

# "failed" is not an end: the DAG retries a failed step, then rolls back
FINISHED = ("completed", "rolled_back", "rejected")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    handle = automation_stack(tmp_path_factory.mktemp("automation-stack"))
    try:
        handle.up(timeout=1200)
        yield handle
    finally:
        handle.down()


def _request(n: int, attendees: int, **extra) -> dict:
    starts = (datetime.now(timezone.utc) + timedelta(days=40 + n)).replace(microsecond=0).isoformat()
    return {"customer": f"e2e-customer-{n}", "title": f"E2E launch {n}", "event_type": "conference",
            "attendees": attendees, "starts_at": starts, "venue": "Hall B",
            "contact_email": f"e2e{n}@example.test", "channel": "web", **extra}


def test_event_requests_run_through_airflow_to_configured_and_notified(stack):
    api = AL.event_api_url(stack.resolved) + "/api/v1/event-requests"
    made = {}
    for n, (attendees, extra) in enumerate([(50, {"contact_phone": "+82 10-5555-0100"}), (300, {}), (800, {}),
                                            (40, {"inject_failure": "configure"})]):
        st, doc = _http("POST", api, _request(n, attendees, **extra))
        assert st == 201, doc
        made[n] = doc
    assert [made[i]["approval_tier"] for i in range(3)] == ["auto", "manager", "executive"]

    def all_finished():
        got = {n: _http("GET", f"{api}/{d['id']}")[1] for n, d in made.items()}
        return got if all(g.get("status") in FINISHED for g in got.values()) else None
    try:
        final = wait_for(all_finished, timeout=900, interval=3, what="every request through the pipeline")
    except TimeoutError:
        raise AssertionError({n: _http("GET", f"{api}/{d['id']}")[1] for n, d in made.items()}) from None
    for n in range(3):
        assert final[n]["status"] == "completed", final[n]
        assert final[n]["event_id"] and final[n]["completed_at"]
    assert final[1]["approval"]["role"] == "manager" and final[2]["approval"]["role"] == "executive"
    assert final[0]["manual_steps"] == 0 and final[1]["manual_steps"] == final[2]["manual_steps"] == 1
    assert final[3]["status"] == "rolled_back", final[3]

    mailsink = f"http://{stack.resolved['stack']['host']}:{stack.resolved['stack']['ports']['mailsink_web']}"
    wanted = {f"e2e{n}@example.test" for n in range(3)}

    def mailed():
        with urllib.request.urlopen(mailsink + "/api/messages", timeout=10) as r:
            to = {a for m in json.loads(r.read())["messages"] for a in m["envelope_to"]}
        return wanted <= to and f"e2e3@example.test" not in to
    wait_for(mailed, timeout=120, what="the three confirmations (and none for the rolled-back request)")
    with urllib.request.urlopen(mailsink + "/api/sms", timeout=10) as r:  # and the text to the one who gave a phone
        assert [t["to"] for t in json.loads(r.read())["messages"]] == ["+821055550100"]

    # the exporter sees Airflow's runs: one failed of four finished, in Prometheus
    def error_ratio():
        res = stack.prom_query('opsstack_automation_error_ratio and on () opsstack_automation_up{source="airflow"} == 1')
        return float(res[0]["value"][1]) if res and float(res[0]["value"][1]) > 0 else None
    ratio = wait_for(error_ratio, timeout=180, interval=2, what="the error ratio in Prometheus")
    assert ratio == pytest.approx(1 / 4)
    runs = stack.prom_query('sum by (state) (opsstack_automation_dag_runs{dag_id="event_creation"})')
    by_state = {r["metric"]["state"]: float(r["value"][1]) for r in runs}
    assert by_state.get("success") == 3 and by_state.get("failed") == 1, by_state
