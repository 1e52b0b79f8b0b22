"""`opsstack forecast serve` as the launcher runs it: /metrics ready, failing source -> up 0, clean stop."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from core.procs import free_port, wait_http

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_serve_is_ready_and_reports_an_unreachable_prometheus(tmp_path):
    port, dead = free_port(), free_port()
    cfg = {
        "stack": {"ports": {"forecaster": port}},
        "forecast": {"enabled": True, "prometheus_url": f"http://127.0.0.1:{dead}", "workers": 1,
                     "interval": "10s", "store": False,
                     "targets": [{"name": "t1", "query": "up", "thresholds": [1]}]},
    }
    path = tmp_path / "opsstack.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "forecaster.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "stack.cli", "-c", str(path), "forecast", "serve"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60, proc=proc)

        def scrape():
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for f in text_string_to_metric_families(text) for s in f.samples}

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = scrape()
            errs = [v for (n, lab), v in m.items() if n == "opsstack_forecast_errors_total"]
            if errs and errs[0] >= 1:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no failed run recorded")
        up = {dict(lab)["source"]: v for (n, lab), v in m.items() if n == "opsstack_exporter_up"}
        assert up["prometheus"] == 0
        assert not [n for (n, _) in m if n == "opsstack_forecast_value"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        log.close()
    assert rc == 0, (tmp_path / "forecaster.log").read_text()[-2000:]
