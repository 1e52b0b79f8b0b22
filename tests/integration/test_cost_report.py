"""`opsstack cost report` and the advice gauges on a real Prometheus holding the demo's 14 days of
history (demo/history.py through promtool, as `opsstack up` backfills it): the demo inventory
gives the seed-shaped findings from the data, not from constants."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pytest
from prometheus_client import generate_latest

from core.config import defaults, load_data, view
from core.exporter import registry_for
from core.prom import Prometheus as PromClient
from demo.history import history
from exporters.cost import cli
from exporters.cost.advice import advise, config_groups, saved_bandwidth, types_of
from exporters.cost.collector import CostCollector
from forecasters.backfill import create_blocks, openmetrics
from tests.support.servers import Prometheus

DAY = 86400.0


@pytest.fixture(scope="module")
def demo_prom(tmp_path_factory):
    work = tmp_path_factory.mktemp("cost-prom")
    cfg = defaults()
    demo, platform = view(cfg, "demo"), view(cfg, "platform")
    end = time.time() - 60
    inst = {s.name: {"job": "platform", "instance": f"127.0.0.1:{9000 + i}", "service": s.name, "team": s.team}
            for i, s in enumerate(platform.services)}
    for _w, series in history(demo, platform, end - 14 * DAY, end, inst, None):
        create_blocks(openmetrics(s.as_tuple() for s in series), work / "data", workdir=work, max_block_duration="18h")
    with Prometheus({"global": {"scrape_interval": "15s"}, "scrape_configs": []}, workdir=work) as prom:
        yield prom, cfg


def test_demo_inventory_gives_three_underused_groups_and_a_reservation(demo_prom):
    prom, cfg = demo_prom
    s = view(cfg, "exporters.cost")
    types = types_of(s)
    adv = advise(s, PromClient(prom.url, timeout=300), config_groups(s, types), types)
    d = adv.to_json()
    found = {f["group"]: f for f in d["findings"]}
    assert set(found) == {"gate-management-seoul", "user-app-tokyo", "event-management-singapore"}
    for f in found.values():
        assert f["kind"] == "underused" and f["cpu_p95_ratio"] < 0.30 and f["cpu_max_ratio"] > 0.01
        assert f["monthly_saving"] > 0 and f["memory_peak_bytes"] > 0
    # the next smaller type of the family, priced from the catalogue
    assert found["gate-management-seoul"]["advised_type"] == "c6i.2xlarge"
    assert found["gate-management-seoul"]["monthly_saving"] == pytest.approx(8 * (0.768 - 0.384) * 730)
    # the rest of Seoul sits at 55-70% P95: the region's share of the real request counters
    g = {u.group.name: u for u in adv.usages}
    p95 = g["user-app-seoul"].usage.cpu_p95 / 8
    assert 0.5 < p95 < 0.8
    # on demand ~65% of the spend, a steady baseline to reserve with a yearly saving
    assert 0.6 < d["spend"]["on_demand_share"] < 0.7
    rec = {(r["type"], r["region"]): r for r in d["reserved"]["recommendations"]}
    # gate-management-seoul counts as its advised type: reserve 8 c6i.2xlarge, not 8 c6i.4xlarge
    assert rec[("c6i.2xlarge", "seoul")]["count"] == 8 and ("c6i.4xlarge", "seoul") not in rec
    assert d["reserved"]["yearly_saving"] > 0
    # cost per 1,000 requests: one point per day of the window
    assert 12 <= len(d["cost_per_1000_requests"]["user-app"]) <= 14
    assert set(d["utilisation_band"]) == {"gate-management", "user-app", "event-management", "integrated-platform"}


def test_report_cli_markdown_and_json(demo_prom, capsys):
    prom, cfg = demo_prom
    assert cli.run(argparse.Namespace(json=True, window=None, prometheus=prom.url), cfg) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["findings"]) == 3
    assert cli.run(argparse.Namespace(json=False, window="7d", prometheus=prom.url), cfg) == 0
    md = capsys.readouterr().out
    assert "## Rightsizing" in md and "gate-management-seoul | underused" in md and "Total:" in md


def test_report_cli_without_prometheus_says_so(capsys):
    assert cli.run(argparse.Namespace(json=False, window=None, prometheus="http://127.0.0.1:9"), defaults()) == 2
    assert "cannot read Prometheus" in capsys.readouterr().err


def test_exporter_advice_gauges(demo_prom):
    prom, cfg = demo_prom
    c = CostCollector(view(cfg, "exporters.cost"), prom.url)
    text = generate_latest(registry_for(c)).decode()
    assert 'opsstack_exporter_up{exporter="cost",source="prometheus"} 1.0' in text
    assert text.count("opsstack_cost_rightsizing_monthly_saving{") == 3
    assert 'opsstack_cost_reserved_yearly_saving{currency="usd",region="seoul",type="c6i.2xlarge"}' in text
    assert 'opsstack_cost_service_monthly_projected{currency="usd",service="user-app"}' in text
    assert 'opsstack_cost_budget_monthly{currency="usd",service="user-app"} 6000.0' in text


def test_known_series_give_exact_percentiles_and_the_memory_guard(tmp_path):
    """A group whose CPU is 0.2 cores for 95% of the time and 1.0 for 5%, memory 6 GiB."""
    end = time.time() - 60
    t = np.arange(end - 2 * DAY, end, 60.0)
    cpu = np.where((np.arange(len(t)) % 100) < 95, 0.2, 1.0)
    counter = np.cumsum(cpu * 60.0)
    series = [("test_cpu_seconds_total", {"service": "api", "region": "r1"}, t, counter),
              ("test_memory_bytes", {"service": "api", "region": "r1"}, t, np.full(len(t), 6.0 * 1024 ** 3)),
              ("opsstack_cdn_response_bytes_per_second", {"zone": "main", "region": "asia", "class": "api"}, t,
               np.full(len(t), 1e6)),
              ("opsstack_cdn_saved_bytes_per_second", {"zone": "main", "region": "asia", "class": "api"}, t,
               np.full(len(t), 4e5))]
    create_blocks(openmetrics(series), tmp_path / "data", workdir=tmp_path, max_block_duration="18h")
    cfg = load_data({"exporters": {"cost": {
        "types": [{"name": "m6i.large", "vcpu": 2, "memory_bytes": 8 * 1024 ** 3, "hourly_price": 0.1,
                   "reserved_hourly_price": 0.06},
                  {"name": "m6i.xlarge", "vcpu": 4, "memory_bytes": 16 * 1024 ** 3, "hourly_price": 0.2,
                   "reserved_hourly_price": 0.12},
                  {"name": "c6i.xlarge", "vcpu": 4, "memory_bytes": 8 * 1024 ** 3, "hourly_price": 0.17,
                   "reserved_hourly_price": None},
                  {"name": "c6i.large", "vcpu": 2, "memory_bytes": 4 * 1024 ** 3, "hourly_price": 0.085,
                   "reserved_hourly_price": None}],
        "instances": [{"name": "api-m", "service": "api", "region": "r1", "type": "m6i.xlarge", "count": 1},
                      {"name": "api-c", "service": "api", "region": "r1", "type": "c6i.xlarge", "count": 1}],
        "budgets": {"api": 100.0},
        "usage": {"cpu_cores_query": 'rate(test_cpu_seconds_total{service="{service}",region="{region}"}[5m])',
                  "memory_bytes_query": 'test_memory_bytes{service="{service}",region="{region}"}',
                  "requests_query": 'rate(test_cpu_seconds_total{service="{service}",region="{region}"}[5m])',
                  "demo_load_scale": 1.0},
        "report": {"window": "1d", "step": "1m"}}}})
    s = view(cfg, "exporters.cost")
    types = types_of(s)
    with Prometheus({"global": {"scrape_interval": "15s"}, "scrape_configs": []}, workdir=tmp_path) as prom:
        adv = advise(s, PromClient(prom.url, timeout=120), config_groups(s, types), types)
        saved = saved_bandwidth(PromClient(prom.url), s, adv.at)
    # the CDN exporter's bytes win over the demo's requests: 1 MB/s in asia at 0.12 per GB
    assert adv.bandwidth_source == "cdn"
    assert adv.bandwidth == {("cdn", "asia"): pytest.approx(1e6 * 3600 / 1e9 * 0.12)}
    assert saved == {"asia": pytest.approx(4e5 * 3600 / 1e9 * 0.12)}
    u = {x.group.name: x.usage for x in adv.usages}["api-m"]
    assert u.cpu_max == pytest.approx(1.0, rel=0.05)
    assert u.memory_peak == pytest.approx(6 * 1024 ** 3)
    f = {x.group: x for x in adv.findings}
    # m6i.xlarge: P95 well under 30% of 4 vCPUs -> m6i.large (8 GiB holds the 6 GiB peak)
    assert f["api-m"].kind == "underused" and f["api-m"].advised_type == "m6i.large"
    # c6i.xlarge: c6i.large has 4 GiB < 6 GiB peak: blocked by the memory guard
    assert f["api-c"].kind == "underused" and f["api-c"].advised_type is None and f["api-c"].blocked
    assert "memory peak" in f["api-c"].reason
    # two on-demand groups present every hour of the window; only m6i has a reserved rate (after
    # rightsizing api-m counts as m6i.large)
    assert [(r.type, r.count) for r in adv.reservations] == [("m6i.large", 1)]
    assert adv.reservations[0].yearly_saving() == pytest.approx((0.1 - 0.06) * 8760)


def test_served_exporter_passes_promtool_and_reads_opencost_nodes(tmp_path):
    """`opsstack exporter cost` (exporters.cost.server.serve) on a free port: OpenCost's
    allocations (fake) and node_total_hourly_cost (real Prometheus), /metrics lint-clean."""
    import subprocess
    import threading

    import requests

    from core.procs import binary, free_port
    from exporters.cost.server import serve
    from tests.support.fakeaws import FakeOpenCost
    from tests.support.wait import wait_for

    end = time.time() - 60
    t = np.arange(end - 3600, end, 60.0)
    series = [("node_total_hourly_cost", {"node": f"n{i}", "instance_type": "m5.large", "region": "us-east-1"},
               t, np.full(len(t), 0.096)) for i in range(3)]
    create_blocks(openmetrics(series), tmp_path / "data", workdir=tmp_path, max_block_duration="2h")
    port = free_port("127.0.0.1")
    with Prometheus({"global": {"scrape_interval": "15s"}, "scrape_configs": []}, workdir=tmp_path) as prom, \
            FakeOpenCost({"shop": {"totalCost": 24.0, "cpuCost": 12.0, "ramCost": 6.0}}) as oc:
        cfg = load_data({"stack": {"ports": {"exporter_cost": port}},
                         "exporters": {"cost": {"prometheus_url": prom.url,
                                                "opencost": {"enabled": True, "url": oc.url}}}})
        stop = threading.Event()
        th = threading.Thread(target=serve, args=(cfg, stop), daemon=True)
        th.start()
        try:
            def scraped():
                try:
                    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                except requests.RequestException:
                    return None
                return r.text if 'source="prometheus"} 1.0' in r.text and "nodes-m5.large" in r.text else None
            text = wait_for(scraped, timeout=120, what="the cost exporter's advice and OpenCost nodes")
        finally:
            stop.set()
            th.join(20)
    assert 'opsstack_cost_group_instances{group="nodes-m5.large-us-east-1",purchase="on_demand",region="us-east-1",' \
           'service="kubernetes",source="opencost",type="m5.large"} 3.0' in text
    assert 'opsstack_cost_allocation_hourly{allocation="shop",currency="usd"} 1.0' in text
    assert 'opsstack_exporter_up{exporter="cost",source="opencost"} 1.0' in text
    lint = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
