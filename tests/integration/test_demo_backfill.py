"""A fresh stack's demo history (stack/backfill.py) in a real Prometheus.

The first-start backfill writes 14 days of demo history as blocks into an empty Prometheus
data folder; a real Prometheus opens on it with the stack's rendered rule files, then the
recording rules get their history (`promtool tsdb create-blocks-from rules` against that
Prometheus, blocks dropped into its data folder and picked up at its next block reload).
Checked: 14-day range queries on a demo metric and on the recorded 5m rates under the 30-day
SLO/availability windows, the 30-day ratios answer, a second start backfills nothing, and a
forecast pass over the demo targets forecasts them (not waiting) with no threshold crossing
within the alert horizons (a fresh stack raises nothing but Watchdog).
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from alert_rules import build as rules_build
from core.config import load_data
from core.procs import free_port
from forecasters.service import Forecaster, Waiting
from stack import backfill
from tests.support.servers import Prometheus
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

DAYS = 14
SERVICE = "user-app"


def _query(url: str, q: str, **params) -> list:
    path = "query_range" if "start" in params else "query"
    r = requests.get(f"{url}/api/v1/{path}", params={"query": q, **params}, timeout=60)
    r.raise_for_status()
    return r.json()["data"]["result"]


def _span_days(url: str, q: str, now: float) -> float:
    """Days between the first and the last point of a 15-day range query of ``q``."""
    res = _query(url, q, start=now - 15 * 86400, end=now, step="30m")
    if not res:
        return 0.0
    ts = [float(v[0]) for s in res for v in s["values"]]
    return (max(ts) - min(ts)) / 86400


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backfill")
    run = tmp / "run"
    admin = free_port()
    cfg = load_data({
        "stack": {"run_dir": str(run), "evaluation_interval": "5s"},
        "platform": {"services": [{"name": SERVICE, "team": "mobile"}]},
        "demo": {"backfill": f"{DAYS}d",
                 "ports": {SERVICE: {"admin": admin, "seoul": free_port(), "singapore": free_port(),
                                     "tokyo": free_port()}}},
        "forecast": {"workers": 1, "store": False,
                     # the cheap models: this test is about the data, Prophet has its own tests
                     "models": ["naive", "seasonal_naive", "linear_trend", "long_trend"]},
    })
    prom = Prometheus({}, workdir=tmp / "prom")
    resolved = dict(cfg, stack=dict(cfg["stack"], ports=dict(cfg["stack"]["ports"], prometheus=prom.port,
                                                                   exporter_app=free_port(), receiver=free_port())))
    rules_build.write(resolved, run / "rules")
    (run / "prometheus").mkdir(parents=True)
    (tmp / "prom" / "data").symlink_to(run / "prometheus")  # the stack's data folder
    assert backfill.wanted(resolved)
    info = backfill.raw_history(resolved, progress=lambda _m: None)
    assert info and info["blocks"] and info["samples"] > 0
    assert info["end"] < time.time()
    prom.write_config({
        "global": {"scrape_interval": "15s", "evaluation_interval": "5s"},
        "rule_files": [str(run / "rules" / "*.yml")],
        "scrape_configs": [],
    })
    prom.start(timeout=300)  # opening two weeks of blocks on a busy box
    try:
        yield {"cfg": resolved, "prom": prom, "info": info, "run": run}
    finally:
        prom.stop()


def test_raw_history_answers_a_14_day_range_query(stack):
    url, now = stack["prom"].url, time.time()
    sel = f'job="platform",service="{SERVICE}",team="mobile"'
    days = _span_days(url, f"sum(rate(opsstack_http_requests_total{{{sel}}}[5m]))", now)
    assert days > DAYS - 0.1
    # the labels Prometheus attaches to the demo's admin target are on the history
    inst = _query(url, f"count by (instance) (last_over_time(opsstack_active_sessions{{{sel}}}[1h]))")
    assert [r["metric"]["instance"] for r in inst] == \
        [f"127.0.0.1:{stack['cfg']['demo']['ports'][SERVICE]['admin']}"]
    assert _span_days(url, 'avg(opsstack_probe_up{job="opsstack_app"})', now) > DAYS - 0.1
    # the demo volume holds what the history ends at: the live series continues from there
    vol = stack["run"] / "demo-volumes" / SERVICE / backfill.HISTORY_FILE
    last = _query(url, f"max(last_over_time(opsstack_volume_used_bytes{{{sel}}}[1h]))")
    # (the file is sized at "now", the last gauge sample up to a few minutes earlier on a busy
    # machine: the slow growth of that gap, ~40 B/s, stays far under 64 KiB of a 32 MB volume)
    assert abs(vol.stat().st_size - float(last[0]["value"][1])) < 64 * 1024


def test_recording_rules_get_history_and_30_day_windows_answer(stack):
    url, now = stack["prom"].url, time.time()
    blocks = backfill.rule_history(stack["cfg"], progress=lambda _m: None)
    assert blocks
    marker = json.loads((stack["run"] / backfill.MARKER).read_text())
    assert marker["rules"] == "done"
    assert "service:opsstack_http_requests:rate5m" in marker["recorded"]
    assert "service_region:opsstack_http_errors:rate5m" in marker["recorded"]
    # Prometheus picks the new blocks up at its next block reload (every minute)
    for rec in ("service:opsstack_http_requests:rate5m", "service_region:opsstack_http_errors:rate5m"):
        wait_for(lambda: _span_days(url, rec, now) > DAYS - 0.1, timeout=300, interval=5,
                 what=f"14 days of {rec}")
    # the 30-day SLO and uptime ratios evaluate over the history (no errors in the past)
    ratio = wait_for(lambda: _query(url, f'service:opsstack_slo_error_ratio:rate30d{{service="{SERVICE}"}}'),
                     timeout=180, interval=2, what="rate30d")
    assert float(ratio[0]["value"][1]) == 0.0
    up = wait_for(lambda: _query(url, f'service:opsstack_probe_up:avg_over_time30d{{service="{SERVICE}"}}'),
                  timeout=180, interval=2, what="probe uptime 30d")
    assert float(up[0]["value"][1]) == 1.0
    # a second start does nothing
    assert not backfill.wanted(stack["cfg"])
    assert backfill.raw_history(stack["cfg"], progress=lambda _m: None) is None
    assert backfill.rule_history(stack["cfg"], progress=lambda _m: None) == []


def test_demo_targets_are_forecast_and_predict_no_crossing(stack):
    cfg = stack["cfg"]
    fc = Forecaster.from_config(cfg, prometheus=stack["prom"].url)
    try:
        results = fc.run_once()
    finally:
        fc.close()
    now = time.time()
    horizons = cfg["forecast"]["kind_horizons"]
    names = [f"memory-{SERVICE}", f"disk-{SERVICE}", f"cpu-{SERVICE}", "requests", "sessions", "latency-p95"]
    for name in names:
        res = results[name]
        assert not isinstance(res, (Waiting, Exception)), (name, res)
    for name, kind in ((f"memory-{SERVICE}", "memory"), (f"disk-{SERVICE}", "disk"), (f"cpu-{SERVICE}", "cpu")):
        res = results[name]
        for thr, c in res.crossings.items():
            assert c.at is None or c.at - now > horizons[kind], (name, thr, c.at - now)
    # the memory trend is there (it grows), just far from the limit
    assert results[f"memory-{SERVICE}"].growth_per_month > 0
    assert results[f"disk-{SERVICE}"].growth_per_month > 0
