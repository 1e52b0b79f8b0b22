"""cpu-ramp and ServiceCpuHigh agree on any machine (issue 14): with busy processes competing for
every core, the fault still drives what ServiceCpuHigh evaluates (the service's own CPU seconds
over its limit) past the threshold; without the fault it stays below."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import defaults
from tests.support.demo import DemoProcess
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

THRESHOLD = defaults()["alerts"]["service"]["cpu_ratio"]


def reading(demo) -> tuple[float, float, float]:
    """(wall time, opsstack_service_cpu_seconds_total, opsstack_service_cpu_limit_cores)."""
    cpu = limit = None
    for fam in text_string_to_metric_families(demo.metrics()):
        for s in fam.samples:
            if s.name == "opsstack_service_cpu_seconds_total":
                cpu = s.value
            elif s.name == "opsstack_service_cpu_limit_cores":
                limit = s.value
    return time.monotonic(), cpu, limit


class Ratio:
    """What ServiceCpuHigh evaluates, rate(opsstack_service_cpu_seconds_total) / limit, over the
    last ``window`` seconds of readings (None until the window is covered)."""

    def __init__(self, demo, window: float = 3.0):
        self.demo, self.window, self.readings = demo, window, []

    def __call__(self) -> float | None:
        now = reading(self.demo)
        self.readings.append(now)
        old = [r for r in self.readings if now[0] - r[0] >= self.window]
        if not old:
            return None
        t0, c0, _ = old[-1]
        self.readings = self.readings[self.readings.index(old[-1]):]
        return (now[1] - c0) / (now[0] - t0) / now[2]


@pytest.fixture
def busy_machine():
    """Processes that keep every core busy (more runnable threads than cores)."""
    n = 2 * (os.cpu_count() or 2) + 2
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    yield procs
    for p in procs:
        p.kill()
    for p in procs:
        p.wait(timeout=30)


def test_cpu_ramp_passes_the_threshold_on_a_busy_machine(tmp_path, busy_machine):
    demo = DemoProcess(tmp_path, service="user-app", load=False,
                       services=[{"name": "user-app", "cpu_limit_cores": 1.0}])
    demo.start(timeout=120)
    try:
        quiet = Ratio(demo)
        [ratio] = wait_for(lambda: (v := quiet()) is not None and [v], timeout=120, interval=0.5,
                           what="a reading over the window without the fault")
        assert ratio < THRESHOLD
        status, _ = demo.admin("POST", "/admin/faults", {"kind": "cpu-ramp", "rate": "100"})
        assert status in (200, 201)
        hot = Ratio(demo)
        wait_for(lambda: (hot() or 0) > THRESHOLD, timeout=180, interval=0.5,
                 what=f"the service's CPU ratio above {THRESHOLD} with the fault on a busy machine")
        demo.admin("POST", "/admin/heal", {})
        cool = Ratio(demo)
        wait_for(lambda: (v := cool()) is not None and v < THRESHOLD, timeout=180, interval=0.5,
                 what="the ratio back below the threshold after heal")
    finally:
        demo.stop()
