"""Each demo fault, injected on the native stack, makes its matching alert fire in
Prometheus, and `opsstack demo heal` makes it stop (issue: platform monitoring).

Remediation is switched off (run-time kill switch) while these run, so that what stops
the alert is the heal, not a playbook. The services and regions differ from the ones
test_remediation_e2e.py breaks, so that its tickets are new ones, not re-fires.
"""
from __future__ import annotations

import pytest

from stack.harness import wait_for

pytestmark = pytest.mark.e2e

# fault argv -> (alert, labels the firing alert must carry)
FAULTS = [
    (["service-down", "--service", "event-management"], "ServiceDown", {"service": "event-management"}),
    (["error-burst", "--service", "user-app", "--rate", "1.0"], "ServiceErrorRatioHigh", {"service": "user-app"}),
    (["latency-spike", "--service", "gate-management", "--rate", "600ms"], "ServiceLatencyHigh",
     {"service": "gate-management"}),
    (["region-outage", "--region", "singapore"], "RegionDown", {"region": "singapore"}),
    (["memory-leak", "--service", "gate-management", "--rate", "96MiB"], "ServiceMemoryHigh",
     {"service": "gate-management"}),
    (["disk-fill", "--service", "event-management", "--rate", "128MiB"], "ServiceDiskAlmostFull",
     {"service": "event-management"}),
    (["cpu-ramp", "--service", "integrated-platform", "--rate", "0.5"], "ServiceCpuHigh",
     {"service": "integrated-platform"}),
    (["cache-miss-storm", "--service", "user-app"], "CacheHitRatioLow", {"service": "user-app"}),
]


@pytest.fixture(scope="module")
def stack_without_remediation(native_stack):
    r = native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": True})
    assert r.status_code == 200, r.text
    yield native_stack
    native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": False})


def _matching(stack, alert, labels):
    return [a for a in stack.firing_alerts(alert)
            if all(a["labels"].get(k) == v for k, v in labels.items())]


@pytest.mark.parametrize("argv,alert,labels", FAULTS, ids=[f[0][0] for f in FAULTS])
def test_fault_fires_its_alert_and_heal_stops_it(stack_without_remediation, argv, alert, labels):
    stack = stack_without_remediation
    # a clean start: nothing of this alert firing before the fault
    wait_for(lambda: not _matching(stack, alert, labels), 120, what=f"{alert} quiet before the fault")
    stack.cli("demo", "fault", *argv)
    try:
        firing = wait_for(lambda: _matching(stack, alert, labels), 150, what=f"{alert} firing")
        assert firing[0]["labels"]["severity"] in ("warning", "critical")
    finally:
        stack.cli("demo", "heal")
    wait_for(lambda: not _matching(stack, alert, labels), 150, what=f"{alert} stopped after heal")
