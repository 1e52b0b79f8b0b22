"""The first hour of a fresh stack: the forecaster's first pass runs before Prometheus has data.

A real Prometheus with an empty TSDB scrapes the forecaster and loads the rendered
alert_rules/forecast.yml. Every default target answers "no series": each is *waiting* (state
gauge), counts no error, and ForecasterStale does not even go pending; the capacity report says
there is not enough history and how much is needed. The exposition scraped from that forecaster
then drives `promtool test rules` over two simulated hours: quiet, while the same rules fire for a
target that succeeded once and then stopped (a real staleness). In the same Prometheus, a target
whose query is broken (two series) is an error and ForecasterStale goes pending for it at once.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from core.config import defaults, load_data
from core.exporter import registry_for, start
from core.procs import binary, free_port
from forecasters import capacity
from forecasters.service import ForecastCollector, Forecaster, Waiting
from forecasters.targets import build
from tests.support.servers import Prometheus
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alert_rules" / "forecast.yml"


def _query(url: str, q: str) -> list:
    r = requests.get(f"{url}/api/v1/query", params={"query": q}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


def _stale_alerts(url: str) -> list[dict]:
    alerts = requests.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "ForecasterStale"]


@pytest.fixture
def fresh(tmp_path):
    fport = free_port()
    prom_cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "opsstack_forecaster",
                            "static_configs": [{"targets": [f"127.0.0.1:{fport}"]}]}],
    }
    prom = Prometheus(prom_cfg, workdir=tmp_path / "prom")
    prom_cfg["scrape_configs"].append({"job_name": "prometheus",
                                       "static_configs": [{"targets": [f"127.0.0.1:{prom.port}"]}]})
    prom.write_config(prom_cfg)
    prom.start()
    cfg = load_data({"forecast": {"workers": 1, "store": False, "prometheus_url": prom.url,
                                  "models": ["naive", "linear_trend"], "backtest": {"folds": 1}}})
    targets = build(cfg)   # the defaults: memory/cpu/disk per demo service, host, db, requests, ...
    # plus a broken target: `up` of two jobs is two series, an error from the first pass on
    # (a 5s step: its range query has points in the few seconds Prometheus has data, wherever the
    # 5-minute grid of the defaults falls)
    broken = build(load_data({"forecast": {"targets": [{"name": "broken", "query": "up", "step": "5s",
                                                         "history": "10m"}]}}))
    fc = Forecaster.from_config(cfg, targets=targets + broken)
    server, _ = start(registry_for(ForecastCollector(fc.state)), "127.0.0.1", fport)
    try:
        yield {"prom": prom, "fc": fc, "fport": fport, "targets": targets, "tmp": tmp_path}
    finally:
        server.shutdown()
        server.server_close()
        fc.close()
        prom.stop()


def _scrape(port: int) -> tuple[str, list]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return text, [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_fresh_stack_waits_without_alerts_and_staleness_still_fires(fresh):
    prom, fc, targets = fresh["prom"], fresh["fc"], fresh["targets"]
    assert len(targets) >= 16
    wait_for(lambda: len(_query(prom.url, 'count(up == 1) == 2')), timeout=60, what="two jobs scraped")
    # the broken target is an error once its query sees both series (a busy machine may need a pass more)
    results = wait_for(lambda: (r := fc.run_once()) and not isinstance(r["broken"], Waiting) and r, timeout=120,
                       what="the broken target seen as an error")
    for t in targets:
        assert isinstance(results[t.name], Waiting), (t.name, results[t.name])
        assert fc.state.targets[t.name].errors == 0
    assert not isinstance(results["broken"], Waiting) and fc.state.targets["broken"].status == "error"

    _, samples = _scrape(fresh["fport"])
    state = {(s.labels["target"], s.labels["state"]): s.value for s in samples
             if s.name == "opsstack_forecast_target_state"}
    for t in targets:
        assert state[(t.name, "waiting")] == 1 and state[(t.name, "error")] == 0, t.name
    errors = {s.labels["target"]: s.value for s in samples if s.name == "opsstack_forecast_errors_total"}
    assert all(errors[t.name] == 0 for t in targets)
    needed = {s.labels["target"]: s.value for s in samples if s.name == "opsstack_forecast_history_needed_seconds"}
    assert needed[targets[0].name] == 3600.0

    # Prometheus scraped the waiting states and evaluated the rules since: only the broken target
    n = len(targets)
    wait_for(lambda: _query(prom.url, f'count(opsstack_forecast_target_state{{state="waiting"}} == 1) == {n}'),
             timeout=60, what="the waiting states in Prometheus")
    # the evaluation that made `broken` pending read the same scrape as the waiting states: had
    # any waiting target matched, it would be pending too (`for: 10m` starts at pending)
    pending = wait_for(lambda: _stale_alerts(prom.url), timeout=60, what="ForecasterStale pending for broken")
    assert {a["labels"].get("target") for a in pending} == {"broken"}, pending
    assert all(a["state"] == "pending" for a in pending)

    # the capacity report: not enough history, and how much is needed, per target
    waiting = [capacity.waiting_row(t, results[t.name].have, results[t.name].need) for t in targets]
    md = capacity.to_markdown([], time.time(), waiting)
    assert "Not enough history to forecast yet" in md and "No threshold is forecast" not in md
    assert f"| {targets[0].name} | {targets[0].service} | 0s | 1h | 1h |" in md

    # ... and `opsstack capacity report --run` says the same, per target, through the CLI
    from stack.cli import main

    conf, out = fresh["tmp"] / "opsstack.yaml", fresh["tmp"] / "capacity.md"
    conf.write_text(yaml.safe_dump({"forecast": {"prometheus_url": prom.url, "workers": 1, "store": False}}))
    assert main(["-c", str(conf), "capacity", "report", "--run", "--markdown", str(out)]) == 0
    md = out.read_text()
    assert "Not enough history to forecast yet" in md and "No threshold is forecast" not in md
    for t in targets:
        assert f"| {t.name} | {t.service} | 0s | 1h | 1h |" in md

    # promtool: the scraped exposition held for two hours stays quiet; a target that succeeded
    # once and then stopped fires ForecasterStale
    _promtool_case(fresh["tmp"], samples, targets)


def _promtool_case(tmp: Path, samples: list, targets: list) -> None:
    waiting_names = {t.name for t in targets}
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r["alert"] == "ForecasterStale")
    annotations = {k: rule["annotations"][k] for k in ("summary", "runbook_url")}
    series = []
    for s in samples:
        if s.labels.get("target") not in waiting_names:
            continue
        labels = dict(s.labels, job="opsstack_forecaster", instance="forecaster:9202")
        sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series.append({"series": f"{s.name}{{{sel}}}", "values": f"{s.value:g}x150"})
    assert any(x["series"].startswith("opsstack_forecast_target_state{") for x in series)
    series.append({"series": 'up{job="opsstack_forecaster",instance="forecaster:9202"}', "values": "1x150"})
    stale = dict(series=('opsstack_forecast_last_success_timestamp_seconds{job="opsstack_forecaster",'
                         'instance="forecaster:9202",target="disk-old",kind="disk",service="host",team="ops"}'),
                 values="0x150")
    quiet = {"name": "the scraped fresh-stack exposition", "interval": "1m", "input_series": series,
             "alert_rule_test": [{"eval_time": "30m", "alertname": "ForecasterStale", "exp_alerts": []},
                                 {"eval_time": "2h", "alertname": "ForecasterStale", "exp_alerts": []}]}
    firing = {"name": "the same plus a target that stopped after one success", "interval": "1m",
              "input_series": series + [stale],
              "alert_rule_test": [{"eval_time": "2h", "alertname": "ForecasterStale", "exp_alerts": [
                  {"exp_labels": {"severity": "warning", "tier": "2", "service": "forecaster", "team": "ops",
                                  "job": "opsstack_forecaster", "instance": "forecaster:9202",
                                  "target": "disk-old", "kind": "disk"},
                   "exp_annotations": dict(annotations, description=(
                       "No successful forecast for disk-oldforecaster:9202 for over 1h (value 7.2k): the "
                       "forecaster is down or its range queries fail."))}]}]}
    for case in (quiet, firing):
        path = tmp / "fresh_test.yml"
        path.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m",
                                        "tests": [case]}, sort_keys=False))
        r = subprocess.run([binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, case["name"] + "\n" + r.stdout + r.stderr


def test_default_config_renders_the_rules_under_test():
    from alert_rules import build as rules

    assert rules.render(defaults())["forecast.yml"] == RULES.read_text()
