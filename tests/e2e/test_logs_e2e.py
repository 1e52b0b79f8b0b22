"""Logs end to end (issue 17, docs/logs.md): on the running stack with its Loki,
`opsstack demo fault error-burst --service user-app` makes the service log its failed requests;
they reach Loki, the ruler's LogErrorSurge fires through the stack's Alertmanager together with
the metric alert ServiceErrorRatioHigh on the same service, and the ticket has the error lines.

A stack without Loki (no Grafana Loki binary on the machine: Debian has none, logs.loki resolved
to off) cannot show any of it: the test skips and says why."""
from __future__ import annotations

import time

import pytest
import requests

from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e


def _am_alerts(stack, name: str) -> list[dict]:
    r = requests.get(stack.url("alertmanager") + "/api/v2/alerts", params={"active": "true"}, timeout=10)
    r.raise_for_status()
    return [a for a in r.json() if a["labels"].get("alertname") == name]


def test_error_burst_logs_reach_loki_fire_log_surge_and_land_on_the_ticket(native_stack):
    stack = native_stack
    if stack.resolved["logs"]["loki"] != "on":
        pytest.skip("this stack runs no Loki (logs.loki resolved to off: no Grafana Loki binary)")
    started = time.time()
    stack.cli("demo", "fault", "error-burst", "--service", "user-app", "--rate", "1.0")
    try:
        loki = stack.url("loki")

        def error_lines():
            r = requests.get(loki + "/loki/api/v1/query_range", timeout=10, params={
                "query": '{service="user-app",level="error"} |= "event=request_failed"',
                "start": str(int((started - 5) * 1e9)), "end": str(int(time.time() * 1e9)), "limit": "50"})
            r.raise_for_status()
            return sum(len(s["values"]) for s in r.json()["data"]["result"]) or None

        wait_for(error_lines, timeout=180, interval=2, what="the demo's error lines in Loki")
        surge = wait_for(lambda: _am_alerts(stack, "LogErrorSurge") or None, timeout=600, interval=5,
                         what="LogErrorSurge in Alertmanager (from Loki's ruler)")
        assert surge[0]["labels"]["service"] == "user-app" and surge[0]["labels"]["severity"] == "warning"
        wait_for(lambda: _am_alerts(stack, "ServiceErrorRatioHigh") or None, timeout=600, interval=5,
                 what="the metric alert on the same service")

        def ticket_with_logs():
            for t in stack.tickets():
                if t.get("service") != "user-app" or \
                        t.get("alertname") not in ("ServiceErrorRatioHigh", "LogErrorSurge"):
                    continue
                got = stack.api("GET", f"/api/v1/tickets/{t['id']}/attachments/logs.txt")
                if got.status_code == 200 and "event=request_failed" in got.text:
                    return t, got.text
            return None

        ticket, text = wait_for(ticket_with_logs, timeout=300, interval=5, what="a ticket with the error lines")
        assert "level=ERROR" in text and "fault=error-burst" in text and "logs unavailable" not in text
        names = {a["name"] for a in stack.api("GET", f"/api/v1/tickets/{ticket['id']}/attachments").json()[
            "attachments"]}
        assert "logs.txt" in names
    finally:
        stack.cli("demo", "heal")
