"""The edge faults on the native stack (demo/edge.py, docs/demo.md "Edge faults") fire their alerts:
waf-attack -> WafAttackSurge, cert-expiry -> TlsCertExpiringSoon (critical) which heal ends,
origin-overload -> OriginOverloaded (the edge nginx's 5xx share). The module shortens those
alerts' `for:` with `opsstack up` on the running stack (Prometheus reloads, nothing restarts)
and puts the config back afterwards; remediation is switched off meanwhile."""
from __future__ import annotations

import copy
import threading

import pytest
import yaml

from demo import edge
from tests.support.harness import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def edge_stack(native_stack):
    before = yaml.safe_load(native_stack.config_file.read_text())
    cfg = copy.deepcopy(before)
    alerts = cfg.setdefault("alerts", {})
    alerts.setdefault("security", {}).update(waf_for="3s", tls_for="3s")
    alerts.setdefault("cdn", {}).update(origin_for="3s")
    out = native_stack.reconfigure(cfg)
    did = next((line for line in out.splitlines() if line.startswith("opsstack: reloaded")), out)
    assert "reloaded prometheus" in did and "restarted" not in did, out
    r = native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": True})
    assert r.status_code == 200, r.text
    try:
        yield native_stack
    finally:
        native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": False})
        native_stack.cli("demo", "heal", check=False)
        native_stack.reconfigure(before)


def _firing(stack, alert: str, **labels) -> list[dict]:
    return [a for a in stack.firing_alerts(alert) if all(a["labels"].get(k) == v for k, v in labels.items())]


def test_waf_attack_fires_waf_attack_surge(edge_stack):
    r = edge_stack.resolved
    service = r["platform"]["services"][0]["name"]
    vhost = edge.vhost(service, r["demo"]["home_region"])
    res = edge_stack.cli("demo", "fault", "waf-attack", "--service", service)
    assert "x 403" in res.stdout and "x 200" not in res.stdout, res.stdout
    alerts = wait_for(lambda: _firing(edge_stack, "WafAttackSurge", vhost=vhost), timeout=240, interval=1,
                      what="WafAttackSurge firing")
    assert {a["labels"]["attack_class"] for a in alerts} >= {"sqli", "xss"}
    banned = edge.fail2ban_banned(r)[edge.JAIL]
    assert set(edge.ATTACKERS) <= set(banned)


def test_cert_expiry_fires_and_heal_ends_it(edge_stack):
    r = edge_stack.resolved
    tls = [x for x in edge.listeners(r) if x["tls"]]
    x = tls[0]
    assert not _firing(edge_stack, "TlsCertExpiringSoon", endpoint=x["name"])
    edge_stack.cli("demo", "fault", "cert-expiry", "--service", x["service"], "--region", x["region"])
    alerts = wait_for(lambda: _firing(edge_stack, "TlsCertExpiringSoon", endpoint=x["name"]), timeout=180,
                      interval=1, what="TlsCertExpiringSoon firing")
    assert alerts[0]["labels"]["severity"] == "critical"
    edge_stack.cli("demo", "heal", "--kind", "cert-expiry")
    wait_for(lambda: not _firing(edge_stack, "TlsCertExpiringSoon", endpoint=x["name"]), timeout=180, interval=1,
             what="TlsCertExpiringSoon ends after heal")
    # the close-to-expiry certificate of a fresh stack (45 days) fires nothing
    assert not edge_stack.firing_alerts("TlsCertExpiringSoon")


def test_origin_overload_fires_origin_overloaded(edge_stack):
    r = edge_stack.resolved
    service = r["platform"]["services"][-1]["name"]
    region = r["demo"]["home_region"]
    x = next(x for x in edge.listeners(r) if x["service"] == service and x["region"] == region)
    stop = threading.Event()

    def traffic():  # enough edge requests for the alert's minimum rate, whatever the hour's load
        while not stop.is_set():
            edge.request(r, x, "GET", "/api/me", timeout=10)
            stop.wait(0.2)
    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        edge_stack.cli("demo", "fault", "origin-overload", "--service", service, "--region", region, "--rate", "0.8")
        wait_for(lambda: _firing(edge_stack, "OriginOverloaded", vhost=x["vhost"]), timeout=300, interval=1,
                 what="OriginOverloaded firing")
    finally:
        edge_stack.cli("demo", "heal", "--kind", "origin-overload", check=False)
        stop.set()
        for t in threads:
            t.join(30)
    wait_for(lambda: edge.request(r, x, "GET", "/api/me") == 200, timeout=60, what="the origin answers again")
