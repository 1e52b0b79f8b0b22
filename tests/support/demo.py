"""Run real demo service processes (and the app exporter) on free loopback ports.

For tests and benches: ``DemoProcess(workdir, service="user-app", **demo_overrides)``
writes a config with free ports, starts ``opsstack -c <config> demo serve --service S``
as a real process and waits for its admin /health. Nothing here is a fake: it is the
same command the launcher runs under supervisor. (Was demo/testing.py.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from core.procs import free_port, port_open, stop_process, tail, wait_http

REGIONS = ["seoul", "singapore", "tokyo"]


def afternoon_timezone(now: float | None = None) -> str:
    """An IANA zone (Etc/GMT-N: UTC+N) whose local time is now between 14:00 and 15:00: the
    start of the demo's diurnal plateau (14:00-16:00), so a demo at time_acceleration 60 runs at
    its peak rate for two real minutes whatever the hour the tests run (at a Seoul night it is
    ~6% of that, and tests waiting for traffic wait for it)."""
    utc_hour = time.gmtime(time.time() if now is None else now).tm_hour
    offset = (14 - utc_hour + 12) % 24 - 12  # -12..11: Etc/GMT+12 .. Etc/GMT-11
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def opsstack_argv() -> list[str]:
    exe = Path(sys.executable).parent / "opsstack"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "stack.cli"]


class _Process:
    name = "proc"

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.workdir / f"{self.name}.yaml"
        self.log = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def write(self, cfg: dict) -> None:
        self.config_file.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def spawn(self, args: list[str], ready_url: str | None, timeout: float = 30,
              ready_port: int | None = None) -> None:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(opsstack_argv() + ["-c", str(self.config_file), *args], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            if ready_url:
                wait_http(ready_url, timeout=timeout, proc=self.proc)
            else:
                deadline = time.monotonic() + timeout
                while not port_open("127.0.0.1" if self.host == "0.0.0.0" else self.host, ready_port):
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"process exited with {self.proc.returncode}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"port {ready_port} not open after {timeout:.0f}s")
                    time.sleep(0.1)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{tail(self.log)}") from None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc, 10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError


class DemoProcess(_Process):
    """One demo service process (``opsstack demo serve``) on free ports."""

    name = "demo"

    def __init__(self, workdir, service: str = "user-app", services: list[dict] | None = None,
                 host: str = "127.0.0.1", **demo: object):
        super().__init__(workdir)
        self.service = service
        self.host = host
        self.ports = {k: free_port(host) for k in ["admin", *REGIONS]}
        services = services or [{"name": service}]
        self.cfg = {
            "stack": {"run_dir": str(self.workdir / "run"), "host": host},
            "platform": {"regions": REGIONS, "services": services},
            "demo": {"ports": {service: self.ports}, **demo},
        }
        self.write(self.cfg)

    def start(self, timeout: float = 30) -> "DemoProcess":
        self.spawn(["demo", "serve", "--service", self.service], self.url("admin", "/health"), timeout)
        return self

    def url(self, slot: str, path: str = "") -> str:
        return f"http://{self.host}:{self.ports[slot]}{path}"

    @property
    def endpoints(self) -> dict[str, str]:
        return {r: self.url(r) for r in REGIONS}

    def admin(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url("admin", path), data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url("admin", "/metrics"), timeout=10) as r:
            return r.read().decode()


class AppExporterProcess(_Process):
    """``opsstack exporter app`` probing the given services' endpoints."""

    name = "exporter-app"

    def __init__(self, workdir, services: list[dict], probe_timeout: str = "1s", host: str = "127.0.0.1",
                 scrape_timeout: str = "10s", **app: object):
        super().__init__(workdir)
        self.host = host
        self.port = free_port(host)
        self.cfg = {
            "stack": {"run_dir": str(self.workdir / "run"), "host": host, "scrape_timeout": scrape_timeout,
                      "ports": {"exporter_app": self.port}},
            "platform": {"regions": REGIONS, "services": services},
            "exporters": {"app": {"probe_timeout": probe_timeout, **app}},
            "demo": {"enabled": False},
        }
        self.write(self.cfg)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self, timeout: float = 30) -> "AppExporterProcess":
        # readiness = the port accepts: a scrape may take up to probe_timeout
        self.spawn(["exporter", "app"], None, timeout, ready_port=self.port)
        return self

    def scrape(self, timeout: float = 30) -> str:
        with urllib.request.urlopen(self.url, timeout=timeout) as r:
            return r.read().decode()


class MailSinkProcess(_Process):
    """The demo mail sink (``opsstack demo mailsink``) on free ports, as the launcher runs it."""

    name = "mailsink"

    def __init__(self, workdir, host: str = "127.0.0.1"):
        super().__init__(workdir)
        self.host = host
        self.smtp_port, self.web_port = free_port(host), free_port(host)
        self.cfg = {"stack": {"run_dir": str(self.workdir / "run"), "host": host,
                              "ports": {"mailsink_smtp": self.smtp_port, "mailsink_web": self.web_port}}}
        self.write(self.cfg)

    def start(self, timeout: float = 30) -> "MailSinkProcess":
        self.spawn(["demo", "mailsink"], self.url("/health"), timeout)
        return self

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.web_port}{path}"

    def messages(self) -> list[dict]:
        with urllib.request.urlopen(self.url("/api/messages"), timeout=10) as r:
            return json.loads(r.read())["messages"]

    def page(self) -> str:
        with urllib.request.urlopen(self.url("/"), timeout=10) as r:
            return r.read().decode()
