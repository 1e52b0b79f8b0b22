"""The forecaster's replica recommendation from real data: a real demo service with its load
generator on, scraped by a real Prometheus; the advisor's queries (forecasters/scaling_advisor.py)
read the region instances' replica CPU and the platform's request rate; the collector publishes
opsstack_scaling_* gauges that `promtool check metrics` accepts."""
from __future__ import annotations

import dataclasses
import subprocess

import pytest
from prometheus_client import generate_latest

from core.config import load_data, view
from core.exporter import registry_for
from core.procs import binary
from core.prom import Prometheus as PromClient
from forecasters import scaling
from forecasters.peak import DailyPeak
from forecasters.scaling_advisor import ScalingAdvisor, ScalingCollector, recommend_all
from forecasters.service import State, TargetState
from forecasters.targets import build
from tests.support.demo import REGIONS, DemoProcess
from tests.support.servers import Prometheus
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

SERVICE = "user-app"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    demo = DemoProcess(tmp_path_factory.mktemp("demo"), service=SERVICE, requests_per_second=15.0,
                       replicas={"initial": 3, "min": 1, "max": 8})
    demo.start()
    prom = Prometheus({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                       "scrape_configs": [{"job_name": "platform", "static_configs": [
                           {"targets": [f"127.0.0.1:{demo.ports['admin']}"], "labels": {"service": SERVICE}}]}]},
                      workdir=tmp_path_factory.mktemp("prom"))
    prom.start()
    yield demo, prom
    prom.stop()
    demo.stop()


def settings():
    cfg = load_data({"platform": {"regions": REGIONS, "services": [{"name": SERVICE}]}})
    return cfg, dataclasses.replace(view(cfg, "forecast.scaling"), max_replicas=50)


def test_recommendation_scales_the_measured_replica_cpu_to_the_forecast_peak(stack):
    demo, prom = stack
    client = PromClient(prom.url)
    _, sc = settings()
    # the rates over 20s exist for every region once traffic has flowed for a while
    recs = wait_for(lambda: (lambda r: r if len(r) == len(REGIONS) and all(x.peak_load > 0 for x in r) else None)(
        recommend_all(client, 1.0, None, sc, "20s")), timeout=90, what="a recommendation per region")
    total = float(client.query('sum(rate(opsstack_http_requests_total{job="platform"}[20s]))')["result"][0]["value"][1])
    assert total > 0
    by_region = {r.region: r for r in recs}
    assert set(by_region) == set(REGIONS) and all(r.service == SERVICE for r in recs)
    assert all(r.current == 3 and r.capacity == 2.0 for r in recs)   # 3 replicas x 2 workers
    # the home region serves ~90% of the users: it costs the most replica CPU per platform request
    assert by_region["seoul"].peak_load > by_region["tokyo"].peak_load
    # a peak at which seoul's replicas would be ~8 cores busy needs more than today's 3 replicas
    peak = 8.0 / by_region["seoul"].peak_load
    big = {r.region: r for r in recommend_all(client, peak, 123.0, sc, "20s")}
    s = big["seoul"]
    assert s.recommended > 3 and s.peak_at == 123.0
    assert s.peak_utilisation <= sc.band_high + 1e-9
    assert scaling.utilisation(s.peak_load, s.recommended - 1, s.capacity) > sc.band_high
    assert s.as_dict()["change"] == s.recommended - 3


def test_advisor_publishes_gauges_after_a_pass(stack):
    demo, prom = stack
    cfg, sc = settings()
    sc = dataclasses.replace(sc, window=20.0)
    target = next(t for t in build(cfg) if t.name == sc.peak_target)
    state = State(targets={target.name: TargetState(target)})
    advisor = ScalingAdvisor(sc, prom.url, sc.peak_target)
    collector = ScalingCollector(advisor)
    advisor.refresh(state)                       # no daily peak yet: nothing, gauges absent
    assert advisor.recommendations == []
    assert b"opsstack_scaling_recommended_replicas{" not in generate_latest(registry_for(collector))
    state.targets[target.name].peak = DailyPeak(tod=15 * 3600.0, start=14 * 3600.0, end=16 * 3600.0,
                                                value=500.0, days=7.0, timezone="Asia/Seoul")
    wait_for(lambda: advisor.refresh(state) or len(advisor.recommendations) == len(REGIONS), timeout=90,
             what="recommendations for every region")
    text = generate_latest(registry_for(collector)).decode()
    for r in REGIONS:
        assert f'opsstack_scaling_recommended_replicas{{region="{r}",service="{SERVICE}"}}' in text
        assert f'opsstack_scaling_current_replicas{{region="{r}",service="{SERVICE}"}} 3.0' in text
    assert 'replicas="recommended"' in text and "opsstack_scaling_peak_load_cores" in text
    chk = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr


def test_capacity_scaling_cli_reads_prometheus_and_says_why_there_is_nothing_yet(stack, tmp_path):
    import argparse
    import json

    from forecasters import capacity_cli

    demo, prom = stack
    cfg = load_data({"platform": {"regions": REGIONS, "services": [{"name": SERVICE}]},
                     "forecast": {"prometheus_url": prom.url}})
    parser = argparse.ArgumentParser()
    capacity_cli.add_arguments(parser)
    args = parser.parse_args(["scaling", "--markdown", str(tmp_path / "s.md"), "--json", str(tmp_path / "s.json")])
    assert capacity_cli.run(args, cfg) == 0
    # minutes of traffic: no daily profile yet, so no recommendation (never a made-up one)
    assert "No recommendation" in (tmp_path / "s.md").read_text()
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["recommendations"] == [] and data["band"] == [0.7, 0.8]
    from core.procs import free_port

    bad = load_data({"forecast": {"prometheus_url": f"http://127.0.0.1:{free_port('127.0.0.1')}"}})  # nobody there
    assert capacity_cli.run(parser.parse_args(["scaling"]), bad) == 2
