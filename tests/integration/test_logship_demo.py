"""A real demo service process ships its lines (core/logship.py) with the launcher's labels, and
the error-burst fault logs one ERROR line per failed request with the region as a label, so
LogErrorSurge sees what ServiceErrorRatioHigh sees. The push API is the fake HTTP server checking
Loki's request shape (no Grafana Loki binary can be installed here: docs/logs.md)."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from core import logship
from tests.support.demo import DemoProcess
from tests.support.fakehttp import FakeHTTP
from tests.support.lokipush import REFUSED, lines_of, push
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_error_burst_lines_reach_loki_with_service_region_and_level(tmp_path, monkeypatch):
    REFUSED.clear()
    with FakeHTTP({"POST /loki/api/v1/push": push}) as loki:
        monkeypatch.setenv(logship.ENV_URL, loki.url)
        monkeypatch.setenv(logship.ENV_LABELS, "component=demo;service=user-app")
        monkeypatch.setenv("OPSSTACK_LOGSHIP_FLUSH_INTERVAL", "0.2")
        with DemoProcess(tmp_path, service="user-app", requests_per_second=0.0) as demo:
            assert demo.admin("POST", "/admin/faults", {"kind": "error-burst", "rate": 1.0,
                                                        "region": "seoul"})[0] in (200, 201)
            codes = [status_of(demo.url("seoul", "/api/me")) for _ in range(5)]
            assert all(c >= 500 for c in codes), codes
            errors = wait_for(lambda: [(lb, ln) for lb, ln in lines_of(loki) if "event=request_failed" in ln]
                              if sum("event=request_failed" in ln for _, ln in lines_of(loki)) >= 5 else None,
                              timeout=60, what="5 request_failed lines pushed")
            labels, line = errors[0]
            assert labels == {"component": "demo", "service": "user-app", "level": "error", "region": "seoul"}
            assert "level=ERROR" in line and "region=seoul" in line and "fault=error-burst" in line
            # everything else the process logs is shipped too, without a region label
            assert any(lb.get("level") == "info" and "region" not in lb for lb, _ in lines_of(loki))
            metrics = demo.metrics()
            assert 'opsstack_logship_lines_total{result="shipped"}' in metrics
    assert not REFUSED, REFUSED
