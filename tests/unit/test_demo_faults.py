"""Fault kinds, parameters and bounds (pure logic)."""
from __future__ import annotations

import pytest

from demo import faults as F
from core.config import load_data, view

REGIONS = ["seoul", "singapore", "tokyo"]
LIM = F.Limits(max_duration=600, memory_leak_max_bytes=100 * 1024 ** 2, cpu_ramp_max_cores=0.9,
               cpu_ramp_seconds=60, max_latency=2.0, disk_fill_max_bytes=50 * 1024 ** 2)


def make(kind, **kw):
    kw.setdefault("region", None)
    return F.make_fault(kind, limits=LIM, regions=REGIONS, home_region="seoul", now=1000.0, **kw)


@pytest.mark.parametrize("text,value", [("4MiB", 4 * 1024 ** 2), ("500ms", 0.5), ("50%", 0.5), ("0.3", 0.3),
                                        (2, 2.0), ("1.5s", 1.5), ("2k", 2000)])
def test_parse_quantity(text, value):
    assert F.parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["fast", "-1", "3 parsecs", True, -2])
def test_parse_quantity_rejects(bad):
    with pytest.raises(ValueError):
        F.parse_quantity(bad)


def test_every_kind_has_a_description_and_a_scope():
    assert set(F.KINDS) == F.REGION_KINDS | F.PROCESS_KINDS
    assert {"service-down", "error-burst", "latency-spike", "region-outage", "cpu-ramp", "memory-leak",
            "disk-fill"} <= set(F.KINDS)


def test_defaults_and_clamps():
    assert make("error-burst").rate == 0.5
    assert make("latency-spike", rate="10s").rate == 2.0  # capped by max_latency
    assert make("region-outage").region == "seoul"  # defaults to the home region
    assert make("region-outage", region="tokyo").region == "tokyo"
    assert make("memory-leak").rate == pytest.approx(LIM.memory_leak_max_bytes / 120)
    f = make("error-burst", duration="1d")
    assert f.expires - f.started == 600  # capped by max_duration
    f = make("error-burst", duration=5)
    assert f.expires == 1005.0


@pytest.mark.parametrize("kind,kw,msg", [
    ("nope", {}, "unknown fault kind"),
    ("error-burst", {"rate": 1.5}, "between 0 and 1"),
    ("error-burst", {"region": "mars"}, "unknown region"),
    ("memory-leak", {"region": "seoul"}, "whole process"),
    ("cache-miss-storm", {"rate": 2}, "between 0 and 1"),
    ("error-burst", {"duration": 0}, "duration must be > 0"),
])
def test_bad_faults_are_refused_with_a_clear_message(kind, kw, msg):
    with pytest.raises(ValueError, match=msg):
        make(kind, **kw)


def test_cpu_duty_rises_from_ten_percent_and_stops_at_the_cap():
    f = make("cpu-ramp", rate=0.1)
    assert F.cpu_duty(f, LIM, 1000.0) == pytest.approx(0.1)
    assert F.cpu_duty(f, LIM, 1002.0) == pytest.approx(0.3)
    assert F.cpu_duty(f, LIM, 1100.0) == pytest.approx(0.9)
    default = make("cpu-ramp")
    assert F.cpu_duty(default, LIM, 1000.0 + LIM.cpu_ramp_seconds) == pytest.approx(0.9)


def test_memory_leak_target_grows_at_rate_and_is_capped():
    f = make("memory-leak", rate="1MiB")
    assert F.leak_target(f, LIM, 1010.0) == 10 * 1024 ** 2
    assert F.leak_target(f, LIM, 1e9) == LIM.memory_leak_max_bytes


def test_disk_fill_step_respects_rate_capacity_and_real_free_space():
    f = make("disk-fill", rate="1MiB")
    mib = 1024 ** 2
    assert F.fill_step(f, LIM, 0.5, used=0, fs_free=10 ** 12, min_free=0) == mib // 2
    # capacity counts every file on the volume
    assert F.fill_step(f, LIM, 100.0, used=45 * mib, fs_free=10 ** 12, min_free=0) == 5 * mib
    assert F.fill_step(f, LIM, 100.0, used=60 * mib, fs_free=10 ** 12, min_free=0) == 0
    # the real filesystem keeps min_free
    assert F.fill_step(f, LIM, 100.0, used=0, fs_free=5 * mib, min_free=4 * mib) == mib


def test_limits_from_config_take_the_service_limits():
    cfg = load_data({"platform": {"services": [{"name": "a", "memory_limit_bytes": 64 * 1024 ** 2,
                                                "cpu_limit_cores": 0.5}]},
                     "demo": {"volume_capacity_bytes": 100 * 1024 ** 2}})
    lim = F.Limits.from_config(view(cfg, "demo"), view(cfg, "platform").services[0])
    assert lim.memory_leak_max_bytes == 64 * 1024 ** 2
    assert lim.cpu_ramp_max_cores == 0.5
    assert lim.disk_fill_max_bytes == int(100 * 1024 ** 2 * 0.97)
