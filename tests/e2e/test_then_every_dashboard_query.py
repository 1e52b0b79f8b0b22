"""Every Prometheus query of every committed dashboard runs against the live native stack
(fed by the demo platform): it must parse and return data.

It runs after the other e2e modules (the file name sorts last), so the stack has seen faults,
tickets, acknowledgements, notifications and remediation runs by then: the Incidents panels
have something to show.

The only queries allowed to come back empty are those about things the demo database does
not have (no pgbouncer, no replica, WAL archiving off, no backup source configured) and the
daily peak, which needs a day of history the fault tests' forecaster does not read. Each is
listed with its reason; anything else empty fails the test.
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
    r"opsstack_db_replication_lag_seconds": "the demo database has no replica",
    r"opsstack_db_archiver_last_archived_timestamp_seconds": "WAL archiving is off on the demo database",
    r"opsstack_db_backup_last_success_timestamp_seconds": "no backup source is configured for the demo",
    r"opsstack_forecast_(next_peak_|peak_hour)": "the daily peak needs a whole day of history; the fault tests' "
                                                 "forecaster reads 10 minutes of it (tests/unit/test_forecast_peak.py "
                                                 "tests the peak, test_a_fresh_stack_is_quiet.py the history)",
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


def test_every_panel_query_parses_and_returns_data(native_stack):
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
