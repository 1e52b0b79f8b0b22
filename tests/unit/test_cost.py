"""Cost maths, rightsizing rules (with the memory guard), reserved-capacity maths, the AWS and
OpenCost parsers and the exporters.cost config checks (no servers)."""
from __future__ import annotations

import json

import pytest

from core.config import ConfigError, defaults, load_data, view
from exporters.cost import pricing
from exporters.cost.advice import GroupUsage, baseline, config_groups, fill, types_of, utilisation_band
from exporters.cost.aws import parse_memory, parse_price_item, ri_hourly
from exporters.cost.opencost import OpenCostError, parse_allocations
from exporters.cost.pricing import Group, InstanceType
from exporters.cost.rightsizing import Rules, Usage, classify
from tests.support.fakeaws import price_item

GIB = 1024 ** 3
TYPES = {t.name: t for t in [
    InstanceType("m6i.large", 2, 8 * GIB, 0.1, 0.06),
    InstanceType("m6i.xlarge", 4, 16 * GIB, 0.2, 0.12),
    InstanceType("m6i.2xlarge", 8, 32 * GIB, 0.4, 0.24),
    InstanceType("r6i.large", 2, 16 * GIB, 0.15, None),
]}


def grp(type_="m6i.2xlarge", count=1, purchase="on_demand", name="g", region="r1", service="s"):
    return pricing.price_group(name, service, region, type_, count, purchase, TYPES)


# ---------------------------------------------------------------- pricing
def test_group_prices_by_purchase_option_and_explicit_price():
    assert grp().hourly == pytest.approx(0.4)
    assert grp(count=3, purchase="reserved").hourly == pytest.approx(0.72)
    g = pricing.price_group("x", "s", "r", "m6i.large", 2, "on_demand", TYPES, hourly_price=0.5)
    assert g.hourly == pytest.approx(1.0) and g.on_demand_price == pytest.approx(0.1)
    assert pricing.price_group("x", "s", "r", "unknown.type", 1, "on_demand", TYPES) is None
    assert pricing.monthly(1.0, 730) == 730


def test_coverage_on_demand_share_and_ri_utilisation():
    gs = [grp(count=3, purchase="reserved"), grp(count=1), grp("m6i.large", count=4, purchase="spot")]
    assert pricing.coverage(gs) == pytest.approx(0.75)       # spot is not counted
    assert pricing.on_demand_share(gs) == pytest.approx(0.4 / (0.72 + 0.4 + 0.4))
    assert pricing.coverage([]) is None and pricing.on_demand_share([]) is None
    assert pricing.ri_utilisation(4, 3) == 0.75 and pricing.ri_utilisation(2, 5) == 1.0
    assert pricing.ri_utilisation(0, 5) is None


def test_reservations_take_the_baseline_less_what_is_reserved():
    gs = [grp(count=2, purchase="reserved"), grp(count=5, name="h"), grp("r6i.large", count=3, name="i")]
    res = pricing.reservations({("m6i.2xlarge", "r1"): 6, ("r6i.large", "r1"): 3, ("m6i.large", "r1"): 0}, gs, TYPES)
    assert [(r.type, r.count, r.reserved_now) for r in res] == [("m6i.2xlarge", 4, 2)]  # r6i: no reserved rate
    assert res[0].hourly_saving == pytest.approx(4 * (0.4 - 0.24))
    assert res[0].yearly_saving() == pytest.approx(4 * 0.16 * 8760)
    assert pricing.reservations({("m6i.2xlarge", "r1"): 2}, gs, TYPES) == []  # already covered


def test_bandwidth_and_cost_per_1000_requests():
    assert pricing.bandwidth_hourly(1e9 / 3600, 0.1) == pytest.approx(0.1)  # 1 GB in an hour
    assert pricing.cost_per_1000_requests(3.6, 1.0) == pytest.approx(1.0)
    assert pricing.cost_per_1000_requests(3.6, 0.0) is None


# ---------------------------------------------------------------- rightsizing
def test_idle_advises_the_smallest_type_that_holds_memory():
    f = classify(grp(), Usage(cpu_max=0.05, cpu_p95=0.04, cpu_p995=0.05, memory_peak=10 * GIB), TYPES)
    assert f.kind == "idle" and f.advised_type == "m6i.xlarge"  # m6i.large (8 GiB) < 10 GiB peak
    assert f.monthly_saving(730) == pytest.approx((0.4 - 0.2) * 730)


def test_underused_advises_the_next_smaller_type():
    f = classify(grp(count=2), Usage(cpu_max=3.0, cpu_p95=2.0, cpu_p995=2.5, memory_peak=4 * GIB), TYPES)
    assert f.kind == "underused" and f.advised_type == "m6i.xlarge"   # one step, not two
    assert f.cpu_p95_ratio == pytest.approx(0.25)
    assert f.monthly_saving(730) == pytest.approx(2 * 0.2 * 730)


def test_memory_guard_blocks_a_type_that_cannot_hold_the_peak():
    f = classify(grp(), Usage(cpu_max=3.0, cpu_p95=2.0, cpu_p995=2.5, memory_peak=20 * GIB), TYPES)
    assert f.kind == "underused" and f.advised_type is None and f.blocked
    assert f.monthly_saving(730) == 0 and "memory peak (20.0 GiB)" in f.reason
    # an unknown peak never lets a smaller type through
    f = classify(grp(), Usage(cpu_max=3.0, cpu_p95=2.0, cpu_p995=2.5, memory_peak=None), TYPES)
    assert f.blocked


def test_overprovisioned_uses_p995_plus_headroom():
    # P95 50% (not under-used); P99.5 3 cores x 1.2 = 3.6 fits the 4 vCPU m6i.xlarge
    f = classify(grp(), Usage(cpu_max=4.0, cpu_p95=4.0, cpu_p995=3.0, memory_peak=4 * GIB), TYPES)
    assert f.kind == "overprovisioned" and f.advised_type == "m6i.xlarge"
    # 3.5 x 1.2 = 4.2 > 4: fits nothing smaller
    assert classify(grp(), Usage(cpu_max=4.0, cpu_p95=4.0, cpu_p995=3.5, memory_peak=4 * GIB), TYPES) is None
    # headroom from the rules
    f = classify(grp(), Usage(cpu_max=4.0, cpu_p95=4.0, cpu_p995=3.5, memory_peak=4 * GIB), TYPES,
                 Rules(headroom=0.1))
    assert f.kind == "overprovisioned"


def test_busy_smallest_and_unmeasured_groups_get_no_finding():
    assert classify(grp(), Usage(cpu_max=7.0, cpu_p95=6.0, cpu_p995=6.5, memory_peak=GIB), TYPES) is None
    assert classify(grp("m6i.large"), Usage(0.001, 0.001, 0.001, GIB), TYPES) is None  # smallest already
    assert classify(grp(), Usage(None, None, None, None), TYPES) is None


def test_baseline_is_the_fewest_instances_in_any_hour_and_counts_advised_types():
    a, b = grp(count=3, name="a"), grp(count=2, name="b")
    at = 10 * 3600.0
    full = {h * 3600.0: 1.0 for h in range(1, 11)}
    part = {h * 3600.0: 1.0 for h in range(1, 11) if h != 5}   # b missing in one hour
    us = [GroupUsage(a, Usage(1, 1, 1, 1), full), GroupUsage(b, Usage(1, 1, 1, 1), part)]
    assert baseline(us, at, 9 * 3600.0) == {("m6i.2xlarge", "r1"): 3}
    assert baseline(us, at, 9 * 3600.0, {"a": "m6i.xlarge"}) == {("m6i.xlarge", "r1"): 3, ("m6i.2xlarge", "r1"): 0}


def test_utilisation_band_per_service():
    g = grp(count=1)  # 8 vCPUs
    us = [GroupUsage(g, Usage(1, 1, 1, 1), {3600.0: 6.0, 7200.0: 2.0, 10800.0: 6.2, 14400.0: 7.9})]
    b = utilisation_band(us, TYPES, 0.7, 0.8)["s"]
    assert b["in_band_share"] == pytest.approx(0.5) and b["last"] == pytest.approx(7.9 / 8)


def test_query_templates_escape_labels():
    g = Group("x", 'a"b', "r\\1", "m6i.large", 1, "on_demand", 0.1, 0.1)
    assert fill('up{service="{service}",region="{region}"}', g) == 'up{service="a\\"b",region="r\\\\1"}'


# ---------------------------------------------------------------- AWS / OpenCost parsing
def test_price_list_entries_and_ri_rates():
    assert parse_price_item(price_item("c6i.large", "ap-northeast-2", 0.096, 2, "4 GiB")) == \
        ("c6i.large", 0.096, 2.0, 4 * GIB)
    assert parse_price_item(json.dumps({"product": {"attributes": {}}, "terms": {}})) is None
    assert parse_memory("0.5 GiB") == GIB // 2 and parse_memory("NA") is None
    ri = {"Duration": 31536000, "FixedPrice": 876.0, "UsagePrice": 0.01,
          "RecurringCharges": [{"Frequency": "Hourly", "Amount": 0.02}]}
    assert ri_hourly(ri) == pytest.approx(0.1 + 0.01 + 0.02)


def test_opencost_allocations_to_hourly():
    body = {"code": 200, "data": [{"ns-a": {"totalCost": 12.0, "cpuCost": 6, "ramCost": 3,
                                            "window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T12:00:00Z"}},
                                   "__idle__": {"totalCost": 5.0}, "bad name!": {"totalCost": 1.0}}]}
    got = parse_allocations(body, 86400)
    assert [(a.name, a.hourly) for a in got] == [("bad_name_", 1.0 / 24), ("ns-a", 1.0)]
    with pytest.raises(OpenCostError):
        parse_allocations({"code": 500, "message": "x"}, 86400)


# ---------------------------------------------------------------- config
def test_demo_defaults_are_valid_and_about_65_percent_on_demand():
    s = view(defaults(), "exporters.cost")
    types = types_of(s)
    gs = config_groups(s, types)
    assert len(gs) == 12 and {g.region for g in gs} == {"seoul", "singapore", "tokyo"}
    assert 0.6 < pricing.on_demand_share(gs) < 0.7


@pytest.mark.parametrize("data,key", [
    ({"instances": [{"name": "a", "service": "s", "region": "r", "type": "nope"}]}, "exporters.cost.instances[0].type"),
    ({"types": [{"name": "x.l", "vcpu": 1, "memory_bytes": 1, "hourly_price": 1}],
      "instances": [{"name": "a", "service": "s", "region": "r", "type": "x.l", "purchase": "reserved"}]},
     "exporters.cost.instances[0].purchase"),
    ({"budgets": {"s": -1}}, "exporters.cost.budgets.s"),
    ({"bandwidth": {"price_per_gb": {"r": "cheap"}}}, "exporters.cost.bandwidth.price_per_gb.r"),
    ({"report": {"band_low": 0.9, "band_high": 0.8}}, "exporters.cost.report.band_low"),
    ({"report": {"window": "1h", "step": "2h"}}, "exporters.cost.report.step"),
    ({"currency": "USD"}, "exporters.cost.currency"),
    ({"usage": {"cpu_cores_query": "rate(x[5m]"}}, "exporters.cost.usage.cpu_cores_query"),
    ({"aws": {"enabled": True, "access_key_id": "AKID"}}, "exporters.cost.aws.secret_access_key"),
    ({"instances": [{"name": "a", "service": "s", "region": "r", "type": "t3.large", "purchase": "rented"}]},
     "exporters.cost.instances[0].purchase"),
])
def test_config_checks(data, key):
    with pytest.raises(ConfigError) as e:
        load_data({"exporters": {"cost": data}})
    assert e.value.key == key


def test_secrets_are_hidden_in_the_view():
    s = view(load_data({"exporters": {"cost": {"aws": {"access_key_id": "AKIDSECRET", "secret_access_key": "shh"}}}}),
             "exporters.cost")
    assert "shh" not in repr(s.aws) and "AKIDSECRET" not in repr(s.aws)


# ---------------------------------------------------------------- stack wiring
def test_the_stack_runs_and_scrapes_the_cost_exporter(tmp_path):
    from stack import prometheus_config, runtime
    from stack.launcher import Stack

    cfg = load_data({"stack": {"run_dir": str(tmp_path / ".run")}})
    r = runtime.resolve(cfg)
    port = r["stack"]["ports"]["exporter_cost"]
    assert isinstance(port, int)
    progs = {p.name: p for p in Stack(cfg).programs(r)}
    p = progs["exporter-cost"]
    assert p.command[-2:] == ["exporter", "cost"] and p.ready_url.endswith(f":{port}/metrics")
    assert "exporters.cost" in p.reads
    jobs = {j["job_name"]: j for j in prometheus_config.build(r)["scrape_configs"]}
    assert jobs["opsstack_cost"]["static_configs"][0]["targets"] == [f"{r['stack']['host']}:{port}"]
    off = load_data({"stack": {"run_dir": str(tmp_path / ".run2")}, "exporters": {"cost": {"enabled": False}}})
    r2 = runtime.resolve(off)
    assert "exporter-cost" not in {p.name for p in Stack(off).programs(r2)}


def test_report_cli_refuses_a_bad_window_without_a_traceback(capsys):
    import argparse

    from exporters.cost import cli

    args = argparse.Namespace(json=False, window="soon", prometheus="http://127.0.0.1:9")
    assert cli.run(args, defaults()) == 2
    assert "--window" in capsys.readouterr().err
    args = argparse.Namespace(json=False, window="1m", prometheus="http://127.0.0.1:9")
    assert cli.run(args, defaults()) == 2
    assert "longer than report.step" in capsys.readouterr().err


def test_markdown_cells_cannot_break_the_table():
    from exporters.cost.cli import _cell

    assert _cell("a|b\nc") == "a/b c" and len(_cell("x" * 500)) == 80
