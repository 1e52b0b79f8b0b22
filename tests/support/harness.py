"""Drive a native stack from outside: start it with a config, query it, stop it.

Used by the e2e tests and by the benches (bench/e2e_latency.py, bench/fault_campaign.py),
so both measure the same thing the same way. (Was stack/harness.py.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
import yaml

from core.config import RESOLVED_NAME, load, run_dir
from tests.support.wait import wait_for  # noqa: F401 (e2e tests and benches import it from here)


def fast_config(run_dir: str | os.PathLike, **overrides: Any) -> dict:
    """A config with short intervals for tests and benches (seconds, not minutes)."""
    cfg: dict = {
        "stack": {"run_dir": str(run_dir), "scrape_interval": "1s", "scrape_timeout": "900ms",
                  "evaluation_interval": "1s", "startup_timeout": "150s"},
        # what is read at scrape time must finish within the 900ms scrape timeout
        # throw-away stacks: commits need not survive a power loss
        "database": {"embedded": {"durable": False}},
        "exporters": {"app": {"probe_timeout": "500ms"},
                      "cdn": {"varnish": {"timeout": "500ms"}, "redis": {"timeout": "500ms"}}},
        "alerts": {
            "service_down_for": "3s", "rate_window": "20s",
            "latency": {"for": "3s"}, "errors": {"for": "3s"}, "cache": {"for": "3s"},
            "region_down": {"for": "3s"},
            "service": {"cpu_for": "3s", "disk_for": "3s"},
        },
        "alertmanager": {
            "critical_group_wait": "1s", "critical_group_interval": "2s",
            "warning_group_wait": "1s", "warning_group_interval": "2s",
        },
    }
    for key, value in overrides.items():
        section, _, rest = key.partition("__")
        node = cfg.setdefault(section, {})
        parts = rest.split("__") if rest else []
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if parts:
            node[parts[-1]] = value
        else:
            cfg[section] = value
    # no demo history: these stacks test live behaviour within minutes, and 14 days of
    # backfill would add a minute to every start (the e2e stack starts with it: tests/e2e/conftest.py)
    cfg.setdefault("demo", {}).setdefault("backfill", 0)
    return cfg


def automation_stack(work: str | os.PathLike, approver_delay: str = "2s") -> "StackHandle":
    """A small stack for the event-request pipeline (issue 13: the e2e test and
    bench/event_pipeline_bench.py): Apache Airflow with the event_creation DAG, the approver
    (approving after ``approver_delay``) and dispatcher, the automation exporter, on the embedded
    PostgreSQL; no edge, no forecaster, no history, no backups. Not started: ``.up()``."""
    work = Path(work)
    cfg = fast_config(work / ".run",
                      demo={"airflow": True, "airflow_approver_delay": approver_delay, "backfill": "0s",
                            "edge": {"enabled": False}},
                      forecast={"enabled": False},
                      database__embedded__backup={"enabled": False},
                      # Airflow starts in about 30 s alone; give a busy machine room
                      stack__startup_timeout="600s",
                      # the exporter reads Airflow at scrape time: a few seconds, not the 900ms of fast_config
                      stack__scrape_interval="5s", stack__scrape_timeout="4s", exporters__automation__timeout="3s")
    handle = StackHandle(cfg, work)
    handle.env.pop("OPSSTACK_DATABASE_URL", None)  # the embedded cluster
    return handle


def default_config(run_dir: str | os.PathLike) -> dict:
    """What a user's first `make up` runs with: every default (demo history backfill, the
    forecaster's full model set, Alertmanager's and the rules' real timings, the demo mail sink
    as the notification channel), only the run folder (configs, data, logs) the caller's; the
    ports are 'auto' as by default, so `up` picks free ones."""
    return {"stack": {"run_dir": str(run_dir)}}


class StackHandle:
    def __init__(self, cfg_data: dict, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.workdir / "opsstack.yaml"
        self.config_file.write_text(yaml.safe_dump(cfg_data, sort_keys=False))
        self.resolved: dict = {}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")

    # -------------------------------------------------------------- lifecycle
    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).parent / "opsstack"
        cmd = [str(exe) if exe.exists() else "opsstack", "-c", str(self.config_file), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=self.workdir)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res

    def up(self, timeout: float = 300) -> "StackHandle":
        self.cli("up", timeout=timeout)
        self.read_resolved()
        return self

    def reconfigure(self, cfg_data: dict) -> str:
        """Write a new opsstack.yaml and run `opsstack up` on the running stack (Stack.apply:
        reloads, restarts what reads a changed key and waits for it); what `up` printed."""
        before = self.config_file.read_text()
        self.config_file.write_text(yaml.safe_dump(cfg_data, sort_keys=False))
        try:
            out = self.cli("up").stdout
        except BaseException:
            self.config_file.write_text(before)  # what runs (and what `down` reads) is still that
            raise
        self.read_resolved()
        return out

    def read_resolved(self) -> None:
        """Read the resolved config of the running stack again (after `up`)."""
        cfg = load(self.config_file)
        rdir = run_dir(cfg) if Path(cfg["stack"]["run_dir"]).is_absolute() else \
            (self.workdir / cfg["stack"]["run_dir"]).resolve()
        self.resolved = yaml.safe_load((rdir / RESOLVED_NAME).read_text())
        self.resolved["runtime"] = json.loads((rdir / "runtime.json").read_text())

    def down(self) -> None:
        self.cli("down", check=False, timeout=120)

    # -------------------------------------------------------------- endpoints
    @property
    def host(self) -> str:
        return self.resolved["stack"]["host"]

    def url(self, component: str) -> str:
        return f"http://{self.host}:{self.resolved['runtime']['ports'][component]}"

    @property
    def token(self) -> str:
        return self.resolved["receiver"]["token"]

    def prom_query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr}
        if at is not None:
            params["time"] = str(at)
        r = requests.get(self.url("prometheus") + "/api/v1/query", params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body.get('error')}")
        return body["data"]["result"]

    def api(self, method: str, path: str, **kw) -> requests.Response:
        """Call the receiver's REST API with the receiver token (read + write)."""
        return requests.request(method, self.url("receiver") + path, timeout=10,
                                headers={"Authorization": f"Bearer {self.token}"}, **kw)

    def firing_alerts(self, alertname: str | None = None) -> list[dict]:
        r = requests.get(self.url("prometheus") + "/api/v1/alerts", timeout=10).json()
        alerts = [a for a in r["data"]["alerts"] if a["state"] == "firing"]
        return [a for a in alerts if alertname is None or a["labels"].get("alertname") == alertname]

    def tickets(self, status: str | None = None) -> list[dict]:
        params = {"status": status} if status else {}
        r = requests.get(self.url("receiver") + "/api/v1/tickets", params=params,
                         headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        r.raise_for_status()
        body = r.json()
        return body["tickets"] if isinstance(body, dict) else body
