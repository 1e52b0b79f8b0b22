"""bench/scaling_demo_day.py's core on real demo processes: a whole model day in 40 s, three
`opsstack demo serve` processes at once (one per policy) under the same real requests. Checks
the mechanics, never timings: each policy moved its service's real knob (POST /admin/replicas)
as the policy says, and the requests were sent and answered."""
from __future__ import annotations

import pytest

from bench import scaling_bench as sb
from bench import scaling_demo_day as day
from demo import model

pytestmark = pytest.mark.integration

PEAK = model.PEAK_START_HOUR * 3600


def test_three_policies_drive_the_real_knob_over_a_day(tmp_path):
    # 0.2 s a request on 2 workers a replica: the history's peak needs 4 replicas at 80% with
    # ~28 requests/s per service at the peak (light enough for a loaded 2-core machine)
    settings = day.Settings(day_seconds=40.0, service_time=0.2, workers=2, request_timeout=120.0)
    s, workers = settings.service_time, settings.workers
    lim = settings.limits(workers)
    mean = 3.5 * workers * lim.high / (3.0 * s)
    history = [sb.day_curve(mean, level, 42, d) for d, level in enumerate((0.98, 1.0, 1.02, 0.99, 1.01))]
    profile = sb.history_profile(history)
    today = sb.day_curve(mean, 1.0, 42, 7)
    res = day.run_day(tmp_path, settings, today, profile, s, workers, seed=3)

    rows = {r["policy"]: r for r in res["rows"]}
    assert set(rows) == set(day.POLICIES)
    fixed_n = res["fixed_replicas"]
    assert fixed_n == sb.fixed_replicas(profile, s, lim) and fixed_n > res["start_replicas"]

    # every arrival went to every service, and was answered (200, or 503 when no worker came free)
    for r in rows.values():
        assert r["requests"] == res["conditions"]["arrivals"] > 0, r["policy"]
        assert r["failed"] == 0, r["policy"]
        assert r["ok"] > 0 and r["ok"] + r["http_503"] == r["requests"], r["policy"]
        assert r["peak_requests"] > 0 and r["peak_p95_seconds"] is not None
        assert len(r["minutes"]["replicas"]) == len(r["minutes"]["util5"]) == 1440
        # what the service says at the end is what the policy last set
        last_knob = [e["knob"]["after"] for e in r["events"] if "knob" in e]
        assert r["knob_at_end"] == (last_knob[-1] if last_knob else r["start_replicas"]), r["policy"]
        for e in r["events"]:
            if e["kind"] == "ready":
                assert e["knob"]["after"] == e["ready"], e

    # fixed: the history peak's replicas, never moved
    fx = rows["fixed"]
    assert fx["events"] == [] and fx["changes"] == 0
    assert fx["knob_at_end"] == fixed_n and set(fx["minutes"]["replicas"]) == {fixed_n}

    # predictive: scaled out before the 14:00 peak because the forecast asked for more replicas
    pr = rows["predictive"]
    ahead = [e for e in pr["events"] if e["kind"] == "out" and e["t"] < PEAK
             and e["forecast_wants"] is not None and e["forecast_wants"] > e["before"]]
    assert ahead, pr["events"]
    assert any(e["kind"] == "ready" and e["t"] < PEAK for e in pr["events"]), pr["events"]
    assert max(pr["minutes"]["replicas"]) > pr["start_replicas"]

    # reactive: its first change is a scale-out, and every scale-out came after the 5-minute
    # utilisation had been over 80% for alert_for (ScalingCpuHigh)
    re_ = rows["reactive"]
    changes = [e for e in re_["events"] if e["kind"] in ("out", "in")]
    assert changes and changes[0]["kind"] == "out", re_["events"]
    for e in changes:
        if e["kind"] == "out":
            assert e["util5"] > lim.high and e["over_since"] is not None, e
            assert e["t"] - e["over_since"] >= settings.alert_for, e
        else:
            assert e["util5"] < lim.scale_in_below, e
    assert max(re_["minutes"]["replicas"]) > re_["start_replicas"]
