"""Replica maths against the 70-80% band and the scaling policies' decisions (forecasters/scaling.py)."""
import math

import pytest

from forecasters import scaling as S


@pytest.mark.parametrize("load,cap,expect", [
    (0.0, 2, 1),        # no load: the minimum
    (1.6, 2, 1),        # exactly 80% of one replica
    (1.61, 2, 2),       # a hair over 80% -> two
    (15.0, 2, 10),      # 15 cores at <= 80% of 2 each: 9.375 -> 10
    (7.5, 1, 10),       # 75% in band with 10
])
def test_fewest_replicas_at_or_under_the_band_top(load, cap, expect):
    n = S.replicas_for(load, cap)
    assert n == expect
    assert S.utilisation(load, n, cap) <= S.BAND_HIGH + 1e-9
    if n > 1:  # one fewer would be over the band
        assert S.utilisation(load, n - 1, cap) > S.BAND_HIGH


def test_whole_replicas_may_leave_the_band_low_and_status_says_so():
    n = S.replicas_for(1.0, 1.0)           # 1 core of load on 1-core replicas: 2 replicas at 50%
    assert n == 2
    assert S.band_status(S.utilisation(1.0, n, 1.0)) == "under"
    assert S.band_status(0.75) == "in" and S.band_status(0.7) == "in" and S.band_status(0.8) == "in"
    assert S.band_status(0.81) == "over"


def test_bounds_and_bad_inputs():
    assert S.replicas_for(100.0, 1.0, max_replicas=5) == 5
    assert S.replicas_for(0.1, 1.0, min_replicas=3) == 3
    with pytest.raises(ValueError):
        S.replicas_for(1.0, 0.0)
    with pytest.raises(ValueError):
        S.replicas_for(1.0, 1.0, high=1.5)
    assert math.isinf(S.utilisation(1.0, 0, 1.0)) and S.utilisation(0.0, 0, 1.0) == 0.0


def test_recommend_from_peak_traffic_share_and_cost_per_request():
    # platform peak 300 req/s, this region serves 30% -> 90 req/s x 0.1 s of replica CPU = 9 cores
    r = S.recommend("user-app", "seoul", peak_requests=300.0, share=0.3, cpu_per_request=0.1,
                    capacity=2.0, current=4, peak_at=1000.0, utilisation_now=0.3)
    assert r.peak_load == pytest.approx(9.0)
    assert r.recommended == 6                       # 9 / (2 x 0.8) = 5.6 -> 6, at 75%
    assert S.band_status(r.peak_utilisation) == "in"
    assert r.change == 2
    d = r.as_dict()
    assert d["band"] == "in" and d["peak_utilisation_current"] == pytest.approx(9 / 8)
    # unknown current replicas: no change figure
    assert S.recommend("a", "b", peak_requests=1, share=1, cpu_per_request=0.1, capacity=1, current=None).change is None


LIM = S.Limits(capacity=2.0, min_replicas=2, max_replicas=10, cooldown=600.0)


def test_reactive_scales_out_over_80_to_the_band_middle():
    assert S.reactive(4, 0.95, False, 10_000, LIM) == 6       # ceil(4 x 0.95 / 0.75) = 6
    assert S.reactive(4, 0.81, False, 10_000, LIM) == 5       # at least one more
    assert S.reactive(9, 1.0, False, 10_000, LIM) == 10       # capped at max


def test_reactive_waits_for_the_cooldown_and_stays_inside_the_band():
    assert S.reactive(4, 0.95, False, 300, LIM) == 4          # changed 5 min ago
    assert S.reactive(4, 0.75, True, 10_000, LIM) == 4        # in band: nothing to do


def test_reactive_scales_in_by_one_only_when_traffic_falls():
    assert S.reactive(6, 0.3, True, 10_000, LIM) == 5
    assert S.reactive(6, 0.3, False, 10_000, LIM) == 6        # low but not falling (e.g. night plateau)
    assert S.reactive(2, 0.1, True, 10_000, LIM) == 2         # at the minimum
    lim = S.Limits(capacity=1.0, min_replicas=1, max_replicas=10, scale_in_below=0.5)
    assert S.reactive(2, 0.45, True, 10_000, lim) == 2        # 2 x 0.45 on one = 90%: would be over


def test_predictive_scales_out_ahead_without_cooldown_and_in_after_it():
    # the next half hour peaks at 12 cores: 12 / (2 x 0.8) = 7.5 -> 8, even right after a change
    assert S.predictive(4, [6.0, 9.0, 12.0], since_change=60, lim=LIM) == 8
    # quiet look-ahead: in, but only after the cooldown
    assert S.predictive(8, [2.0, 2.0], since_change=60, lim=LIM) == 8
    assert S.predictive(8, [2.0, 2.0], since_change=10_000, lim=LIM) == 2
    # the forecast is too low but the service is over 80% now: the reactive backstop adds
    assert S.predictive(4, [1.0], since_change=60, lim=LIM, util=0.95) == 6


def test_predictive_scales_in_with_hysteresis_not_to_just_under_the_top():
    # 11 cores ahead: 7 replicas would be 79% (under the top) but over the 75% target: keep 8
    assert S.predictive(8, [11.0], since_change=10_000, lim=LIM) == 8
    # ... and the load measured now must fit the fewer replicas at the target too
    assert S.predictive(8, [6.0], since_change=10_000, lim=LIM, util=0.7) == 8
    assert S.predictive(8, [6.0], since_change=10_000, lim=LIM, util=0.3) == 4
    # a quiet look-ahead and a quiet service: down to what fits at the target
    assert S.predictive(8, [6.0], since_change=10_000, lim=LIM) == 4


def test_demo_scaling_playbooks_render_the_replica_knob_call():
    from core.config import defaults
    from webhook_receiver.remediation import model
    from webhook_receiver.remediation.template import render

    cfg = defaults()
    cfg["demo"]["ports"] = {"user-app": {"admin": 4001, "seoul": 4002, "singapore": 4003, "tokyo": 4004}}
    pbs = {p.name: p for p in model.load_playbooks(cfg)}
    labels = {"alertname": "ScalingCpuHigh", "service": "user-app", "region": "seoul"}
    assert model.find(list(pbs.values()), labels).name == "scale-out"
    ctx = model.context(cfg, labels)
    assert render(pbs["scale-out"].actions[0].params, ctx) == {
        "url": "http://127.0.0.1:4001/admin/replicas", "json": {"change": 1, "region": "seoul"}}
    assert render(pbs["scale-in"].actions[0].params, ctx)["json"] == {"change": -1, "region": "seoul"}
    assert len(pbs["scale-ahead"].actions) == 3 and pbs["scale-ahead"].match == {"alertname": "ScalingBelowForecast"}
    assert render(pbs["scale-out"].target, ctx) == "scale-user-app-seoul"
    # a region label that is not the platform's never reaches the knob
    assert model.check_target(cfg, pbs["scale-out"], {**labels, "region": "../x"}) is not None


def test_scaling_config_is_checked_in_the_schema():
    from core.config import ConfigError, load_data

    with pytest.raises(ConfigError, match="forecast.scaling.band_low"):
        load_data({"forecast": {"scaling": {"band_low": 0.9, "band_high": 0.8}}})
    with pytest.raises(ConfigError, match="demo.replicas.initial"):
        load_data({"demo": {"replicas": {"initial": 1, "min": 2}}})
    with pytest.raises(ConfigError, match="demo.replicas.min"):
        load_data({"demo": {"replicas": {"min": 5, "max": 3, "initial": 4}}})
    assert load_data({})["forecast"]["scaling"]["band_high"] == 0.8
