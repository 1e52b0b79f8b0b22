"""The /metrics collector, targets from config, sharding, storage-free pieces (no servers)."""
from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.exporter import registry_for
from forecasters.engine import forecast_series
from forecasters.service import ForecastCollector, State, TargetState, shard
from forecasters.targets import build, threshold_label
from core.config import ConfigError, defaults, load_data

DAY = 86400.0


def _state(now):
    cfg = load_data({"forecast": {"targets": [{
        "name": "memory-user-app", "kind": "memory", "service": "user-app",
        "query": "x", "thresholds": [1.0], "min": 0, "horizons": ["48h", "14d"]}],
        "models": ["naive", "linear_trend"], "backtest": {"folds": 2}}})
    (target,) = build(cfg)
    t = now - 2 * DAY + np.arange(0, 2 * DAY, 300.0)
    y = 0.3 + 0.2 * (t - t[0]) / DAY
    fc = forecast_series(t, y, target.spec)
    st = State(targets={target.name: TargetState(target, forecast=fc, last_success=now, duration=0.5, fits=fc.fits)})
    return st, fc


def _scrape(state, clock):
    text = generate_latest(registry_for(ForecastCollector(state, clock=clock))).decode()
    return text, [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_collector_publishes_current_time_gauges_only():
    now = 1.8e9
    state, fc = _state(now)
    text, samples = _scrape(state, lambda: now)
    # NEVER a timestamp: Prometheus stamps every sample with the scrape time
    assert all(s.timestamp is None for s in samples)
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert len(line.rsplit("}", 1)[-1].split()) == 1, f"sample with a timestamp: {line}"
    names = {s.name for s in samples}
    for n in ("opsstack_forecast_value", "opsstack_forecast_seconds_to_threshold",
              "opsstack_forecast_exceedance_probability", "opsstack_forecast_anomaly",
              "opsstack_forecast_last_success_timestamp_seconds", "opsstack_forecast_run_duration_seconds",
              "opsstack_forecast_errors_total", "opsstack_forecast_model_info", "opsstack_forecast_backtest_mase",
              "opsstack_exporter_up"):
        assert n in names, n
    vals = {(s.labels.get("horizon"), s.labels.get("stat")): s.value for s in samples
            if s.name == "opsstack_forecast_value"}
    assert set(vals) == {(h, st) for h in ("now", "2d", "14d") for st in ("yhat", "lower", "upper")}
    assert vals[("now", "lower")] <= vals[("now", "yhat")] <= vals[("now", "upper")]
    stt = [s for s in samples if s.name == "opsstack_forecast_seconds_to_threshold"][0]
    assert stt.labels == {"target": "memory-user-app", "kind": "memory", "service": "user-app", "team": "ops",
                          "threshold": "1"}
    assert stt.value == pytest.approx(fc.crossings[1.0].at - now)
    probs = {s.labels["horizon"]: s.value for s in samples if s.name == "opsstack_forecast_exceedance_probability"}
    assert set(probs) == {"2d", "14d"} and probs["2d"] <= probs["14d"]


def test_gauges_move_with_the_clock_between_runs():
    now = 1.8e9
    state, fc = _state(now)

    def stt(clock):
        _, samples = _scrape(state, lambda: clock)
        return [s.value for s in samples if s.name == "opsstack_forecast_seconds_to_threshold"][0]

    assert stt(now + 600) == pytest.approx(stt(now) - 600)
    # past the crossing: 0, never negative
    assert stt(fc.crossings[1.0].at + 3600) == 0.0


def test_failed_target_exports_errors_not_values():
    now = 1.8e9
    state, _ = _state(now)
    ts = next(iter(state.targets.values()))
    ts.forecast, ts.errors, ts.last_success = None, 3, None
    _, samples = _scrape(state, lambda: now)
    assert [s.value for s in samples if s.name == "opsstack_forecast_errors_total"] == [3]
    assert not [s for s in samples if s.name == "opsstack_forecast_value"]


def test_default_targets_cover_demo_services_and_host():
    cfg = defaults()
    names = [t.name for t in build(cfg)]
    for s in cfg["platform"]["services"]:
        assert f"memory-{s['name']}" in names and f"cpu-{s['name']}" in names
    assert {"disk-root", "db-storage", "bandwidth", "latency-p95"} <= set(names)
    kinds = {t.kind for t in build(cfg)}
    assert kinds == {"memory", "cpu", "disk", "db_storage", "bandwidth", "latency", "requests", "sessions"}
    # request-rate and concurrent-users targets publish their daily peak, the others do not
    assert {t.name for t in build(cfg) if t.peak} == {"requests", "sessions"}
    assert all(t.timezone == cfg["demo"]["timezone"] for t in build(cfg))
    # the alert thresholds are among each target's thresholds (labels must match the rules)
    a = cfg["forecast"]["alerts"]
    disk = next(t for t in build(cfg) if t.name == "disk-root")
    assert disk.spec.thresholds == (a["disk_threshold"],) and disk.spec.upper == 1.0
    assert threshold_label(1.0) == "1" and threshold_label(0.9) == "0.9"


def test_shard_partitions_targets():
    targets = build(defaults())
    parts = [shard(targets, f"{k}/3") for k in range(3)]
    assert sorted(t.name for p in parts for t in p) == sorted(t.name for t in targets)
    with pytest.raises(ValueError):
        shard(targets, "3/3")


@pytest.mark.parametrize("bad, key", [
    ({"targets": [{"name": "x", "query": "q", "min": 1, "max": 0}]}, "forecast.targets[0].max"),
    ({"targets": [{"name": "Bad Name", "query": "q"}]}, "forecast.targets[0].name"),
    ({"targets": [{"name": "x"}]}, "forecast.targets[0].query"),
    ({"models": ["magic"]}, "forecast.models"),
    ({"horizons": ["soon"]}, "forecast.horizons"),
    ({"targets": [{"name": "x", "query": "q", "thresholds": ["high"]}]}, "forecast.targets[0].thresholds"),
    ({"history": "30d", "step": "15s"}, "forecast.targets"),
])
def test_bad_forecast_config_is_one_clear_line(bad, key):
    if key == "forecast.targets":
        bad = dict(bad, targets=[{"name": "x", "query": "q"}])
        key = "forecast.targets[0].step"
    with pytest.raises(ConfigError) as e:
        load_data({"forecast": bad})
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_each_kind_is_forecast_to_its_own_horizon():
    """memory 48 h, CPU 14 d, disk and DB storage 90 d, bandwidth a quarter: the forecast reaches the
    horizon the kind's alert looks at (forecast.kind_horizons), and no further by default."""
    targets = {t.kind: t for t in build(defaults())}
    longest = {k: max(t.spec.horizons) / DAY for k, t in targets.items()}
    assert longest == {"memory": 2, "cpu": 14, "disk": 90, "db_storage": 90, "bandwidth": 91, "latency": 14,
                       "requests": 2, "sessions": 2}
    # the horizon labels the alert expressions select exist on the targets' gauges
    assert "14d" in targets["cpu"].horizon_labels.values() and "14d" in targets["latency"].horizon_labels.values()
    # configurable per kind; a target's own horizons keep its kind's horizon too
    cfg = load_data({"forecast": {"kind_horizons": {"disk": "30d"}, "targets": [
        {"name": "d", "query": "q", "kind": "disk"},
        {"name": "m", "query": "q", "kind": "memory", "horizons": ["6h"]},
        {"name": "o", "query": "q"}]}})
    hs = {t.name: tuple(h / 3600 for h in t.spec.horizons) for t in build(cfg)}
    assert hs == {"d": (48, 336, 720), "m": (6, 48), "o": (48, 336, 2160)}


def test_predictive_rules_look_as_far_as_the_kind_horizons():
    from alert_rules.forecast import groups

    def exprs(cfg):
        return {r["alert"]: r["expr"] for g in groups(cfg) for r in g["rules"]}

    e = exprs(defaults())
    assert e["DiskWillFillSoon"].endswith(f"< {90 * 86400}")
    assert e["DbStorageCapacity"].endswith(f"< {90 * 86400}")
    assert e["BandwidthCapacity"].endswith(f"< {91 * 86400}")
    assert e["MemoryLeakOomPredicted"].endswith(f"< {48 * 3600}")
    assert 'horizon="14d"' in e["CpuLimitLikely"] and e["CpuLimitLikely"].endswith(">= 0.75")
    e = exprs(load_data({"forecast": {"kind_horizons": {"disk": "30d", "cpu": "7d"}}}))
    assert e["DiskWillFillSoon"].endswith(f"< {30 * 86400}") and 'horizon="7d"' in e["CpuLimitLikely"]


def test_waiting_target_exports_state_waiting_and_no_error():
    now = 1.8e9
    state, _ = _state(now)
    ts = next(iter(state.targets.values()))
    ts.forecast, ts.last_success, ts.waiting, ts.history, ts.needed = None, None, True, 600.0, 3600.0
    _, samples = _scrape(state, lambda: now)
    st = {s.labels["state"]: s.value for s in samples if s.name == "opsstack_forecast_target_state"}
    assert st == {"waiting": 1.0, "ok": 0.0, "error": 0.0}
    assert [s.value for s in samples if s.name == "opsstack_forecast_errors_total"] == [0]
    assert [s.value for s in samples if s.name == "opsstack_forecast_history_seconds"] == [600.0]
    assert [s.value for s in samples if s.name == "opsstack_forecast_history_needed_seconds"] == [3600.0]
    assert not [s for s in samples if s.name == "opsstack_forecast_last_success_timestamp_seconds"]
    # ... then a forecast: ok; then a failed pass: error (the old forecast still publishes)
    ts.waiting, ts.forecast, ts.last_success = False, _state(now)[1], now   # a pass forecast it
    _, samples = _scrape(state, lambda: now)
    assert {s.labels["state"] for s in samples if s.name == "opsstack_forecast_target_state" and s.value} == {"ok"}
    ts.last_error, ts.errors = "QueryError: boom", 1
    _, samples = _scrape(state, lambda: now)
    assert {s.labels["state"] for s in samples if s.name == "opsstack_forecast_target_state" and s.value} == {"error"}


def test_peak_gauges_of_a_sessions_target():
    from forecasters.peak import daily_peak

    now = 1.8e9
    cfg = load_data({"forecast": {"timezone": "UTC", "targets": [
        {"name": "sessions", "kind": "sessions", "query": "x"}]}})
    (target,) = build(cfg)
    assert target.peak and target.timezone == "UTC"
    t = np.arange(now - 3 * DAY, now, 300.0)
    y = 100 + 50 * np.cos(2 * np.pi * ((t % DAY) - 15 * 3600) / DAY)   # peak at 15:00 UTC
    st = State(targets={"sessions": TargetState(target, peak=daily_peak(t, y, "UTC"))})
    _, samples = _scrape(st, lambda: now)
    at = {s.labels["edge"]: s.value for s in samples if s.name == "opsstack_forecast_next_peak_timestamp_seconds"}
    assert at["start"] < at["peak"] < at["end"] and now < at["peak"] <= now + DAY
    assert abs((at["peak"] % DAY) / 3600 - 15) <= 0.25
    hours = {s.labels["edge"]: s.value for s in samples if s.name == "opsstack_forecast_peak_hour"}
    assert abs(hours["peak"] - 15) <= 0.25
    (v,) = [s.value for s in samples if s.name == "opsstack_forecast_next_peak_value"]
    assert v == pytest.approx(150, abs=3)
