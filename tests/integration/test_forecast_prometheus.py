"""The forecaster against a real Prometheus fed with backfilled history.

History of a leaking service (memory/limit ratio rising at a known slope) is backfilled with
`promtool tsdb create-blocks-from openmetrics` into the data folder of a real Prometheus, which
also scrapes the forecaster's /metrics and loads alert_rules/forecast.yml. The test runs one
forecast pass (range query -> fit -> gauges + PostgreSQL), then reads the gauges back from
Prometheus, checks the predicted OOM time against the truth, that the exposition carries no
timestamps, that Prometheus keeps ingesting current samples (no out-of-bounds rejections), and
that MemoryLeakOomPredicted goes pending on the gauges Prometheus scraped.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
import requests

from core.exporter import registry_for, start
from forecasters.backfill import create_blocks, openmetrics
from forecasters.service import ForecastCollector, Forecaster
from forecasters.storage import Store
from core.config import load_data
from core.procs import binary, free_port
from tests.support.servers import Prometheus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STEP = 300.0
SLOPE = 0.25 / 86400  # +25 percentage points of the limit per day
START_RATIO = 0.30
DAYS = 2.0


def _series(now: float):
    t = np.arange(now - DAYS * 86400, now - STEP / 2, STEP)
    rng = np.random.default_rng(3)
    y = START_RATIO + SLOPE * (t - t[0]) + rng.normal(0, 0.002, len(t))
    return t, y


def _query(url: str, q: str) -> list:
    r = requests.get(f"{url}/api/v1/query", params={"query": q}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


def _wait_for(fn, timeout=60.0, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(interval)
    raise AssertionError("condition not met before the timeout")


@pytest.fixture
def setup(tmp_path, pg_db):
    now = time.time()
    t, y = _series(now)
    work = tmp_path / "prom"
    (work / "data").mkdir(parents=True)
    blocks = create_blocks(
        openmetrics([("opsstack_test_memory_ratio", {"service": "user-app"}, t, y)]), work / "data", workdir=tmp_path)
    assert blocks, "promtool wrote no block"
    fport = free_port()
    cfg = load_data({
        "database": {"url": pg_db},
        "forecast": {
            "enabled": True, "workers": 1, "history": "2d", "step": "5m", "horizons": ["48h", "14d"],
            # keep the test fast: the cheap models only (Prophet is covered by unit tests)
            "models": ["naive", "linear_trend", "long_trend"],
            "backtest": {"folds": 3},
            "targets": [{
                "name": "memory-user-app", "kind": "memory", "service": "user-app",
                "query": 'max(opsstack_test_memory_ratio{service="user-app"})',
                "thresholds": [1.0], "min": 0.0,
            }, {
                # only as old as this test's scrapes: waits for history, is not an error
                "name": "fresh", "query": 'max(up{job="opsstack_forecaster"})',
            }],
        },
    })
    prom_cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "alert_rules" / "forecast.yml")],
        "scrape_configs": [{"job_name": "opsstack_forecaster",
                            "static_configs": [{"targets": [f"127.0.0.1:{fport}"]}]},
                           {"job_name": "prometheus", "static_configs": [{"targets": ["placeholder"]}]}],
    }
    prom = Prometheus(prom_cfg, workdir=work)
    prom_cfg["scrape_configs"][1]["static_configs"][0]["targets"] = [f"127.0.0.1:{prom.port}"]
    prom.write_config(prom_cfg)
    prom.start()
    cfg["forecast"]["prometheus_url"] = prom.url
    store = Store(pg_db)
    assert store.migrate() == store.migrate()   # idempotent: a restart re-applies nothing
    fc = Forecaster.from_config(cfg, store=store)
    server, _ = start(registry_for(ForecastCollector(fc.state)), "127.0.0.1", fport)
    try:
        yield {"prom": prom, "fc": fc, "fport": fport, "pg": pg_db, "t": t, "y": y}
    finally:
        server.shutdown()
        server.server_close()
        fc.close()
        prom.stop()


def test_forecast_round_trip_through_prometheus(setup):
    prom, fc = setup["prom"], setup["fc"]
    # the backfilled history is queryable
    hist = _wait_for(lambda: _query(prom.url, "count_over_time(opsstack_test_memory_ratio[3d])"))
    assert float(hist[0]["value"][1]) > 0.9 * len(setup["t"])

    _wait_for(lambda: _query(prom.url, 'up{job="opsstack_forecaster"}'))
    results = fc.run_once()
    from forecasters.service import Waiting

    assert isinstance(results["fresh"], Waiting)
    assert fc.state.targets["fresh"].errors == 0 and fc.state.targets["fresh"].waiting
    res = results["memory-user-app"]
    assert not isinstance(res, Exception), res
    # truth: the ratio reaches 1.0 at t0 + (1 - 0.30) / slope
    t0 = setup["t"][0]
    true_oom = t0 + (1.0 - START_RATIO) / SLOPE
    predicted = res.crossings[1.0].at
    assert predicted is not None
    assert abs(predicted - true_oom) <= 0.10 * (true_oom - res.t_last)

    # Prometheus scrapes the gauges back
    got = _wait_for(lambda: _query(prom.url, 'opsstack_forecast_seconds_to_threshold{target="memory-user-app"}'))
    secs = float(got[0]["value"][1])
    assert got[0]["metric"]["threshold"] == "1"
    assert got[0]["metric"]["service"] == "user-app"
    assert abs((time.time() + secs) - true_oom) <= 0.10 * (true_oom - res.t_last) + 120
    vals = _wait_for(lambda: _query(prom.url, 'opsstack_forecast_value{target="memory-user-app",horizon="now"}'))
    assert {v["metric"]["stat"] for v in vals} == {"yhat", "lower", "upper"}
    prob = _wait_for(lambda: _query(prom.url, 'opsstack_forecast_exceedance_probability{target="memory-user-app",horizon="2d"}'))
    assert float(prob[0]["value"][1]) >= 0.5  # the leak reaches the limit in ~19h

    # Prometheus stamps our samples with the scrape time (no future samples) and keeps ingesting
    ts = _wait_for(lambda: _query(prom.url, 'timestamp(opsstack_forecast_anomaly{target="memory-user-app"}) - time()'))
    assert abs(float(ts[0]["value"][1])) < 60
    oob = _wait_for(lambda: _query(prom.url, "sum(prometheus_target_scrapes_sample_out_of_bounds_total)"))
    assert float(oob[0]["value"][1]) == 0
    up = _query(prom.url, 'up{job="opsstack_forecaster"}')
    assert float(up[0]["value"][1]) == 1

    # the predictive alert evaluates on the scraped gauges (pending: `for: 15m`)
    def alert_state():
        r = requests.get(f"{prom.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in r if a["labels"]["alertname"] == "MemoryLeakOomPredicted"]
    alerts = _wait_for(alert_state, timeout=30)
    assert alerts[0]["state"] in ("pending", "firing")
    assert alerts[0]["labels"]["service"] == "user-app"

    # the future curve is in PostgreSQL, one row per point, all in the future of the data
    with psycopg.connect(setup["pg"]) as c:
        n, tmin = c.execute("select count(*), extract(epoch from min(ts)) from forecast_points "
                            "where target = 'memory-user-app'").fetchone()
        assert n == len(res.curve_t)
        assert float(tmin) > res.t_last
        cross = c.execute("select extract(epoch from crossing_at) from forecast_crossings "
                          "where target = 'memory-user-app'").fetchone()[0]
        assert abs(float(cross) - predicted) < 1
    # every SQL query of the Predictive Maintenance dashboard runs on these tables and returns rows
    from dashboards import predictive
    from dashboards.common import panels
    from core.config import defaults

    model = predictive.build(defaults())
    with psycopg.connect(setup["pg"]) as c:
        for p in panels(model):
            for tg in p.get("targets") or []:
                if "rawSql" not in tg:
                    continue
                q = (tg["rawSql"].replace("${target:regex}", "memory-user-app")
                     .replace("$__timeFilter(ts)", "ts > now() - interval '30 days'"))
                assert c.execute(q).fetchall(), p["title"]
    # a second run replaces the curve instead of appending
    fc.run_once()
    with psycopg.connect(setup["pg"]) as c:
        assert c.execute("select count(*) from forecast_points").fetchone()[0] == len(res.curve_t)
        assert c.execute("select count(*) from forecast_runs where ok").fetchone()[0] == 2
    # the capacity report reads the same tables
    from forecasters import capacity

    rows = [capacity.row_from_store(s) for s in Store(setup["pg"]).summaries()]
    waiting = [capacity.waiting_from_store(w) for w in Store(setup["pg"]).waiting()]
    assert [w["target"] for w in waiting] == ["fresh"] and waiting[0]["needed_seconds"] == 3600
    md = capacity.to_markdown(rows, time.time(), waiting)
    assert "| memory-user-app | user-app |" in md and "memory-leak playbook" in md
    assert "## Waiting for history" in md and "| fresh | platform |" in md


def test_exposition_has_no_timestamps_and_passes_promtool(setup):
    import subprocess

    from prometheus_client.parser import text_string_to_metric_families

    setup["fc"].run_once()
    text = requests.get(f"http://127.0.0.1:{setup['fport']}/metrics", timeout=10).text
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    assert any(s.name == "opsstack_forecast_seconds_to_threshold" for s in samples)
    assert all(s.timestamp is None for s in samples), "a sample carries a timestamp"
    r = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # +Inf for "never" is a valid sample value, not an error
    assert all(not math.isnan(s.value) for s in samples if s.name.startswith("opsstack_forecast_seconds"))


def test_a_target_that_had_history_and_lost_it_is_an_error_not_waiting(setup):
    from forecasters.prom import QueryError
    from forecasters.service import Waiting

    fc = setup["fc"]
    _wait_for(lambda: _query(setup["prom"].url, "count_over_time(opsstack_test_memory_ratio[3d])"))
    now = time.time()
    assert not isinstance(fc.run_once(now)["memory-user-app"], Exception)
    leak = fc.state.targets["memory-user-app"]
    assert leak.status == "ok" and leak.errors == 0
    # 6 hours later the backfilled series has had no sample since `now`: it stopped updating
    res = fc.run_once(now + 6 * 3600)
    assert isinstance(res["memory-user-app"], RuntimeError) and "stopped updating" in str(res["memory-user-app"])
    assert leak.status == "error" and leak.errors == 1
    # 3 days later the window holds none of it: no series, after having had history -> an error
    res = fc.run_once(now + 3 * 86400)
    assert isinstance(res["memory-user-app"], QueryError) and res["memory-user-app"].empty
    assert leak.status == "error" and leak.errors == 2
    # meanwhile the target that never had enough history is still only waiting
    assert isinstance(res["fresh"], Waiting) and fc.state.targets["fresh"].status == "waiting"
    assert fc.state.targets["fresh"].errors == 0
    text = requests.get(f"http://127.0.0.1:{setup['fport']}/metrics", timeout=10).text
    assert ('opsstack_forecast_target_state{kind="memory",service="user-app",state="error",'
            'target="memory-user-app",team="ops"} 1.0') in text
