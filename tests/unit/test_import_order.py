"""prometheus_client decides at its first import whether metric values live in
PROMETHEUS_MULTIPROC_DIR files (gunicorn: every worker's counters summed at scrape) or in private
memory. `opsstack receiver serve` sets that variable in webhook_receiver/cli.py, after the CLI has
loaded: anything the CLI imports on the way that imports prometheus_client makes the receiver's
request metrics (webhook requests, request durations) silently disappear from /metrics. It happened
once (a logging module imported by stack.runtime); the e2e dashboard test caught it, this catches it
in a second."""
from __future__ import annotations

import subprocess
import sys


def test_the_cli_path_to_the_receiver_does_not_import_prometheus_client():
    code = ("import sys, stack.cli, webhook_receiver.cli, core.logs, core.logship\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'prometheus_client')\n"
            "print(','.join(loaded))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"imported before PROMETHEUS_MULTIPROC_DIR is set: {out.stdout.strip()}"
