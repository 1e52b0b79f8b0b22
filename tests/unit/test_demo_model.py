"""The demo platform's traffic model: diurnal curve, mixes, sessions, rerouting."""
from __future__ import annotations

import random
import statistics

import pytest

from demo import model
from core.config import ConfigError, load_data, view

REGIONS = ["seoul", "singapore", "tokyo"]
GEO = {"capital": 0.65, "provinces": 0.25, "overseas": 0.10}
CLIENT = {"mobile": 0.78, "web": 0.22}


def _day(f, n=24 * 60):
    return [f(24.0 * i / n) for i in range(n)]


def test_diurnal_mean_is_one_and_peak_is_3x_between_14_and_16():
    values = _day(model.diurnal_factor)
    assert statistics.mean(values) == pytest.approx(1.0, abs=1e-6)
    assert max(values) == pytest.approx(3.0)
    for h in (14.0, 14.5, 15.0, 15.99, 16.0):
        assert model.diurnal_factor(h) == pytest.approx(3.0)
    peak_hours = {round(24.0 * i / len(values), 2) for i, v in enumerate(values) if v >= 3.0 - 1e-9}
    assert min(peak_hours) == pytest.approx(14.0, abs=0.02) and max(peak_hours) == pytest.approx(16.0, abs=0.02)


def test_diurnal_night_is_quiet_and_positive_and_shape_follows_peak_factor():
    assert 0 < model.diurnal_factor(3.0) < 0.3
    assert model.diurnal_factor(9.0) < model.diurnal_factor(11.0) < model.diurnal_factor(13.0) < 3.0
    assert model.diurnal_factor(17.0) > model.diurnal_factor(20.0)
    values = _day(lambda h: model.diurnal_factor(h, 2.0))
    assert statistics.mean(values) == pytest.approx(1.0, abs=1e-6)
    assert max(values) == pytest.approx(2.0)


def test_local_hour_uses_the_platform_time_zone():
    # 2026-01-01 06:00 UTC is 15:00 in Seoul (UTC+9)
    assert model.local_hour(1767247200.0, "Asia/Seoul") == pytest.approx(15.0)
    assert model.local_hour(1767247200.0, "UTC") == pytest.approx(6.0)


def test_region_shares_home_serves_domestic_users_others_share_overseas():
    shares = model.region_shares(REGIONS, "seoul", GEO)
    assert shares == pytest.approx({"seoul": 0.90, "singapore": 0.05, "tokyo": 0.05})
    assert model.region_shares(["seoul"], "seoul", GEO) == {"seoul": 1.0}


def test_user_sampler_reproduces_the_mixes_and_is_deterministic():
    sampler = model.UserSampler(REGIONS, "seoul", GEO, CLIENT)
    draws = [sampler.draw(random.Random(7)) for _ in range(1)]
    assert draws == [sampler.draw(random.Random(7))]
    rng = random.Random(42)
    n = 20000
    sample = [sampler.draw(rng) for _ in range(n)]
    share = lambda pred: sum(1 for s in sample if pred(s)) / n  # noqa: E731
    assert share(lambda s: s[2] == "mobile") == pytest.approx(0.78, abs=0.015)
    assert share(lambda s: s[1] == "capital") == pytest.approx(0.65, abs=0.015)
    assert share(lambda s: s[1] == "provinces") == pytest.approx(0.25, abs=0.015)
    assert share(lambda s: s[1] == "overseas") == pytest.approx(0.10, abs=0.01)
    # overseas users are served by the overseas regions, domestic ones by Seoul
    assert all((s[0] == "seoul") == (s[1] != "overseas") for s in sample)
    rng2 = random.Random(42)
    assert [sampler.draw(rng2) for _ in range(n)] == sample


def test_sessions_add_up_to_about_2450_at_peak_across_the_platform():
    services = view(load_data({}), "platform").services
    shares = model.region_shares(REGIONS, "seoul", GEO)
    total = 0.0
    mobile = 0.0
    for s in services:
        sess = model.sessions(peak_sessions=2450, peak_factor=3.0, hour=15.0,
                              svc_share=model.service_share(services, s.name), shares=shares,
                              client_mix=CLIENT, seed=42, key=s.name, t=1000.0)
        total += sum(sess.values())
        mobile += sum(v for (r, c), v in sess.items() if c == "mobile")
    assert total == pytest.approx(2450, rel=0.04)
    assert mobile / total == pytest.approx(0.78, abs=0.01)
    night = model.sessions(peak_sessions=2450, peak_factor=3.0, hour=3.0, svc_share=1.0, shares=shares,
                           client_mix=CLIENT, seed=42, key="x", t=1000.0)
    assert sum(night.values()) < 0.1 * 2450


def test_service_share_follows_traffic_weight():
    services = view(load_data({"platform": {"services": [{"name": "a", "traffic_weight": 3.0},
                                                         {"name": "b", "traffic_weight": 1.0}]}}), "platform").services
    assert model.service_share(services, "a") == pytest.approx(0.75)


def test_reroute_moves_unhealthy_share_to_healthy_regions():
    shares = {"seoul": 0.9, "singapore": 0.05, "tokyo": 0.05}
    out = model.reroute(shares, {"singapore", "tokyo"})
    assert out["seoul"] == 0
    assert out["singapore"] == pytest.approx(0.5) and out["tokyo"] == pytest.approx(0.5)
    assert model.reroute(shares, set(shares)) == shares
    assert model.reroute(shares, set()) == shares  # nothing healthy: leave it alone


def test_sim_clock_runs_accelerated():
    c = model.SimClock(3600.0, start=0.0)
    assert c.now() >= 0.0
    assert c.acceleration == 3600.0


def test_demo_config_rejects_bad_mixes_and_unknown_home_region():
    with pytest.raises(ConfigError, match="demo.client_mix: shares must add up to 1"):
        load_data({"demo": {"client_mix": {"mobile": 0.5, "web": 0.3}}})
    with pytest.raises(ConfigError, match="demo.geo_mix: needs exactly the keys"):
        load_data({"demo": {"geo_mix": {"capital": 1.0}}})
    with pytest.raises(ConfigError, match="demo.home_region: unknown region"):
        load_data({"demo": {"home_region": "paris"}})
    with pytest.raises(ConfigError, match="demo.timezone"):
        load_data({"demo": {"timezone": "Mars/Olympus"}})
