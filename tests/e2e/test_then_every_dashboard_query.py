"""Every Prometheus query of every committed dashboard runs against the live native stack
(fed by the demo platform): it must parse and return data.

It runs after the other e2e modules (the file name sorts last), so the stack has seen faults,
tickets, acknowledgements, notifications and remediation runs by then: the Incidents panels
have something to show.

The only queries allowed to come back empty are those about things the demo database does
not have (no pgbouncer; its replica, WAL archive and pgBackRest backups are real: demo/backups.py)
the daily peak, which needs a day of history the fault tests' forecaster does not read, and the
Automation board's when the stack runs no Airflow (off by default). Each is listed with its reason;
anything else empty fails the test.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from dashboards.common import expand_variables, panel_queries

pytestmark = pytest.mark.e2e

JSON_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "json"

NO_DATA_ON_THE_DEMO = {
    r"opsstack_db_pgbouncer_": "the demo database has no pgbouncer in front of it",
    r"opsstack_forecast_(next_peak_|peak_hour)": "the daily peak needs a whole day of history; the fault tests' "
                                                 "forecaster reads 10 minutes of it (tests/unit/test_forecast_peak.py "
                                                 "tests the peak, test_a_fresh_stack_is_quiet.py the history)",
    r"opsstack_scaling_recommended_replicas": "the replicas needed at the next daily peak need that peak (above); "
                                              "tests/integration/test_scaling_advisor.py tests it on live demo "
                                              "traffic",
}


def _allowed_empty(expr: str) -> str | None:
    for pattern, reason in NO_DATA_ON_THE_DEMO.items():
        if re.search(pattern, expr):
            return reason
    return None


def _queries():
    out = []
    for f in sorted(JSON_DIR.rglob("*.json")):
        model = json.loads(f.read_text())
        for expr in panel_queries(model):
            out.append((f"{f.parent.name}/{model['uid']}", expr))
    return out


def _stack_allowed_empty(resolved: dict) -> dict[str, str]:
    """What this stack does not run, so its panels have nothing to show (they must still parse)."""
    from exporters import automation

    if automation.enabled(resolved):
        return {}
    return {r"opsstack_automation_": "this stack runs no Airflow and no automation exporter (demo.airflow off: "
                                     "heavy, docs/automation.md); tests/integration/test_automation_exporter*.py "
                                     "check these series against a real Airflow and the receiver"}


def test_every_panel_query_parses_and_returns_data(native_stack):
    NO_DATA_ON_THE_DEMO.update(_stack_allowed_empty(native_stack.resolved))
    queries = _queries()
    assert len(queries) > 50
    url = native_stack.url("prometheus") + "/api/v1/query"
    pending = {i: q for i, q in enumerate(queries)}
    errors: dict[int, str] = {}
    # data needs time: rate windows, recording rules, the first forecast run
    deadline = time.monotonic() + 240
    while any(not _allowed_empty(queries[i][1]) for i in pending) and time.monotonic() < deadline:
        for i, (dash, expr) in list(pending.items()):
            r = requests.get(url, params={"query": expand_variables(expr, rate_interval="1m")}, timeout=20)
            body = r.json()
            if body.get("status") != "success":
                errors[i] = body.get("error", r.text)
                del pending[i]
            elif body["data"]["result"] not in ([], None):
                del pending[i]
        if pending:
            time.sleep(3)
    assert not errors, "queries that do not parse/run:\n" + "\n".join(
        f"{queries[i][0]}: {queries[i][1]!r}: {e}" for i, e in errors.items())
    empty = [(queries[i][0], queries[i][1]) for i in pending if not _allowed_empty(queries[i][1])]
    assert not empty, "queries with no data:\n" + "\n".join(f"{d}: {e!r}" for d, e in empty)


def test_every_logql_panel_query_returns_data_from_loki(native_stack):
    """The LogQL panels (the Overview's Logs row) run against the stack's Loki and must return
    data. A stack without Loki (no Grafana Loki binary on the machine, logs.loki resolved to off:
    docs/logs.md) cannot check them: the test says so by skipping, it does not pass."""
    from dashboards.common import logql_queries

    if native_stack.resolved["logs"]["loki"] != "on":
        pytest.skip("this stack runs no Loki (logs.loki resolved to off: no Grafana Loki binary)")
    queries = [(f"{f.parent.name}/{m['uid']}", q) for f in sorted(JSON_DIR.rglob("*.json"))
               for m in [json.loads(f.read_text())] for q in logql_queries(m)]
    assert queries
    url = native_stack.url("loki") + "/loki/api/v1/query_range"
    pending = dict(enumerate(queries))
    errors: dict[int, str] = {}
    deadline = time.monotonic() + 240
    while pending and time.monotonic() < deadline:
        for i, (dash, expr) in list(pending.items()):
            end = time.time()
            params = {"query": expand_variables(expr, rate_interval="1m"), "start": str(int((end - 900) * 1e9)),
                      "end": str(int(end * 1e9)), "step": "60", "limit": "100"}
            r = requests.get(url, params=params, timeout=20)
            if r.status_code != 200:
                errors[i] = r.text[:300]
                del pending[i]
            elif r.json()["data"]["result"]:
                del pending[i]
        if pending:
            time.sleep(3)
    assert not errors, "LogQL that Loki refuses:\n" + "\n".join(f"{queries[i]}: {e}" for i, e in errors.items())
    assert not pending, "LogQL panels with no data:\n" + "\n".join(f"{d}: {e!r}" for d, e in pending.values())
