"""A memory-leak fault on a real demo service: the default memory target predicts the OOM and
MemoryLeakOomPredicted goes pending in a real Prometheus (seconds-scale config)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.support.demo import DemoProcess
from core.exporter import registry_for, start
from forecasters.service import ForecastCollector, Forecaster
from forecasters.targets import build
from core.config import load_data
from core.procs import free_port
from tests.support.servers import Prometheus

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LIMIT = 256 * 1024 ** 2


def _query(url, q):
    return requests.get(f"{url}/api/v1/query", params={"query": q}, timeout=10).json()["data"]["result"]


def _wait(fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.5)
    raise AssertionError("condition not met before the timeout")


def test_memory_leak_fault_predicts_oom(tmp_path):
    service = {"name": "user-app", "memory_limit_bytes": LIMIT}
    demo = DemoProcess(tmp_path / "demo", service="user-app", services=[service], load=False).start()
    fport = free_port()
    prom = Prometheus({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "alert_rules" / "forecast.yml")],
        "scrape_configs": [
            {"job_name": "platform", "static_configs": [{"targets": [f"127.0.0.1:{demo.ports['admin']}"],
                                                         "labels": {"service": "user-app", "team": "ops"}}]},
            {"job_name": "opsstack_forecaster", "static_configs": [{"targets": [f"127.0.0.1:{fport}"]}]},
        ]}, workdir=tmp_path / "prom").start()
    server = None
    fc = None
    try:
        cfg = load_data({
            "platform": {"services": [service]},
            "forecast": {"enabled": True, "prometheus_url": prom.url, "workers": 1, "store": False,
                         "history": "10m", "step": "1s", "min_history": "20s", "horizons": ["48h", "14d"],
                         "models": ["naive", "ses", "linear_trend", "long_trend"], "backtest": {"folds": 3}},
        })
        targets = [t for t in build(cfg) if t.name == "memory-user-app"]
        assert targets, "the default targets include the demo service's memory"
        fc = Forecaster.from_config(cfg, targets=targets)
        server, _ = start(registry_for(ForecastCollector(fc.state)), "127.0.0.1", fport)
        _wait(lambda: _query(prom.url, targets[0].query))
        before = float(_query(prom.url, targets[0].query)[0]["value"][1])   # memory / limit before the leak
        code, body = demo.admin("POST", "/admin/faults", {"kind": "memory-leak"})
        assert code == 201
        fault = body["fault"]
        # when the leak (the demo's own model: rate x elapsed) takes the process to its limit
        real_oom = fault["started"] + (1.0 - before) * LIMIT / fault["rate"]
        # let the leak build a trend in Prometheus: a fifth of the headroom used (about 25 s of the
        # ~2 minutes the fault takes to fill it), as scraped, whatever the machine's load
        _wait(lambda: float(_query(prom.url, targets[0].query)[0]["value"][1]) >= before + 0.2 * (1.0 - before),
              timeout=240)
        res = fc.run_once()["memory-user-app"]
        assert not isinstance(res, Exception), res
        cross = res.crossings[1.0].at
        assert cross is not None and cross - res.t_last < 600, "the OOM is minutes away, not days"
        # and about when it really comes (the recent new trend, forecast.change_point: the default
        # for memory targets): within half of the time that was left
        left = real_oom - res.t_last
        assert abs(cross - real_oom) <= 0.5 * left, (res.model, cross - res.t_last, left)
        got = _wait(lambda: _query(prom.url, 'opsstack_forecast_seconds_to_threshold{target="memory-user-app"}'))
        assert float(got[0]["value"][1]) < 600

        def alert():
            r = requests.get(f"{prom.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            return [a for a in r if a["labels"]["alertname"] == "MemoryLeakOomPredicted"]
        a = _wait(alert, timeout=30)[0]
        assert a["state"] in ("pending", "firing") and a["labels"]["service"] == "user-app"
    finally:
        if server:
            server.shutdown()
            server.server_close()
        if fc:
            fc.close()
        prom.stop()
        demo.stop()
