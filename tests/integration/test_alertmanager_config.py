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


# ------------------------------------------------------------------ the direct route

DIRECT = {"email_to": ["oncall@example.test", "sre@example.test"], "smarthost": "127.0.0.1:2525",
          "require_tls": False, "repeat_interval": "30m"}


@pytest.fixture(scope="module")
def direct_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("am-direct")
    tok = d / "receiver_token"
    tok.write_text("secret\n")
    p = d / "alertmanager.yml"
    p.write_text(amc.render(load_data({"alertmanager": {"direct": DIRECT}}),
                            "http://127.0.0.1:9095/webhook/alertmanager", str(tok)))
    return p


DIRECT_ROUTES = [
    ({"alertname": "ReceiverDown", "severity": "critical", "tier": "1", "route": "direct"},
     "opsstack-direct,opsstack-critical"),
    ({"alertname": "AlertDeliveryFailing", "severity": "critical", "tier": "3", "route": "direct"},
     "opsstack-direct,opsstack-critical-tier3"),
    ({"alertname": "X", "severity": "warning", "tier": "2", "route": "direct"},
     "opsstack-direct,opsstack-warning-tier2"),
    ({"alertname": "ServiceDown", "severity": "critical", "tier": "1"}, "opsstack-critical"),
    ({"alertname": "X", "severity": "critical", "route": "directly"}, "opsstack-critical"),
    ({"alertname": "Watchdog", "severity": "info", "tier": "3"}, "opsstack-watchdog"),
]


def test_amtool_check_config_with_a_direct_route(direct_file):
    res = subprocess.run([binary("amtool"), "check-config", str(direct_file)], capture_output=True, text=True)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr
    doc = yaml.safe_load(direct_file.read_text())
    first = doc["route"]["routes"][0]
    assert first["receiver"] == "opsstack-direct" and first["continue"] is True
    assert first["repeat_interval"] == "30m"
    email = next(r for r in doc["receivers"] if r["name"] == "opsstack-direct")["email_configs"][0]
    assert email["to"] == "oncall@example.test, sre@example.test"
    assert (email["smarthost"], email["require_tls"], email["send_resolved"]) == ("127.0.0.1:2525", False, True)
    assert "auth_username" not in email and "auth_password_file" not in email


@pytest.mark.parametrize("labels,receivers", DIRECT_ROUTES, ids=[r for _, r in DIRECT_ROUTES])
def test_amtool_direct_routes(direct_file, labels, receivers):
    res = subprocess.run([binary("amtool"), "config", "routes", "test", f"--config.file={direct_file}",
                          *[f"{k}={v}" for k, v in labels.items()]], capture_output=True, text=True)
    assert res.stdout.strip() == receivers, res.stdout + res.stderr


def test_no_direct_route_without_an_address_and_smtp_credentials_from_a_file(tmp_path):
    doc = amc.build(defaults(), "http://x/", "/tmp/x")
    assert "opsstack-direct" not in {r["name"] for r in doc["receivers"]}
    assert all(r["receiver"] != "opsstack-direct" for r in doc["route"]["routes"])
    pw = tmp_path / "smtp_password"
    pw.write_text("s3cret\n")
    cfg = load_data({"alertmanager": {"direct": {"email_to": ["a@example.test"], "smarthost": "smtp.example.test:587",
                                                 "auth_username": "am", "auth_password_file": str(pw)}}})
    p = tmp_path / "alertmanager.yml"
    p.write_text(amc.render(cfg, "http://127.0.0.1:9095/webhook/alertmanager", str(pw)))
    assert "s3cret" not in p.read_text()
    email = yaml.safe_load(p.read_text())["receivers"][-1]["email_configs"][0]
    assert (email["auth_username"], email["auth_password_file"], email["require_tls"]) == ("am", str(pw), True)
    res = subprocess.run([binary("amtool"), "check-config", str(p)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("direct,problem", [
    ({"email_to": ["a@example.test"]}, "alertmanager.direct.smarthost: required"),
    ({"email_to": ["not an address"], "smarthost": "x:25"}, "alertmanager.direct.email_to[0]"),
    ({"email_to": ["a@example.test"], "smarthost": "mail.example.test"}, "alertmanager.direct.smarthost: host:port"),
    ({"from": "alertmanager"}, "alertmanager.direct.from"),
])
def test_a_bad_direct_route_is_refused_with_the_key(direct, problem):
    from core.spec import ConfigError

    with pytest.raises(ConfigError) as e:
        load_data({"alertmanager": {"direct": direct}})
    assert problem in str(e.value)
