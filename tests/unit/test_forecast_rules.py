"""alert_rules/forecast.yml: rendered from code, conventions, runbooks, promtool tests."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from alert_rules import build
from alert_rules.forecast import groups
from core.config import defaults
from core.procs import binary

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alert_rules" / "forecast.yml"
ALERTS = {"DiskWillFillSoon", "MemoryLeakOomPredicted", "CpuLimitLikely", "DbStorageCapacity",
          "BandwidthCapacity", "LatencyTrendRising", "ForecasterStale"}


def test_committed_rules_match_the_code():
    text = "# Generated from alert_rules/forecast.py by `opsstack rules render`; do not edit.\n" + \
        build.dump({"groups": groups(defaults())})
    assert RULES.read_text() == text, "run `opsstack rules render`"
    assert "forecast" in build.DOMAINS


def test_every_alert_follows_the_conventions():
    seen = set()
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        assert len(g["rules"]) <= 20
        for r in g["rules"]:
            name = r["alert"]
            seen.add(name)
            assert len(name) <= 40 and re.match(r"^[A-Z][A-Za-z]+$", name)
            assert r["labels"]["severity"] in ("info", "warning", "critical")
            assert r["labels"]["tier"] in ("1", "2", "3")
            assert r["labels"]["service"] and r["labels"]["team"]
            a = r["annotations"]
            assert a["summary"][0].isupper() and a["summary"].endswith(".") and "$" not in a["summary"]
            assert "$labels" in a["description"] and "$value" in a["description"]
            assert a["runbook_url"].endswith(f"/{name}.md")
            assert (ROOT / "docs" / "runbooks" / f"{name}.md").exists()
            assert r.get("for")
    assert seen == ALERTS


def test_promtool_check_and_unit_tests_pass():
    promtool = binary("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # the promtool unit tests (forecast_test.yml) run in tests/unit/test_rules.py's one
    # `promtool test rules` over every alert_rules/tests/*_test.yml (one promtool start, not two)
    assert (ROOT / "alert_rules" / "tests" / "forecast_test.yml").is_file()


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = yaml.safe_load((ROOT / "alert_rules" / "tests" / "forecast_test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == ALERTS and quiet == ALERTS
