"""The app exporter's pure parts: targets, histogram, response and certificate parsing."""
from __future__ import annotations

import shutil
import ssl
import subprocess
from datetime import datetime, timezone

import pytest

from exporters.app.collector import FD_RESERVE, _Histogram, plan_concurrency, targets_from_config
from exporters.app.probe import _status, cert_not_after
from core.config import ConfigError, load_data, view


def test_targets_are_every_service_region_endpoint_with_health_path():
    cfg = load_data({"platform": {"services": [
        {"name": "a", "endpoints": {"seoul": "http://127.0.0.1:1/", "tokyo": "https://127.0.0.1:2"},
         "health_path": "/healthz"},
        {"name": "b"}]}})
    ts = targets_from_config(view(cfg, "platform"))
    assert [(t.service, t.region, t.url) for t in ts] == [
        ("a", "seoul", "http://127.0.0.1:1/healthz"), ("a", "tokyo", "https://127.0.0.1:2/healthz")]


def test_histogram_is_cumulative_with_inf():
    h = _Histogram([0.1, 0.2, 0.5])
    for v in (0.05, 0.15, 0.15, 0.3, 2.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 1), ("0.2", 3), ("0.5", 4), ("+Inf", 5)]
    assert h.sum == pytest.approx(2.65)


def test_status_line_parsing():
    assert _status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n") == 503
    assert _status(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") == 200
    with pytest.raises(ValueError, match="not an HTTP response"):
        _status(b"SSH-2.0-OpenSSH\r\n")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
@pytest.mark.parametrize("days", [1, 400, 20000])  # 20000 days: GeneralizedTime (after 2049)
def test_cert_not_after_from_der(tmp_path, days):
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", str(days), "-subj", "/CN=localhost"], check=True, capture_output=True)
    end = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-enddate"], check=True,
                         capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    expected = datetime.strptime(end, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc).timestamp()
    der = ssl.PEM_cert_to_DER_cert(crt.read_text())
    assert cert_not_after(der) == expected


def test_probe_timeout_must_fit_in_the_scrape_timeout():
    with pytest.raises(ConfigError, match="exporters.app.probe_timeout: must be shorter than stack.scrape_timeout"):
        load_data({"exporters": {"app": {"probe_timeout": "10s"}}})
    with pytest.raises(ConfigError, match="exporters.app.latency_buckets"):
        load_data({"exporters": {"app": {"latency_buckets": [0.5, 0.1]}}})


def test_probe_slots_fit_the_open_file_limit():
    assert plan_concurrency(1024, 1000, 20000) == (1024, None)
    assert plan_concurrency(30, 200, 1024) == (30, None)
    assert plan_concurrency(1024, 200, 1024) == (1024 - FD_RESERVE, None)  # all 200 fit at once
    slots, problem = plan_concurrency(1024, 1000, 1024)              # the usual default soft limit
    assert slots == 1024 - FD_RESERVE
    assert "open-file limit 1024" in problem and "max_concurrency" in problem
    assert plan_concurrency(10, 10, 8)[0] == 1                       # never zero slots


# ------------------------------------------------------------------ core/exporter.py
def test_exporter_common_self_metrics_and_failing_source():
    from prometheus_client import generate_latest
    from prometheus_client.core import GaugeMetricFamily

    from core.exporter import ExporterCollector, registry_for

    class C(ExporterCollector):
        exporter = "x"

        def collect_sources(self, scrape):
            with scrape.source("good"):
                yield GaugeMetricFamily("opsstack_x_value", "A value.", value=1)
            with scrape.source("bad"):
                raise RuntimeError("source unreachable")
            yield GaugeMetricFamily("opsstack_x_after", "Still collected after a failing source.", value=2)

    class Broken(ExporterCollector):
        exporter = "y"

        def collect_sources(self, scrape):
            yield GaugeMetricFamily("opsstack_y_value", "A value.", value=1)
            raise ValueError("bug")

    text = generate_latest(registry_for(C())).decode() + generate_latest(registry_for(Broken())).decode()
    assert 'opsstack_exporter_up{exporter="x",source="good"} 1.0' in text
    assert 'opsstack_exporter_up{exporter="x",source="bad"} 0.0' in text
    assert "opsstack_x_after 2.0" in text
    assert 'opsstack_exporter_up{exporter="y",source="y"} 0.0' in text and "opsstack_y_value 1.0" in text
    assert 'opsstack_exporter_scrape_duration_seconds{exporter="x"}' in text
