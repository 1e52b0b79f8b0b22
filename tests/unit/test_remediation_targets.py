"""What an alert label may be when it reaches a playbook's target, command, path or URL (pure)."""
from __future__ import annotations

import pytest

from core.config import load_data
from webhook_receiver.remediation import model
from webhook_receiver.remediation.backends import BackendError, check_url, path_segment

CFG = load_data({"demo": {"ports": {"user-app": {"admin": 4001, "seoul": 4002, "singapore": 4003, "tokyo": 4004}}}})
PBS = {p.name: p for p in model.load_playbooks(CFG)}


@pytest.mark.parametrize("value", ["user-app", "gate-management", "event-management", "integrated-platform"])
def test_known_services_pass(value):
    assert model.check_label(CFG, "service", value) is None


@pytest.mark.parametrize("value", [
    "../../../../tmp/x", "user-app/../../x", "$(touch /tmp/pwned)", "`id`", "user-app; rm -rf /", "user app",
    "user-app\n", "unknown-service", "", "USER-APP", "user-app\x00", "..", "/etc"])
def test_anything_else_is_not_a_service(value):
    assert "not a service of the platform" in model.check_label(CFG, "service", value)


@pytest.mark.parametrize("value", ["../seoul", "seoul/..", "mars", "$(id)", "seoul "])
def test_regions_must_be_known(value):
    assert "not a region" in model.check_label(CFG, "region", value)
    assert model.check_label(CFG, "region", "tokyo") is None


@pytest.mark.parametrize("value", ["events", "event:42", "a.b-c_d", "x@y", "k=v"])
def test_other_labels_may_be_plain_names(value):
    assert model.check_label(CFG, "tag", value) is None


@pytest.mark.parametrize("value", ["../x", "a/b", "a..b", "$(id)", "a b", "a;b", "a|b", "a\"b", "a'b", "a\nb",
                                   "", "-rf", "x" * 201, 5])
def test_other_labels_with_paths_shell_or_quotes_are_refused(value):
    assert "not a plain name" in model.check_label(CFG, "tag", value)


def test_check_target_looks_at_the_labels_the_playbook_uses():
    disk = PBS["disk-filling"]
    assert "service" in model.referenced_labels(disk) and "run_dir" not in model.referenced_labels(disk)
    ok = {"alertname": "ServiceDiskAlmostFull", "service": "user-app", "region": "../unused"}
    assert model.check_target(CFG, disk, ok) is None  # region is not used by this playbook
    bad = {**ok, "service": "../../../../tmp/x"}
    assert "not a service" in model.check_target(CFG, disk, bad)
    cache = PBS["cache-miss-storm"]
    assert "not a region" in model.check_target(CFG, cache, {"service": "user-app", "region": "../x"})
    assert "not a plain name" in model.check_target(CFG, cache, {"service": "user-app", "region": "seoul",
                                                                 "tag": "../../x"})
    # RegionDown carries service="platform" (not a service), and its playbook does not use it
    assert model.check_target(CFG, PBS["region-outage"], {"region": "seoul", "service": "platform"}) is None


def test_a_label_cannot_replace_a_computed_value():
    ctx = model.context(CFG, {"service": "nope", "admin_url": "http://evil.example", "run_dir": "/",
                              "host": "evil", "target": "x"})
    assert "admin_url" not in ctx and ctx["run_dir"] != "/" and ctx["host"] == "127.0.0.1" and "target" not in ctx


def test_backend_path_segments_and_urls():
    assert path_segment("my-app_1.2", "container") == "my-app_1.2"
    assert path_segment("a b", "name") == "a%20b"
    for bad in ("", ".", "..", "a/b", "..\\x", "a\nb"):
        with pytest.raises(BackendError):
            path_segment(bad, "name")
    assert check_url("http://127.0.0.1:4001/admin/replace") == "http://127.0.0.1:4001/admin/replace"
    for bad in ("http://h/admin/../x", "http://h/admin/%2e%2e/x", "http://h/a%2fb", "file:///etc/passwd",
                "http://h/a b", "gopher://h/x", "http://h/x\r\nHost: evil"):
        with pytest.raises(BackendError):
            check_url(bad)
