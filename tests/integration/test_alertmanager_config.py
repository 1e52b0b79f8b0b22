"""provisioning/alertmanager: committed file == builder output; amtool check-config; routes."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from stack import alertmanager_config as amc
from core.config import defaults, load_data
from core.procs import binary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def am_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("am")
    tok = d / "receiver_token"
    tok.write_text("secret\n")
    text = amc.render(defaults(), "http://127.0.0.1:9095/webhook/alertmanager", str(tok))
    p = d / "alertmanager.yml"
    p.write_text(text)
    return p


def test_committed_file_is_the_docker_rendering():
    assert amc.COMMITTED.read_text() == amc.render_docker(), \
        "provisioning/alertmanager/alertmanager.yml is stale: run .venv/bin/python -m stack.alertmanager_config"


def test_committed_uses_bearer_file_and_send_resolved():
    doc = yaml.safe_load(amc.COMMITTED.read_text())
    for r in doc["receivers"]:
        for w in r.get("webhook_configs", []):
            assert w["url"] == amc.DOCKER_RECEIVER_URL
            assert w["send_resolved"] is True
            assert w["http_config"]["authorization"]["credentials_file"] == amc.DOCKER_TOKEN_FILE


def test_amtool_check_config(am_file):
    res = subprocess.run([binary("amtool"), "check-config", str(am_file)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


ROUTES = [
    ({"alertname": "Watchdog", "severity": "info", "tier": "3"}, "opsstack-watchdog"),
    ({"alertname": "ServiceDown", "severity": "critical", "tier": "1", "service": "user-app"}, "opsstack-critical"),
    ({"alertname": "ServiceDown", "severity": "critical", "service": "user-app"}, "opsstack-critical"),
    ({"alertname": "RegionDown", "severity": "critical", "tier": "2", "service": "x"}, "opsstack-critical-tier2"),
    ({"alertname": "PlatformDown", "severity": "critical", "tier": "3", "service": "x"}, "opsstack-critical-tier3"),
    ({"alertname": "HighLatency", "severity": "warning", "tier": "1", "service": "x"}, "opsstack-warning"),
    ({"alertname": "Budget", "severity": "warning", "tier": "2", "service": "x"}, "opsstack-warning-tier2"),
    ({"alertname": "Budget", "severity": "warning", "tier": "3", "service": "x"}, "opsstack-warning-tier3"),
    ({"alertname": "CertInfo", "severity": "info", "tier": "1", "service": "x"}, "null"),
    ({"alertname": "Unlabelled", "service": "x"}, "opsstack-warning"),
]


@pytest.mark.parametrize("labels,receiver", ROUTES, ids=[r for _, r in ROUTES])
def test_amtool_routes(am_file, labels, receiver):
    res = subprocess.run([binary("amtool"), "config", "routes", "test", f"--config.file={am_file}",
                          *[f"{k}={v}" for k, v in labels.items()]], capture_output=True, text=True)
    assert res.stdout.strip() == receiver, res.stdout + res.stderr


def test_every_receiver_has_a_route_test():
    assert {r for _, r in ROUTES} == set(amc.receiver_names())


def test_timings_come_from_config():
    cfg = load_data({"alertmanager": {"critical_group_wait": "1s", "warning_group_wait": "2s",
                                      "critical_group_interval": "3s", "watchdog_repeat_interval": "5s"}})
    doc = amc.build(cfg, "http://127.0.0.1:1/webhook/alertmanager", "/tmp/x")
    crit = next(r for r in doc["route"]["routes"] if r["receiver"] == "opsstack-critical")
    assert (crit["group_wait"], crit["group_interval"]) == ("1s", "3s")
    wd = doc["route"]["routes"][0]
    assert wd["repeat_interval"] == "5s"
    assert doc["route"]["group_wait"] == "2s"


def test_inhibition_of_warnings_by_critical_on_same_service():
    doc = amc.build(defaults(), "http://x/", "/tmp/x")
    assert doc["inhibit_rules"] == [{"source_matchers": ['severity="critical"'],
                                     "target_matchers": ['severity="warning"'], "equal": ["service"]}]
