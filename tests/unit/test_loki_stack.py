"""Grafana Loki in the stack, checked without starting it (no Grafana Loki binary can be
installed here: docs/logs.md): detection, `logs.loki` resolution, the rendered loki.yml and
ruler rules, the launcher's program and the shipping environment, the committed docker files,
the runbooks, the schema checks."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

from alert_rules import logs as log_rules
from core import logship
from core.config import ConfigError, defaults, load_data
from stack import loki_config, runtime
from stack.launcher import Stack

ROOT = Path(__file__).resolve().parents[2]


def fake_binary(tmp_path: Path, name: str, says: str) -> str:
    """A stand-in executable whose `-version` answer is `says` (only what detection reads)."""
    p = tmp_path / name
    p.write_text(f"#!/bin/sh\necho '{says}'\n")
    p.chmod(0o755)
    return str(p)


def resolved(tmp_path, **logs):
    cfg = load_data({"stack": {"run_dir": str(tmp_path / ".run")}, "logs": logs})
    return cfg, runtime.resolve(cfg)


def test_only_grafana_loki_is_taken_for_loki(tmp_path):
    grafana = fake_binary(tmp_path, "loki", "loki, version 3.4.2 (branch: HEAD, revision: abc)")
    genetics = fake_binary(tmp_path, "loki-genetics", "Loki 2.4.7: MCMC linkage analysis")
    assert loki_config.find_loki(load_data({"logs": {"loki_binary": grafana}})) == grafana
    assert loki_config.find_loki(load_data({"logs": {"loki_binary": genetics}})) is None
    assert loki_config.find_loki(load_data({"logs": {"loki_binary": str(tmp_path / "none")}})) is None


def test_auto_resolves_to_off_without_a_binary_and_the_stack_has_no_loki(tmp_path):
    _, r = resolved(tmp_path, loki_binary=str(tmp_path / "missing"))
    assert r["logs"]["loki"] == "off" and "loki" not in r["runtime"]["urls"]
    progs = Stack(r).programs(r)
    assert "loki" not in {p.name for p in progs}
    assert not any(logship.ENV_URL in p.env for p in progs)


def test_loki_on_runs_first_and_every_opsstack_program_ships_to_it(tmp_path):
    binary = fake_binary(tmp_path, "loki", "loki, version 3.4.2")
    _, r = resolved(tmp_path, loki_binary=binary)
    assert r["logs"]["loki"] == "on"
    host, port = r["stack"]["host"], r["stack"]["ports"]["loki"]
    assert r["runtime"]["urls"]["loki"] == f"http://{host}:{port}"
    st = Stack(r)
    progs = {p.name: p for p in st.programs(r)}
    loki = progs["loki"]
    assert loki.command == [binary, f"-config.file={tmp_path / '.run' / 'loki.yml'}"]
    assert loki.stage == 1 and loki.ready_url == f"http://{host}:{port}/ready"
    assert progs["demo-user-app"].env[logship.ENV_LABELS] == "component=demo;service=user-app"
    assert progs["receiver"].env[logship.ENV_LABELS] == "component=receiver;service=opsstack"
    assert progs["receiver"].env[logship.ENV_URL] == f"http://{host}:{port}"
    assert logship.ENV_URL not in progs["prometheus"].env  # not an opsstack program
    assert logship.parse_labels(progs["demo-user-app"].env[logship.ENV_LABELS]) == {
        "component": "demo", "service": "user-app"}
    # supervisord.conf carries the labels (a ';' inside a quoted value) and the rendered files exist
    st.render(r, list(progs.values()))
    cp = configparser.RawConfigParser()
    cp.read_string((tmp_path / ".run" / "supervisord.conf").read_text())
    assert 'OPSSTACK_LOG_LABELS="component=demo;service=user-app"' in cp["program:demo-user-app"]["environment"]
    conf = yaml.safe_load((tmp_path / ".run" / "loki.yml").read_text())
    assert conf["server"]["http_listen_port"] == port and conf["server"]["http_listen_address"] == host
    assert conf["common"]["path_prefix"] == str(tmp_path / ".run" / "loki")
    assert conf["limits_config"]["retention_period"] == "168h" and conf["compactor"]["retention_enabled"]
    assert conf["ruler"]["alertmanager_url"] == r["runtime"]["urls"]["alertmanager"]
    rules = yaml.safe_load((tmp_path / ".run" / "loki-rules" / "fake" / "logs.yml").read_text())
    assert {x["alert"] for g in rules["groups"] for x in g["rules"]} == {
        "LogErrorSurge", "LogPanicOrTraceback", "LogsAbsent"}


def test_logs_off_or_no_shipping(tmp_path):
    binary = fake_binary(tmp_path, "loki", "loki, version 3.4.2")
    _, r = resolved(tmp_path, loki_binary=binary, ship=False)
    progs = {p.name: p for p in Stack(r).programs(r)}
    assert "loki" in progs and not any(logship.ENV_URL in p.env for p in progs.values())
    _, r = resolved(tmp_path, loki_binary=binary, loki="off")
    assert "loki" not in {p.name for p in Stack(r).programs(r)}


def test_retention_must_be_whole_days():
    with pytest.raises(ConfigError, match="logs.retention"):
        load_data({"logs": {"retention": "36h"}})
    assert load_data({"logs": {"retention": "14d"}})["logs"]["retention"] == 14 * 86400


def test_rules_have_the_conventions_and_runbooks():
    cfg = defaults()
    groups = log_rules.groups(cfg, log_rules.components_of(cfg))
    alerts = [x for g in groups for x in g["rules"]]
    for a in alerts:
        assert {"severity", "tier", "service", "team"} <= set(a["labels"])
        assert a["annotations"]["runbook_url"].endswith(f"/{a['alert']}.md")
        assert (ROOT / "docs" / "runbooks" / f"{a['alert']}.md").exists()
    surge = next(a for a in alerts if a["alert"] == "LogErrorSurge")["expr"]
    assert "[1h] offset 5m" in surge and ">= 20" in surge and "unless" in surge
    assert 'service!="opsstack"' in surge  # the stack's own errors are other alerts' business
    absent = next(a for a in alerts if a["alert"] == "LogsAbsent")["expr"]
    assert absent.count("absent_over_time(") == len(log_rules.components_of(cfg))
    # only bounded labels in any selector
    for a in alerts:
        for name in re.findall(r"[{,]\s*([a-z_]+)\s*[=!]~?", a["expr"]):
            assert name in ("service", "component", "level", "region"), (a["alert"], name)


def test_two_teams_split_the_surge_rule():
    cfg = load_data({"platform": {"services": [{"name": "a", "team": "x"}, {"name": "b", "team": "y"}]}})
    surges = [x for g in log_rules.groups(cfg, []) for x in g["rules"] if x["alert"] == "LogErrorSurge"]
    assert [s["labels"]["team"] for s in surges] == ["x", "y"] and 'service=~"a"' in surges[0]["expr"]


def test_committed_docker_files_are_the_rendering():
    for path, text in loki_config.render_committed().items():
        assert path.read_text() == text, f"{path} is stale: python -m stack.loki_config"
    conf = yaml.safe_load(loki_config.COMMITTED_CONFIG.read_text())
    assert conf["ruler"]["alertmanager_url"] == "http://alertmanager:9093"
    assert conf["ruler"]["storage"]["local"]["directory"] == "/etc/loki/rules"


def test_compose_pins_the_loki_image_and_mounts_the_committed_files():
    svc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["loki"]
    assert svc["image"] == loki_config.IMAGE
    assert "./provisioning/loki/loki.yml:/etc/loki/loki.yml:ro" in svc["volumes"]
    assert "./provisioning/loki/rules:/etc/loki/rules:ro" in svc["volumes"]


def test_loki_on_without_a_binary_says_what_to_do(tmp_path):
    from core.procs import MissingBinary

    cfg = load_data({"stack": {"run_dir": str(tmp_path / ".run")},
                     "logs": {"loki": "on", "loki_binary": str(tmp_path / "none")}})
    r = runtime.resolve(cfg)
    assert r["logs"]["loki"] == "on"
    with pytest.raises(MissingBinary, match="no Grafana Loki binary"):
        Stack(r).programs(r)
