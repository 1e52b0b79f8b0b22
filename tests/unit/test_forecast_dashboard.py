"""dashboards/predictive.py: committed JSON, lint rules, thresholds from the alert config."""
from __future__ import annotations

import json
from pathlib import Path

from dashboards import predictive
from dashboards.common import lint, panel_queries, panels
from dashboards.registry import DASHBOARDS
from core.config import defaults

ROOT = Path(__file__).resolve().parents[2]


def test_committed_json_matches_the_code():
    m = predictive.build(defaults())
    p = ROOT / "dashboards" / "json" / "predictive" / f"{predictive.UID}.json"
    assert p.read_text() == json.dumps(m, indent=2, sort_keys=True) + "\n", "run `opsstack dashboards generate`"
    assert DASHBOARDS["predictive"] == "Predictive"


def test_lint_clean_and_future_time_range():
    m = predictive.build(defaults())
    assert lint(m) == []
    assert m["time"]["to"].startswith("now+")
    assert all("opsstack_forecast_" in q for q in panel_queries(m))
    sql = [t["rawSql"] for p in panels(m) for t in p.get("targets") or [] if "rawSql" in t]
    assert any("forecast_points" in s for s in sql) and any("forecast_crossings" in s for s in sql)
