"""Automatic recovery on the native stack (issue 6): fault -> alert -> ticket -> playbook ->
verified recovery -> ticket resolved; a second fault inside the cooldown goes to people; a region
outage is rerouted and restored.

Uses the session's native stack (tests/e2e/conftest.py). Timeouts are generous because the
Alertmanager timings of that stack decide when tickets open and resolve (warning group_wait /
group_interval); bench/fault_campaign.py runs the same loop with short timings and measures it.
"""
from __future__ import annotations

import pytest
import requests

from tests.support.harness import wait_for

pytestmark = pytest.mark.e2e


def api(stack, path):
    # reads need a credential: the stack's receiver token (receiver.api.accept_receiver_token)
    r = requests.get(stack.url("receiver") + "/api/v1" + path, headers={"Authorization": f"Bearer {stack.token}"},
                     timeout=10)
    r.raise_for_status()
    return r.json()


def tickets(stack):
    body = api(stack, "/tickets?limit=500")
    return body["tickets"] if isinstance(body, dict) else body


def runs_of(stack, ticket_id):
    return api(stack, f"/tickets/{ticket_id}/remediation")["runs"]


def snapshot(stack) -> dict:
    """{ticket id: times reopened}: a ticket is an incident per Alertmanager group, so the same
    fault again within the reopen window reopens the earlier incident instead of opening one."""
    return {t["id"]: t["reopened_count"] for t in tickets(stack)}


def new_ticket(stack, known, alertname, service=None):
    """Tickets (re)opened since ``known`` (a snapshot) for ``alertname``."""
    return [t for t in tickets(stack) if t["alertname"] == alertname and t["status"] != "resolved"
            and (t["id"] not in known or t["reopened_count"] > known[t["id"]])
            and (service is None or t["service"] == service)]


def run_ids(stack) -> set:
    """Every remediation run so far (taken before a fault: its runs are the ones not in it)."""
    return {r["id"] for r in api(stack, "/remediation/runs?limit=500")["runs"]}


def new_runs(stack, ticket_id, before: set):
    """The ticket's remediation runs that finished, leaving out those of earlier episodes."""
    return [r for r in runs_of(stack, ticket_id) if r["id"] not in before and r["status"] not in ("pending", "running")]


def test_memory_leak_restart_resolves_the_ticket_then_cooldown_escalates(native_stack):
    s = native_stack
    known, before = snapshot(s), run_ids(s)
    s.cli("demo", "fault", "memory-leak", "--service", "user-app", "--rate", "96MiB")
    try:
        [t] = wait_for(lambda: new_ticket(s, known, "ServiceMemoryHigh", "user-app"), 240,
                       what="a ServiceMemoryHigh ticket")[:1]
        run = wait_for(lambda: new_runs(s, t["id"], before), 180, what="the memory-leak run to finish")[0]
        assert (run["playbook"], run["status"]) == ("memory-leak", "recovered"), run
        [att] = run["attempts"]
        assert (att["backend"], att["operation"], att["status"], att["verified"]) == \
            ("supervisor", "restart", "ok", True)
        assert att["command"]["program"] == "demo-user-app"
        # memory dropped: the alert resolves, and so does the ticket, without a person
        wait_for(lambda: api(s, f"/tickets/{t['id']}")["status"] == "resolved", 420, what="ticket resolved")
        got = api(s, f"/tickets/{t['id']}")
        assert got["acknowledged_at"] is None
        # a second fault inside the cooldown: no action, the ticket goes to people
        known = {x["id"] for x in tickets(s)} - {t["id"]}
        s.cli("demo", "fault", "memory-leak", "--service", "user-app", "--rate", "96MiB")

        def second():
            ts = [x for x in tickets(s) if x["alertname"] == "ServiceMemoryHigh" and x["service"] == "user-app"
                  and x["status"] != "resolved" and (x["id"] not in known)]
            return ts
        [t2] = wait_for(second, 240, what="the second ServiceMemoryHigh ticket")[:1]
        # the run row turns 'skipped' first and records the escalation once it is done: wait for both
        run2 = wait_for(lambda: [r for r in runs_of(s, t2["id"]) if r["status"] == "skipped"
                                 and r["alert_starts_at"] != run["alert_starts_at"] and r["escalated"]], 120,
                        what="the cooldown refusal, escalated")[0]
        assert "cooldown" in run2["reason"] and run2["attempts"] == [] and run2["escalated"] is True
        events = api(s, f"/tickets/{t2['id']}")["events"]
        assert any(e["kind"] == "escalated" and e["actor"] == "remediation" for e in events)
    finally:
        s.cli("demo", "heal", check=False)


def test_region_outage_is_rerouted_then_restored(native_stack):
    s = native_stack
    admin = s.resolved["demo"]["ports"]["user-app"]["admin"]
    route = f"http://{s.host}:{admin}/admin/route"
    known, before = snapshot(s), run_ids(s)
    s.cli("demo", "fault", "region-outage", "--region", "tokyo", "--duration", "60")
    try:
        [t] = wait_for(lambda: new_ticket(s, known, "RegionDown"), 240, what="a RegionDown ticket")[:1]
        run = wait_for(lambda: new_runs(s, t["id"], before), 180, what="the region-outage run")[0]
        assert (run["playbook"], run["status"]) == ("region-outage", "recovered"), run
        assert run["attempts"][0]["action"] == "reroute"
        assert "tokyo" not in requests.get(route, timeout=5).json()["healthy"] or run["restored_at"]
        # the alert resolves (the reroute itself can end it, or the fault healing after 60 s); the
        # routes are restored, and the restore is recorded on the run. The attempt row commits just
        # after the restore call returns: the routes can look restored a moment before it is there
        def restored():
            this = [r for r in runs_of(s, t["id"]) if r["id"] == run["id"]][0]
            healthy = sorted(requests.get(route, timeout=5).json()["healthy"])
            return (healthy == ["seoul", "singapore", "tokyo"] and this["restored_at"]
                    and [a["phase"] for a in this["attempts"]] == ["ladder", "on_resolved"])
        wait_for(restored, 600, what="routes restored and the restore recorded on the run")
    finally:
        s.cli("demo", "heal", check=False)
