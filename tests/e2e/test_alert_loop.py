"""The whole loop on the native stack: fault -> alert -> ticket -> heal -> resolved."""
from __future__ import annotations

import json

import pytest

from tests.support.harness import wait_for

pytestmark = pytest.mark.e2e


def test_status_reports_every_component_healthy(native_stack):
    res = native_stack.cli("status", "--json")
    comps = json.loads(res.stdout)["components"]
    for name in ("postgres", "prometheus", "alertmanager", "node_exporter", "receiver", "exporter-app",
                 "demo-user-app"):
        assert name in comps, comps
    assert all(c["healthy"] for c in comps.values()), comps
    assert all(c["url"] for c in comps.values())


def test_up_again_is_harmless(native_stack):
    before = json.loads(native_stack.cli("status", "--json").stdout)["components"]
    out = native_stack.cli("up").stdout
    assert "already running" in out
    after = json.loads(native_stack.cli("status", "--json").stdout)["components"]
    assert {n: c["url"] for n, c in before.items()} == {n: c["url"] for n, c in after.items()}


def test_prometheus_scrapes_every_target(native_stack):
    def all_up():
        res = native_stack.prom_query("up")
        return res if res and all(r["value"][1] == "1" for r in res) else None
    res = wait_for(all_up, 60, what="every scrape target up")
    jobs = {r["metric"]["job"] for r in res}
    assert {"prometheus", "alertmanager", "node", "opsstack_app", "opsstack_receiver", "platform"} <= jobs


def test_service_down_opens_a_ticket_and_heal_resolves_it(native_stack, notification_sink):
    # the plain loop: the heal, not a restart playbook, ends the episode (test_remediation_e2e
    # covers the playbooks)
    r = native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": True})
    assert r.status_code == 200, r.text
    native_stack.cli("demo", "fault", "service-down", "--service", "user-app")
    try:
        def opened():
            return [t for t in native_stack.tickets("open")
                    if t["alertname"] == "ServiceDown" and t["service"] == "user-app"]
        tickets = wait_for(opened, 90, what="a ServiceDown ticket for user-app")
        # someone answers the page (before the heal, while it is open): recorded, feeds MTTA
        first = min(t["id"] for t in tickets)
        r = native_stack.api("POST", f"/api/v1/tickets/{first}/acknowledge", json={"note": "on it"})
        assert r.status_code == 200, r.text
        assert native_stack.api("GET", f"/api/v1/tickets/{first}").json()["acknowledged_at"]
    finally:
        native_stack.cli("demo", "heal")
        native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": False})
    ids = {t["id"] for t in tickets}
    assert all(t["severity"] == "critical" for t in tickets)
    assert all(t["opened_at"] and t["resolved_at"] is None for t in tickets)

    def resolved():
        done = [t for t in native_stack.tickets("resolved") if t["id"] in ids]
        return done if len(done) == len(ids) else None
    done = wait_for(resolved, 120, what="the ServiceDown tickets resolved")
    assert all(t["resolved_at"] for t in done)
    # nothing about user-app is still open
    assert not [t for t in native_stack.tickets("open") if t["id"] in ids]
    # the on-call channel heard about it
    wait_for(lambda: any("ServiceDown" in r.text for r in notification_sink.requests), 60,
             what="a ServiceDown notification on the webhook channel")
