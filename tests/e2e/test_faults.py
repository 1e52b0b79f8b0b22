"""Each demo fault, injected on the native stack, makes its matching alert fire in
Prometheus, and `opsstack demo heal` makes it stop (issue: platform monitoring).

Remediation is switched off (run-time kill switch) while these run, so that what stops an
alert is the heal, not a playbook. The faults that do not disturb each other's alerts are
injected together (each on its own service, or a different signal of the same one) and
watched in one loop; the region outage, which takes every service's instance in a region
down, runs on its own. The services and regions differ from the ones test_remediation_e2e.py
breaks, so that its tickets are new ones, not re-fires.
"""
from __future__ import annotations

import time

import pytest

from tests.support.harness import wait_for

pytestmark = pytest.mark.e2e

# (fault argv, alert, labels the firing alert must carry)
TOGETHER = [
    (["service-down", "--service", "event-management"], "ServiceDown", {"service": "event-management"}),
    (["error-burst", "--service", "user-app", "--rate", "1.0"], "ServiceErrorRatioHigh", {"service": "user-app"}),
    (["latency-spike", "--service", "gate-management", "--rate", "600ms"], "ServiceLatencyHigh",
     {"service": "gate-management"}),
    (["memory-leak", "--service", "gate-management", "--rate", "96MiB"], "ServiceMemoryHigh",
     {"service": "gate-management"}),
    (["disk-fill", "--service", "event-management", "--rate", "128MiB"], "ServiceDiskAlmostFull",
     {"service": "event-management"}),
    (["cpu-ramp", "--service", "integrated-platform", "--rate", "0.5"], "ServiceCpuHigh",
     {"service": "integrated-platform"}),
    (["cache-miss-storm", "--service", "integrated-platform"], "CacheHitRatioLow",
     {"service": "integrated-platform"}),
]
ALONE = [
    (["region-outage", "--region", "singapore"], "RegionDown", {"region": "singapore"}),
]


@pytest.fixture(scope="module")
def stack_without_remediation(native_stack):
    r = native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": True})
    assert r.status_code == 200, r.text
    yield native_stack
    native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": False})


def _firing(stack, cases) -> set[str]:
    """Names (argv[0]) of the cases whose alert is firing now."""
    alerts = stack.firing_alerts()
    out = set()
    for argv, alert, labels in cases:
        if any(a["labels"].get("alertname") == alert and all(a["labels"].get(k) == v for k, v in labels.items())
               for a in alerts):
            out.add(argv[0])
    return out


def _run(stack, cases, fire_timeout=150, stop_timeout=150):
    names = {c[0][0] for c in cases}
    wait_for(lambda: not _firing(stack, cases), 120, what="a quiet start")
    for argv, _, _ in cases:
        stack.cli("demo", "fault", *argv)
    seen: set[str] = set()
    deadline = time.monotonic() + fire_timeout
    try:
        while seen != names and time.monotonic() < deadline:
            seen |= _firing(stack, cases)
            time.sleep(0.5)
    finally:
        stack.cli("demo", "heal")
    missing = {c[1] for c in cases if c[0][0] not in seen}
    assert not missing, f"alerts that never fired: {sorted(missing)}"
    deadline = time.monotonic() + stop_timeout
    still = names
    while still and time.monotonic() < deadline:
        still = _firing(stack, cases)
        time.sleep(0.5)
    assert not still, f"alerts still firing {stop_timeout}s after heal: " + \
        str(sorted(c[1] for c in cases if c[0][0] in still))


def test_faults_fire_their_alerts_and_heal_stops_them(stack_without_remediation):
    _run(stack_without_remediation, TOGETHER)


def test_region_outage_fires_region_down_and_heal_stops_it(stack_without_remediation):
    _run(stack_without_remediation, ALONE)
