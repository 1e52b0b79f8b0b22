"""`opsstack demo` client side: where it finds the running stack's ports."""
from __future__ import annotations

import pytest

from demo.cli import NotRunning, _services, running_ports
from core.config import load_data, view


def test_ports_from_the_config_when_given():
    cfg = load_data({"demo": {"ports": {"user-app": {"admin": 4001}}}})
    assert running_ports(view(cfg, "demo"), view(cfg, "stack")) == ("127.0.0.1", {"user-app": {"admin": 4001}})


def test_no_ports_in_the_config_means_not_running():
    cfg = load_data({})
    with pytest.raises(NotRunning, match="not running"):
        running_ports(view(cfg, "demo"), view(cfg, "stack"))


def test_services_default_to_all_and_unknown_is_refused():
    platform = view(load_data({}), "platform")
    ports = {s.name: {"admin": 1} for s in platform.services}
    assert _services(platform, ports, None) == [s.name for s in platform.services]
    assert _services(platform, ports, "user-app") == ["user-app"]
    with pytest.raises(ValueError, match="unknown service 'nope'"):
        _services(platform, ports, "nope")
