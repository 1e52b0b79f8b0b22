"""Dashboards: generated JSON == code, dashboard-linter rules, PromQL that parses, thresholds
that match the alert thresholds. Generic over every dashboard in dashboards/registry.py.

(Running every panel query against a live Prometheus fed by the demo is an e2e test; it uses
``dashboards.common.panel_queries``.)
"""
from __future__ import annotations

import copy
import importlib
import json
import subprocess

import pytest
import yaml

from dashboards import cli as dcli
from dashboards.common import counter_problems, expand_variables, lint, panel_queries, panels
from dashboards.registry import DASHBOARDS
from core.config import defaults, load_data
from core.procs import binary

PROVISIONED_UIDS = {"prometheus", "alertmanager", "postgres"}


@pytest.fixture(scope="module")
def models() -> dict[str, dict]:
    cfg = defaults()
    return {name: importlib.import_module(f"dashboards.{name}").build(cfg) for name in DASHBOARDS}


def committed() -> dict[str, dict]:
    return {str(p.relative_to(dcli.JSON_DIR)): json.loads(p.read_text()) for p in dcli.JSON_DIR.rglob("*.json")}


# ------------------------------------------------------------------ code == committed JSON

def test_committed_json_matches_the_code():
    rendered = dcli.render(defaults())
    for rel, text in rendered.items():
        p = dcli.JSON_DIR / rel
        assert p.exists(), f"{p} missing: run `opsstack dashboards generate`"
        assert p.read_text() == text, f"{rel} differs from the code: run `opsstack dashboards generate`"
    extra = set(committed()) - {str(r) for r in rendered}
    assert not extra, f"JSON without code (delete it or register its module): {sorted(extra)}"


def test_uids_are_fixed_and_unique(models):
    seen = {}
    for name, model in models.items():
        mod = importlib.import_module(f"dashboards.{name}")
        assert model["uid"] == mod.UID, f"{name}: uid {model['uid']!r} is not the module's UID {mod.UID!r}"
        assert len(model["uid"]) <= 40
        assert model["uid"] not in seen, f"uid {model['uid']} used by {name} and {seen[model['uid']]}"
        seen[model["uid"]] = name
        # the same uid whatever the config
        other = load_data({"platform": {"regions": ["seoul"]}})
        assert mod.build(other)["uid"] == mod.UID


# ------------------------------------------------------------------ linter rules

def test_lint_every_dashboard():
    problems = []
    for rel, model in committed().items():
        problems += [f"{rel}: {p}" for p in lint(model)]
    assert not problems, "\n".join(problems)


def test_every_panel_datasource_is_the_variable_or_a_provisioned_uid(models):
    for name, model in models.items():
        for p in panels(model):
            if p.get("type") == "row":
                continue
            for ref in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets") or []]:
                if not ref:
                    continue
                assert ref.get("uid") in PROVISIONED_UIDS | {"${datasource}"}, \
                    f"{name}: panel {p.get('title')!r} uses datasource {ref}"


def test_variables(models):
    for name, model in models.items():
        variables = {v["name"]: v for v in model["templating"]["list"]}
        ds = variables.get("datasource")
        assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", name
        for v in variables.values():
            if v["name"] in ("service", "region", "instance"):
                assert v.get("multi") and v.get("includeAll"), f"{name}: ${v['name']} must be multi-select"


def test_every_panel_query_is_valid_promql(models, tmp_path):
    """Each query, with the Grafana variables expanded, is written as a recording rule: promtool
    parses them all (no server needed)."""
    rules = []
    for name, model in models.items():
        for i, expr in enumerate(panel_queries(model)):
            rules.append({"record": f"dashboard_query:{name}:q{i}", "expr": expand_variables(expr)})
    assert rules
    f = tmp_path / "queries.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))
    r = subprocess.run([binary("promtool"), "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ helpers

def test_panel_queries_collects_nested_and_skips_other_datasources():
    model = {"panels": [
        {"type": "row", "panels": [{"type": "timeseries", "targets": [{"expr": "up", "refId": "A"}]}]},
        {"type": "table", "datasource": {"type": "grafana-postgresql-datasource", "uid": "postgres"},
         "targets": [{"rawSql": "select 1", "refId": "A"}]},
        {"type": "stat", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "targets": [{"expr": "sum(rate(x_total[$__rate_interval]))", "refId": "A"}, {"expr": "", "refId": "B"}]},
    ]}
    assert panel_queries(model) == ["up", "sum(rate(x_total[$__rate_interval]))"]


def test_counter_rule():
    assert counter_problems('sum(rate(a_total{code=~"5.."}[$__rate_interval]))') == []
    assert counter_problems("sum(increase(h_bucket[$__rate_interval])) by (le)") == []
    assert counter_problems("service:a_total:rate5m") == []
    assert counter_problems("a_total") and counter_problems("rate(a_total[5m])")
    assert counter_problems("rate(a_total[$__rate_interval]) / a_total")


def test_expand_variables():
    e = expand_variables('rate(x{service=~"$service",region=~"${region}"}[$__rate_interval])', {"service": "a|b"})
    assert e == 'rate(x{service=~"a|b",region=~".*"}[1m])'


# ------------------------------------------------------------------ Operations Overview

def _by_title(model: dict) -> dict[str, dict]:
    return {p["title"]: p for p in panels(model)}


def _steps(p: dict) -> list:
    return [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_operations_overview_rows_and_variables(models):
    m = models["operations_overview"]
    rows = [p["title"] for p in m["panels"] if p["type"] == "row"]
    assert rows == ["System health", "Real-time performance", "Regional performance", "User activity",
                    "Active alerts", "SLO error budget"]
    assert [v["name"] for v in m["templating"]["list"]] == ["datasource", "service", "region"]
    assert m["editable"] is False


def test_operations_overview_thresholds_follow_the_alert_config():
    from dashboards import operations_overview

    cfg = defaults()
    a = cfg["alerts"]
    t = _by_title(operations_overview.build(cfg))
    assert _steps(t["API p95 latency by service"]) == [None, a["latency"]["p95_seconds"]]
    assert _steps(t["30-day uptime"]) == [None, a["slo"]["availability"]]
    assert _steps(t["Service memory vs limit"]) == [None, a["service"]["memory_ratio"]]
    assert _steps(t["Availability by region"]) == [None, 1 - a["errors"]["ratio"], a["slo"]["availability"]]

    changed = copy.deepcopy(cfg)
    changed["alerts"]["latency"]["p95_seconds"] = 0.35
    changed["alerts"]["slo"]["availability"] = 0.995
    t = _by_title(operations_overview.build(changed))
    assert _steps(t["API p95 latency by service"]) == [None, 0.35]
    assert _steps(t["30-day uptime"]) == [None, 0.995]
    assert "/ 0.005" in t["Burn rate (1 hour)"]["targets"][0]["expr"]


def test_operations_overview_shows_db_time_only_with_the_db_exporter_and_no_fake_cdn():
    from dashboards import operations_overview

    on = _by_title(operations_overview.build(defaults()))
    off = _by_title(operations_overview.build(load_data({"exporters": {"db": {"enabled": False}}})))
    assert ("DB mean query time" in on) == bool(defaults()["exporters"]["db"]["enabled"])
    assert "DB mean query time" not in off
    for model in (on, off):
        assert not any("cdn" in q.lower() for q in panel_queries({"panels": list(model.values())}))


def test_operations_overview_uses_the_recording_rules_that_exist():
    """Every recording-rule name a panel uses is produced by alert_rules/*.yml."""
    import re

    from alert_rules import build

    recorded = {r["record"] for _, _, r in build.all_rules(defaults()) if "record" in r}
    from dashboards import operations_overview

    for expr in panel_queries(operations_overview.build(defaults())):
        for name in re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", expr):
            assert name in recorded, f"{name} is not a recording rule"


def test_panels_fit_the_grid_and_do_not_overlap(models):
    for name, model in models.items():
        cells = {}
        for p in model["panels"]:  # top-level panels and rows (collapsed rows keep theirs inside)
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{name}: {p.get('title')!r} exceeds 24 columns"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {p.get('title')!r} overlaps {cells[(x, y)]!r}"
                    cells[(x, y)] = p.get("title")
