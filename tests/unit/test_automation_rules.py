"""Automation alerts and board (alert_rules/automation.py, dashboards/automation.py): thresholds from
`alerts.automation` reach both, the per-DAG SLAs are validated, and the exporter-absence rule exists
only when the exporter runs (promtool evaluates it on a rendering of that config)."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from alert_rules import automation as rules
from alert_rules import build
from core.config import defaults, load_data
from core.procs import binary
from core.spec import ConfigError
from dashboards import automation as board
from dashboards.common import panels


def _rules(cfg: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for g in rules.groups(cfg):
        for r in g["rules"]:
            out.setdefault(r["alert"], []).append(r)
    return out


def _by_title(model: dict) -> dict[str, dict]:
    return {p["title"]: p for p in panels(model)}


def _steps(p: dict) -> list:
    return [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_thresholds_come_from_the_config_and_reach_rules_and_board():
    cfg = load_data({"alerts": {"automation": {
        "error_ratio": 0.01, "min_runs": 50, "workflow_sla": "2h",
        "workflow_sla_by_dag": {"event_creation": "30h", "nightly.report": "3h"},
        "approval_sla": {"manager": "2h"}, "rate_target": 0.9, "processing_target": "10m"}}})
    r = _rules(cfg)
    err = r["WorkflowErrorRateHigh"][0]["expr"]
    assert "> 0.01" in err and ">= 50" in err and 'state=~"success|failed"' in err
    run, approval = r["WorkflowStuck"]
    assert run["labels"]["kind"] == "run" and approval["labels"]["kind"] == "approval"
    assert 'dag_id!="event_creation",dag_id!="nightly.report"} > 7200' in run["expr"]
    assert 'dag_id="event_creation"} > 108000' in run["expr"] and 'dag_id="nightly.report"} > 10800' in run["expr"]
    assert 'tier="manager"} > 7200' in approval["expr"] and 'tier="executive"} > 86400' in approval["expr"]
    assert "< 0.9" in r["AutomationRateLow"][0]["expr"]

    t = _by_title(board.build(cfg))
    assert _steps(t["Error rate (target ≤ 1.0%)"]) == [None, 0.01]
    assert _steps(t["Automation rate (target ≥ 90%)"]) == [None, 0.9]
    assert _steps(t["Average processing time (target ≤ 10m)"]) == [None, 600]
    assert _steps(t["Run success ratio per DAG"]) == [None, 0.99]
    age = t["Oldest running run vs its SLA"]["targets"][0]["expr"]
    assert "/ 7200" in age and 'dag_id="nightly.report"} / 10800' in age
    assert 'tier="manager"} / 7200' in t["Oldest pending approval vs its tier's SLA"]["targets"][0]["expr"]
    # the defaults: the seed's targets
    t = _by_title(board.build(defaults()))
    assert _steps(t["Error rate (target ≤ 0.5%)"]) == [None, 0.005]
    assert _steps(t["Automation rate (target ≥ 80%)"]) == [None, 0.8]
    assert _steps(t["Average processing time (target ≤ 15m)"]) == [None, 900]
    assert _steps(t["Alert to first action (target < 5m)"]) == [None, 300]


def test_board_rows_and_dag_variable():
    m = board.build(defaults())
    assert [p["title"] for p in m["panels"] if p["type"] == "row"] == [
        "At a glance", "Workflows", "Approvals", "Response and automation rate", "Airflow health"]
    dag = {v["name"]: v for v in m["templating"]["list"]}["dag"]
    assert dag["query"] == "label_values(opsstack_automation_dag_runs, dag_id)" and dag["multi"]


@pytest.mark.parametrize("value, problem", [
    ({"bad dag": "1h"}, "not a DAG id"),
    ({'x"}) or vector(1': "1h"}, "not a DAG id"),
    ({"event_creation": "30s"}, "at least 1m"),
    ({"event_creation": "soon"}, "expected a duration"),
])
def test_per_dag_slas_are_checked(value, problem):
    with pytest.raises(ConfigError, match=r"alerts\.automation\.workflow_sla_by_dag") as exc:
        load_data({"alerts": {"automation": {"workflow_sla_by_dag": value}}})
    assert problem in str(exc.value)


def test_absence_rule_only_when_the_exporter_runs(tmp_path):
    assert not rules.exporter_enabled(defaults())
    assert len(_rules(defaults())["AirflowSchedulerDown"]) == 1
    cfg = load_data({"exporters": {"automation": {"enabled": True}}})
    assert rules.exporter_enabled(cfg)
    down = _rules(cfg)["AirflowSchedulerDown"]
    assert len(down) == 2 and down[1]["expr"] == 'absent(opsstack_automation_up{source="airflow"})'
    assert down[1]["labels"]["component"] == "exporter" and down[1]["for"] == "1m"

    paths = build.write(cfg, tmp_path)
    promtool = binary("promtool")
    r = subprocess.run([promtool, "check", "rules", *map(str, paths)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    sel = 'job="opsstack_automation",instance="127.0.0.1:9210",source="airflow"'
    test = {
        "rule_files": [str(tmp_path / "automation.yml")],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            # scraped for 5m, then gone (exporter stopped, or no longer scraped)
            "input_series": [{"series": f"opsstack_automation_up{{{sel}}}", "values": "1x20"}],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "AirflowSchedulerDown", "exp_alerts": []},
                {"eval_time": "12m", "alertname": "AirflowSchedulerDown", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "tier": "2", "service": "automation", "team": "ops",
                                   "component": "exporter", "source": "airflow"},
                    "exp_annotations": down[1]["annotations"] | {
                        "description": "No opsstack_automation_up series (value 1): the automation exporter is "
                                       "enabled but Prometheus does not get its metrics, so Airflow is not watched."},
                }]},
            ],
        }],
    }
    tf = tmp_path / "absent_test.yml"
    tf.write_text(yaml.safe_dump(test))
    r = subprocess.run([promtool, "test", "rules", str(tf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_board_and_rules_use_only_metrics_the_exporter_documents():
    """Every opsstack_automation_ series a panel or a rule names is in the exporter's metric table
    (docs/automation.md, "Exporter" / "Metrics", where `_x` stands for opsstack_automation_x)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "automation.md").read_text()
    table = doc[doc.index("### Metrics"):]
    table = table[:table.index("\n## ")]
    known = {"opsstack_automation" + m for m in re.findall(r"`(_[a-z0-9_]+)`", table)}
    from dashboards.common import panel_queries

    exprs = panel_queries(board.build(defaults()))
    exprs += [r["expr"] for g in rules.groups(load_data({"exporters": {"automation": {"enabled": True}}}))
              for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"(?<![\w:])(opsstack_automation_[a-z0-9_]+)", e)}
    assert len(used) > 15
    assert used <= known, f"not in docs/automation.md: {sorted(used - known)}"
