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
from dashboards import operations_overview
from dashboards.common import counter_problems, expand_variables, lint, panel_queries, panels
from dashboards.registry import DASHBOARDS
from core.config import defaults, load_data
from core.procs import binary

PROVISIONED_UIDS = {"prometheus", "alertmanager", "postgres", "loki"}


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
                    "Active alerts", "Security status", "SLO error budget", "Scaling", "Logs"]
    assert [v["name"] for v in m["templating"]["list"]] == ["datasource", "service", "region"]
    assert m["editable"] is False


def test_operations_overview_logs_row_uses_loki_with_bounded_labels(models):
    from dashboards.common import logql_queries

    qs = logql_queries(models["operations_overview"])
    assert len(qs) == 2 and all("$service" in q for q in qs)
    assert 'count_over_time({level=~"error|critical",service=~"$service"}' in qs[0]
    # a stream selector needs one matcher that cannot match the empty string, whatever $service is
    assert all('level=~"error|critical"' in q or 'level=~".+"' in q for q in qs)


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


def test_operations_overview_shows_db_time_only_with_the_db_exporter():
    from dashboards import operations_overview

    on = _by_title(operations_overview.build(defaults()))
    off = _by_title(operations_overview.build(load_data({"exporters": {"db": {"enabled": False}}})))
    assert ("DB mean query time" in on) == bool(defaults()["exporters"]["db"]["enabled"])
    assert "DB mean query time" not in off


def test_operations_overview_cdn_and_security_panels_follow_their_exporters():
    """The CDN response-time panel and the security-status row read the CDN and security exporters'
    real series, with the alert thresholds; with the exporter off they are not there at all."""
    from dashboards import operations_overview

    cfg = defaults()
    on = operations_overview.build(cfg)
    t = _by_title(on)
    cdn = t["CDN edge response time by region"]
    assert "opsstack_cdn_edge_response_quantile_seconds" in cdn["targets"][0]["expr"]
    assert _steps(cdn) == [None, cfg["alerts"]["cdn"]["latency"]["p95_seconds"]]
    assert _steps(t["Backup age"]) == [None, cfg["alerts"]["security"]["backup_max_age"]]
    assert _steps(t["TLS: fewest days left"]) == [None, 7, 30]
    assert "opsstack_waf_blocked_requests_total" in t["Threats blocked"]["targets"][0]["expr"]
    assert 'status=~"401|403|429"' in t["Access denied"]["targets"][0]["expr"]

    off = operations_overview.build(load_data({"exporters": {"cdn": {"enabled": False},
                                                             "security": {"enabled": False}}}))
    rows = [p["title"] for p in off["panels"] if p["type"] == "row"]
    assert "Security status" not in rows
    queries = " ".join(panel_queries(off)).lower()
    assert "cdn" not in queries and "opsstack_tls" not in queries and "opsstack_backup" not in queries


def test_new_boards_use_only_metrics_the_exporters_export():
    """Every opsstack_ metric a CDN & Cache, Security or Database panel names is one the exporters
    document in docs/metrics.md (counters with their _total)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    known = set(re.findall(r"`(opsstack_[a-z0-9_]+)", doc))
    known.add("opsstack_redis_keyspace_misses_total")  # documented as `.._hits_total` / `_misses_total`
    for name in ("cdn", "security", "database"):
        mod = importlib.import_module(f"dashboards.{name}")
        for expr in panel_queries(mod.build(defaults())):
            for metric in re.findall(r"(?<![\w:])(opsstack_[a-z0-9_]+)", expr):
                assert metric in known, f"{name}: {metric} is not in docs/metrics.md"


def test_cdn_board_thresholds_follow_the_alert_config():
    from dashboards import cdn

    cfg = defaults()
    t = _by_title(cdn.build(cfg))
    assert _steps(t["Edge cache hit ratio per class vs target"]) == [None, cfg["exporters"]["cdn"]["hit_target"]]
    assert _steps(t["Edge p95 time to first byte per region"]) == [None, 0.25]
    assert _steps(t["Edge 4xx / 5xx share by region"]) == [None, cfg["alerts"]["cdn"]["error_ratio"]]
    ratio = t["Edge latency vs its region's threshold"]["targets"][0]["expr"]
    assert 'label_replace(vector(0.25), "region", "asia"' in ratio
    assert 'label_replace(vector(0.6), "region", "europe"' in ratio

    changed = load_data({"alerts": {"cdn": {"latency": {"p95_seconds": 0.3,
                                                        "p95_seconds_by_region": {"europe": 0.45}}}},
                         "exporters": {"cdn": {"hit_target": 0.85}}})
    t = _by_title(cdn.build(changed))
    assert _steps(t["Edge cache hit ratio per class vs target"]) == [None, 0.85]
    assert _steps(t["Edge p95 time to first byte per region"]) == [None, 0.3]
    ratio = t["Edge latency vs its region's threshold"]["targets"][0]["expr"]
    assert 'vector(0.45), "region", "europe"' in ratio and 'vector(0.3), "region", "other"' in ratio
    assert 'vector(0.3), "region", "asia"' in ratio and 'vector(0.3), "region", "north_america"' in ratio


def test_security_board_panels_and_thresholds():
    from dashboards import security

    cfg = defaults()
    m = security.build(cfg)
    assert [p["title"] for p in m["panels"] if p["type"] == "row"] == ["TLS", "Attacks and access", "Backups"]
    t = _by_title(m)
    tls = t["TLS days left: leaf vs verified chain"]
    exprs = [q["expr"] for q in tls["targets"]]
    assert any("opsstack_tls_leaf_not_after_timestamp_seconds" in e for e in exprs)
    assert any("opsstack_tls_chain_not_after_timestamp_seconds" in e for e in exprs)
    assert _steps(tls) == [None, 7, 30]
    assert _steps(t["Backup age vs RPO"]) == [None, cfg["exporters"]["security"]["backup"]["rpo"]]
    assert _steps(t["Restore time vs RTO"])[-1] == cfg["exporters"]["security"]["backup"]["rto"]
    # a counter that has not appeared yet reads as 0 only while the logs are read, never as a bare 0
    blocked = t["Blocked requests by attack class"]["targets"][0]["expr"]
    assert 'or on () 0 * max(opsstack_security_collector_success{collector="logs"})' in blocked
    assert "vector(0)" not in " ".join(panel_queries(m))
    for title in ("fail2ban bans per jail", "401 / 403 / 429 per vhost", "Bot share per vhost",
                  "Last restore verification"):
        assert title in t


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


def test_operations_overview_scaling_row_follows_the_forecaster_and_its_band():
    cfg = defaults()
    model = operations_overview.build(cfg)
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert "Scaling" in rows
    band = [p for p in panels(model) if p["title"] == "Replica CPU against the utilisation band"][0]
    steps_ = [s["value"] for s in band["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps_ == [None, cfg["forecast"]["scaling"]["band_low"], cfg["forecast"]["scaling"]["band_high"]]
    off = load_data({"forecast": {"scaling": {"enabled": False}}})
    assert "Scaling" not in [p["title"] for p in operations_overview.build(off)["panels"] if p["type"] == "row"]
