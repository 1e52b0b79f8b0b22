"""The Prometheus rule files: promtool, the conventions, and that code == committed YAML.

Generic over every domain registered in alert_rules/build.py DOMAINS: a new domain is
checked as soon as it is registered (its <domain>.yml, tests/<domain>_test.yml, runbooks).
"""
from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from alert_rules import build
from alert_rules.common import runbook_base
from core.config import defaults, load_data
from core.procs import binary

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "alert_rules"
TESTS_DIR = RULES_DIR / "tests"
RUNBOOKS = ROOT / "docs" / "runbooks"
REQUIRED_LABELS = ("severity", "tier", "service", "team")
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")
NAME = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*$")


def promtool() -> str:
    try:
        return binary("promtool")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"promtool not installed (make deps): {exc}")


def committed_docs() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in build.committed_files()}


def alerts() -> list[tuple[str, dict, dict]]:
    out = []
    for fname, doc in committed_docs().items():
        for g in doc.get("groups") or []:
            for r in g["rules"]:
                if "alert" in r:
                    out.append((fname, g, r))
    return out


def recording_rules() -> list[str]:
    return sorted({r["record"] for doc in committed_docs().values()
                   for g in doc.get("groups") or [] for r in g["rules"] if "record" in r})


def promtool_test_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*_test.yml"))


# ------------------------------------------------------------------ generated == committed

def test_committed_rule_files_match_the_code():
    rendered = build.render(defaults())
    for fname, text in rendered.items():
        p = RULES_DIR / fname
        assert p.exists(), f"{p} missing: run `opsstack rules render`"
        assert p.read_text() == text, f"{fname} differs from the code: run `opsstack rules render`"


def test_every_domain_has_a_promtool_test_file():
    for name in build.DOMAINS:
        assert (TESTS_DIR / f"{name}_test.yml").exists(), f"alert_rules/tests/{name}_test.yml missing"


# ------------------------------------------------------------------ promtool

def test_promtool_check_rules():
    files = [str(p) for p in build.committed_files()]
    r = subprocess.run([promtool(), "check", "rules", *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules():
    files = [p.name for p in promtool_test_files()]
    assert files
    r = subprocess.run([promtool(), "test", "rules", *files], cwd=TESTS_DIR,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rules_rendered_from_a_non_default_config_are_valid(tmp_path):
    """Several teams, per-region latency thresholds and no Watchdog still give valid rules."""
    cfg = load_data({
        "platform": {"services": [{"name": "user-app", "team": "mobile"},
                                  {"name": "gate-management", "team": "gates"},
                                  {"name": "event-management", "team": "gates"}]},
        "alerts": {"watchdog": False,
                   "latency": {"p95_seconds": 0.25, "p95_seconds_by_region": {"singapore": 0.4}}},
    })
    paths = build.write(cfg, tmp_path)
    r = subprocess.run([promtool(), "check", "rules", *map(str, paths)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = [r for _, _, r in build.all_rules(cfg) if "alert" in r]
    assert "Watchdog" not in {r["alert"] for r in rules}
    teams = {r["labels"]["team"] for r in rules if r["alert"] == "ServiceDown"}
    assert teams == {"mobile", "gates"}
    latency = next(r for r in rules if r["alert"] == "ServiceLatencyHigh" and r["labels"]["team"] == "gates")
    assert 'region="singapore"' in latency["expr"] and "> 0.4" in latency["expr"] and "> 0.25" in latency["expr"]


# ------------------------------------------------------------------ conventions

def test_every_alert_follows_the_conventions():
    problems = []
    base = runbook_base(defaults())
    for fname, g, r in alerts():
        name = r["alert"]
        where = f"{fname}: {name}"
        if not NAME.match(name) or len(name) > 40:
            problems.append(f"{where}: name must be CamelCase and <= 40 characters")
        labels = r.get("labels") or {}
        for key in REQUIRED_LABELS:
            if not str(labels.get(key, "")).strip():
                problems.append(f"{where}: label {key} missing")
        if labels.get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{where}: severity {labels.get('severity')!r} not critical|warning|info")
        if str(labels.get("tier")) not in ("1", "2", "3"):
            problems.append(f"{where}: tier {labels.get('tier')!r} not 1|2|3")
        ann = r.get("annotations") or {}
        for key in REQUIRED_ANNOTATIONS:
            if not str(ann.get(key, "")).strip():
                problems.append(f"{where}: annotation {key} missing")
        summary = ann.get("summary", "")
        if "{{" in summary or not summary[:1].isupper() or not summary.endswith("."):
            problems.append(f"{where}: summary must be static, start with a capital, end with '.'")
        if "$labels" not in ann.get("description", "") and "$value" not in ann.get("description", ""):
            problems.append(f"{where}: description must be templated with $labels/$value")
        if ann.get("runbook_url") != f"{base}/{name}.md":
            problems.append(f"{where}: runbook_url must be {base}/{name}.md")
        if not (RUNBOOKS / f"{name}.md").exists():
            problems.append(f"{where}: docs/runbooks/{name}.md missing")
    assert not problems, "\n".join(problems)


def test_groups_are_small_and_uniquely_named():
    seen = {}
    for fname, doc in committed_docs().items():
        for g in doc.get("groups") or []:
            assert len(g["rules"]) <= 20, f"{fname}: group {g['name']} has {len(g['rules'])} rules (max 20)"
            assert g["name"] not in seen, f"group {g['name']} in {fname} and {seen[g['name']]}"
            seen[g["name"]] = fname


def test_runbooks_say_what_to_check_and_what_remediation_does():
    for name in {r["alert"] for _, _, r in alerts()}:
        path = RUNBOOKS / f"{name}.md"
        if not path.exists():
            continue  # test_every_alert_follows_the_conventions reports it
        text = path.read_text()
        assert text.startswith(f"# {name}"), f"{name}.md must start with '# {name}'"
        assert "## What to check" in text, f"{name}.md: no 'What to check' section"
        assert "## Automatic remediation" in text, f"{name}.md: no 'Automatic remediation' section"


# ------------------------------------------------------------------ test coverage

def _always_firing(rule: dict) -> bool:
    return rule["expr"].strip() in ("vector(1)", "1")


def _cases() -> tuple[dict, dict, set]:
    firing, quiet = defaultdict(list), defaultdict(list)
    exprs: set[str] = set()
    for p in promtool_test_files():
        doc = yaml.safe_load(p.read_text())
        for t in doc.get("tests") or []:
            for case in t.get("alert_rule_test") or []:
                target = firing if case.get("exp_alerts") else quiet
                target[case["alertname"]].append(f"{p.name}: {t.get('name')}")
            for case in t.get("promql_expr_test") or []:
                exprs.add(case["expr"])
    return firing, quiet, exprs


def test_every_alert_has_a_firing_and_a_quiet_promtool_case():
    firing, quiet, _ = _cases()
    missing = []
    for fname, _, r in alerts():
        name = r["alert"]
        if name not in firing:
            missing.append(f"{name} ({fname}): no alert_rule_test where it fires")
        if name not in quiet and not _always_firing(r):
            missing.append(f"{name} ({fname}): no alert_rule_test where it stays quiet")
    assert not missing, "\n".join(missing)


def test_every_recording_rule_has_a_promql_expr_test():
    _, _, exprs = _cases()
    used = " ".join(exprs)
    missing = [name for name in recording_rules()
               if not re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", used)]
    assert not missing, "recording rules without a promql_expr_test: " + ", ".join(missing)


def test_promtool_test_files_load_the_rendered_rule_files():
    committed = {p.name for p in build.committed_files()}
    for p in promtool_test_files():
        doc = yaml.safe_load(p.read_text())
        for f in doc.get("rule_files") or []:
            assert Path(f).name in committed and (TESTS_DIR / f).resolve().exists(), \
                f"{p.name}: rule file {f} is not one of the rendered alert_rules/*.yml"


def test_a_short_rate_window_gives_alerts_that_fire_and_clear_fast(tmp_path):
    """alerts.rate_window changes the threshold alerts' windows (inline rates, not the 5m records)."""
    cfg = load_data({"alerts": {"rate_window": "30s", "errors": {"for": "0s"}}})
    paths = build.write(cfg, tmp_path)
    r = subprocess.run([promtool(), "check", "rules", *map(str, paths)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    err = next(r for _, _, r in build.all_rules(cfg) if r.get("alert") == "ServiceErrorRatioHigh")
    assert "[30s]" in err["expr"] and "rate5m" not in err["expr"]
    # 10 req/s; 100% errors from 2m to 3m: fires inside the burst, quiet 1m after it
    ok = "0+150x8 1200+0x4 1200+150x12"      # 15s steps: counter pauses during the burst
    bad = "0+0x8 0+150x4 600+0x12"
    sel = 'job="platform",instance="u:8080",service="user-app",region="seoul",route="/api"'
    test = {
        "rule_files": [str(tmp_path / "platform.yml")],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [
                {"series": f'opsstack_http_requests_total{{{sel},code="200"}}', "values": ok},
                {"series": f'opsstack_http_requests_total{{{sel},code="500"}}', "values": bad},
            ],
            "alert_rule_test": [
                {"eval_time": "1m30s", "alertname": "ServiceErrorRatioHigh", "exp_alerts": []},
                {"eval_time": "2m45s", "alertname": "ServiceErrorRatioHigh", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "tier": "1", "service": "user-app",
                                   "team": "ops", "region": "seoul"},
                    "exp_annotations": err["annotations"] | {
                        "description": "100% of the requests to user-app in seoul answer 5xx (threshold 5%)."},
                }]},
                {"eval_time": "4m30s", "alertname": "ServiceErrorRatioHigh", "exp_alerts": []},
            ],
        }],
    }
    tf = tmp_path / "short_window_test.yml"
    tf.write_text(yaml.safe_dump(test))
    r = subprocess.run([promtool(), "test", "rules", str(tf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cdn_and_security_thresholds_come_from_the_config(tmp_path):
    """alerts.cdn / alerts.security and the exporters' own keys (hit target, TLS days, RPO) reach the
    rendered rules; an unknown CDN region is a config error naming the key."""
    from core.spec import ConfigError

    cfg = load_data({
        "alerts": {"cdn": {"error_ratio": 0.02, "latency": {"p95_seconds": 0.3, "p95_seconds_by_region": {"other": 0.9}}},
                   "security": {"waf_blocked_rate": 5, "replica_lag_for": "3m"}},
        "exporters": {"cdn": {"hit_target": 0.8},
                      "security": {"tls": {"warning_before": "21d", "critical_before": "3d"},
                                   "backup": {"rpo": "10m"}}},
    })
    paths = build.write(cfg, tmp_path)
    r = subprocess.run([promtool(), "check", "rules", *map(str, paths)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = {}
    for _, _, rule in build.all_rules(cfg):
        if "alert" in rule:
            rules.setdefault(rule["alert"], []).append(rule)
    assert "< 0.8" in rules["CdnCacheHitRatioLow"][0]["expr"]
    assert "> 0.02" in rules["CdnErrorRateHigh"][0]["expr"]
    lat = rules["CdnLatencyHigh"][0]["expr"]
    assert 'region!~"other"' in lat and "> 0.3" in lat and 'region="other"' in lat and "> 0.9" in lat
    assert "> 5" in rules["WafAttackSurge"][0]["expr"]
    tls = {r_["labels"]["severity"]: r_["expr"] for r_ in rules["TlsCertExpiringSoon"]}
    assert "< 1814400" in tls["warning"] and ">= 259200" in tls["warning"] and "< 259200" in tls["critical"]
    [lag] = rules["ReplicaLagHigh"]
    assert "> 600" in lag["expr"] and lag["for"] == "3m"
    with pytest.raises(ConfigError, match="alerts.cdn.latency.p95_seconds_by_region.mars"):
        load_data({"alerts": {"cdn": {"latency": {"p95_seconds_by_region": {"mars": 0.5}}}}})
    with pytest.raises(ConfigError, match="p95_seconds_by_region.europe"):
        load_data({"alerts": {"cdn": {"latency": {"p95_seconds_by_region": {"europe": 0}}}}})
    # exporters off: no rules of theirs
    off = load_data({"exporters": {"cdn": {"enabled": False}, "security": {"enabled": False}}})
    names = {r_["alert"] for _, _, r_ in build.all_rules(off) if "alert" in r_}
    assert not names & {"CdnCacheHitRatioLow", "OriginOverloaded", "TlsCertExpiringSoon", "BackupStale"}
