"""The demo's generated past (demo/history.py) and the rule selection of stack/backfill.py."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from alert_rules.build import committed_files
from core.config import ConfigError, defaults, load_data, view
from demo import history as H
from demo import model
from stack import backfill

DAY = 86400.0


def _views(**demo):
    cfg = load_data({"demo": demo}) if demo else defaults()
    return cfg, view(cfg, "demo"), view(cfg, "platform")


def _instances(platform):
    return {s.name: {"job": "platform", "instance": f"127.0.0.1:{9100 + i}", "service": s.name, "team": s.team}
            for i, s in enumerate(platform.services)}


def _collect(demo, platform, start, end, services=None, probe=None):
    inst = _instances(platform)
    if services:
        inst = {k: v for k, v in inst.items() if k in services}
    merged: dict[tuple, list] = {}
    windows = []
    for win, series in H.history(demo, platform, start, end, inst, probe):
        windows.append(win)
        for s in series:
            key = (s.name, tuple(sorted(s.labels.items())))
            merged.setdefault(key, []).append((s.t, s.y))
    out = {k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in merged.items()}
    return out, windows


def _one(series, name, **labels):
    got = [(t, y) for (n, lab), (t, y) in series.items()
           if n == name and all(dict(lab).get(k) == v for k, v in labels.items())]
    assert got, (name, labels)
    return got


@pytest.fixture(scope="module")
def two_days():
    cfg, demo, platform = _views()
    end = time.time() - 60
    series, windows = _collect(demo, platform, end - 2 * DAY, end, services=["user-app"],
                               probe={"job": "opsstack_app", "instance": "127.0.0.1:9200"})
    return {"cfg": cfg, "demo": demo, "platform": platform, "end": end, "series": series, "windows": windows}


def test_timestamps_are_past_only_and_windows_tile_the_span(two_days):
    end = two_days["end"]
    assert end < time.time()
    for (_n, _l), (t, _y) in two_days["series"].items():
        assert t.max() < end and t.min() >= end - 2 * DAY
        assert np.all(np.diff(t) > 0)
    wins = two_days["windows"]
    assert wins[0][0] == pytest.approx(end - 2 * DAY) and wins[-1][1] == pytest.approx(end)
    for (a, b), (c, _d) in zip(wins, wins[1:]):
        assert b == c and b % H.WINDOW == 0  # one block per aligned window


def test_the_trimmed_histogram_ends_before_any_rate_window_reaches_live_data(two_days):
    end = two_days["end"]
    for (name, _l), (t, _y) in two_days["series"].items():
        if name.startswith("opsstack_http_request_duration_seconds"):
            assert t.max() < end - 300  # the 5m windows at the first live samples hold none of it
        elif name.endswith("_total"):
            assert t.max() > end - H.COUNTER_STEP


def test_every_metric_with_the_labels_prometheus_attaches(two_days):
    series = two_days["series"]
    assert {n for n, _ in series} == set(H.METRICS)
    for (name, labels), _ in series.items():
        lab = dict(labels)
        if name == "opsstack_probe_up":
            assert lab["job"] == "opsstack_app" and lab["instance"] == "127.0.0.1:9200"
            assert {lab["service"], lab["region"]} <= {"user-app", "seoul", "singapore", "tokyo"}
        else:
            assert lab["job"] == "platform" and lab["service"] == "user-app" and lab["team"] == "ops"
            assert lab["instance"].startswith("127.0.0.1:")


def test_counters_never_go_down_across_windows(two_days):
    for (name, _l), (_t, y) in two_days["series"].items():
        if name.endswith(("_total", "_bucket", "_count", "_sum")):
            assert np.all(np.diff(y) >= 0), name


def test_request_rate_follows_the_diurnal_model(two_days):
    demo, series = two_days["demo"], two_days["series"]
    t = None
    total = 0.0
    for tt, y in _one(series, "opsstack_http_requests_total"):
        t = tt
        total = total + np.diff(y)
    rate = total / np.diff(t)
    expected = np.array([demo.requests_per_second * model.diurnal_factor(model.local_hour(x, demo.timezone),
                                                                           demo.peak_factor) for x in t[1:]])
    # Poisson counts per 150 s step around the model's rate
    assert np.corrcoef(rate, expected)[0, 1] > 0.95
    assert rate.mean() == pytest.approx(expected.mean(), rel=0.05)
    hours = np.array([model.local_hour(x, demo.timezone) for x in t[1:]])
    peak, night = rate[(hours >= 14) & (hours < 16)].mean(), rate[(hours >= 2) & (hours < 4)].mean()
    assert peak / night > 5  # the 14:00-16:00 plateau against the quiet night


def test_sessions_are_the_models_own(two_days):
    demo, platform = two_days["demo"], two_days["platform"]
    (t, y), = _one(two_days["series"], "opsstack_active_sessions", region="seoul", client="mobile")
    shares = model.region_shares(list(platform.regions), demo.home_region, demo.geo_mix)
    for i in (0, len(t) // 3, len(t) - 1):
        want = model.sessions(peak_sessions=demo.peak_sessions, peak_factor=demo.peak_factor,
                              hour=model.local_hour(t[i], demo.timezone),
                              svc_share=model.service_share(platform.services, "user-app"), shares=shares,
                              client_mix=demo.client_mix, seed=demo.seed, key="user-app", t=t[i])
        assert y[i] == want[("seoul", "mobile")]


def test_latency_quantiles_match_the_regions_latency(two_days):
    demo, series = two_days["demo"], two_days["series"]
    for region, latency in (("seoul", demo.home_latency), ("tokyo", demo.overseas_latency)):
        buckets = {}
        for (name, labels), (_t, y) in series.items():
            lab = dict(labels)
            if name == "opsstack_http_request_duration_seconds_bucket" and lab["region"] == region:
                le = float(lab["le"])
                buckets[le] = buckets.get(le, 0.0) + y[-1]
        les = sorted(buckets)
        total = buckets[float("inf")]
        # median: the first bucket holding half of the requests is the one around the latency
        med = next(le for le in les if buckets[le] >= total / 2)
        assert latency < med <= latency * 1.15


def test_trends_grow_but_stay_clear_of_the_thresholds_at_the_horizons():
    cfg, demo, platform = _views()
    end = time.time() - 60
    span = cfg["demo"]["backfill"]
    series, _ = _collect(demo, platform, end - span, end, services=["gate-management"])
    f = cfg["forecast"]
    thr_mem, thr_disk = f["alerts"]["memory_threshold"], f["alerts"]["disk_threshold"]
    h_mem, h_disk = f["kind_horizons"]["memory"], f["kind_horizons"]["disk"]
    limit = next(s.memory_limit_bytes for s in platform.services if s.name == "gate-management")
    (tm, mem), = _one(series, "process_resident_memory_bytes")
    (td, used), = _one(series, "opsstack_volume_used_bytes")
    for t, y, horizon, thr in ((tm, mem / limit, h_mem, thr_mem),
                               (td, used / demo.volume_capacity_bytes, h_disk, thr_disk)):
        slope, icept = np.polyfit(t - end, y, 1)
        assert slope > 0                                   # a visible growth ...
        assert icept + slope * horizon < thr / 2           # ... far from the threshold at the horizon
        # even the steepest day of the history, extrapolated, does not get there
        day = t > end - DAY
        s_day = np.polyfit(t[day] - end, y[day], 1)[0]
        assert y[-1] + max(s_day, 0) * horizon < thr


def test_backfill_setting_is_checked_against_retention():
    assert load_data({"demo": {"backfill": 0}})["demo"]["backfill"] == 0
    assert load_data({})["demo"]["backfill"] == 14 * DAY
    with pytest.raises(ConfigError, match="demo.backfill"):
        load_data({"demo": {"backfill": "30d"}, "stack": {"retention": "15d"}})


def test_rules_to_backfill_are_the_inputs_of_the_long_windows():
    rules = backfill.recording_rules(committed_files())
    chosen = backfill.rules_to_backfill(rules, set(H.METRICS))
    assert set(chosen) == {"service:opsstack_http_requests:rate5m", "service:opsstack_http_errors:rate5m",
                           "service_region:opsstack_http_requests:rate5m",
                           "service_region:opsstack_http_errors:rate5m"}
    for expr in chosen.values():  # inlined: raw metrics only
        assert not set(backfill._references(expr, rules)), expr
    # a rule over data the history does not hold is not chosen
    assert backfill.rules_to_backfill(rules, {"opsstack_probe_up"}) == {}


def test_inline_refuses_references_with_matchers_or_ranges():
    rules = {"a:b": "sum(x)", "c:d": "a:b * 2"}
    assert backfill.inline("c:d + 1", rules) == "((sum(x)) * 2) + 1"
    assert backfill.inline('a:b{job="x"}', rules) is None
    assert backfill.inline("sum_over_time(a:b[1d])", rules) is None


def test_second_start_does_not_backfill(tmp_path: Path):
    cfg = load_data({"stack": {"run_dir": str(tmp_path)}})
    assert backfill.wanted(cfg)
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "wal").mkdir()     # Prometheus ran here before
    assert not backfill.wanted(cfg)
    (tmp_path / "prometheus" / "wal").rmdir()
    (tmp_path / backfill.MARKER).write_text("{}")  # or the marker says it was done
    assert not backfill.wanted(cfg)
    assert not backfill.wanted(load_data({"stack": {"run_dir": str(tmp_path / "x")}, "demo": {"backfill": 0}}))
