"""Real Prometheus / Alertmanager processes on free loopback ports, for tests and benches.

The native stack runs the same binaries under supervisor (stack/launcher.py); these
helpers start them directly and tear them down, each with its own data folder.
(Was stack/servers.py.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import yaml

from core.procs import binary, free_port, stop_process, tail, wait_http


class _Proc:
    name = "proc"
    ready_path = "/-/ready"

    def __init__(self, workdir: str | os.PathLike | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"opsstack-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> "_Proc":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(self.url + self.ready_path, timeout=timeout, proc=self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{tail(self.log)}") from None
        return self

    def stop(self) -> None:
        stop_process(self.proc, 15)

    def reload(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Prometheus(_Proc):
    """Prometheus with the given config dict (rule_files paths absolute)."""

    name = "prometheus"

    def __init__(self, config: dict, workdir=None, extra_args: list[str] | None = None, host="127.0.0.1"):
        super().__init__(workdir, host)
        self.config = config
        self.extra_args = extra_args or []
        self.config_file = self.workdir / "prometheus.yml"
        self.write_config(config)

    def write_config(self, config: dict) -> None:
        self.config = config
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def argv(self) -> list[str]:
        return [binary("prometheus"), f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}", "--web.enable-lifecycle",
                "--web.enable-admin-api", *self.extra_args]


class Alertmanager(_Proc):
    """Alertmanager with the given config dict; `peers` makes a gossip cluster."""

    name = "alertmanager"

    def __init__(self, config: dict, workdir=None, peers: list[str] | None = None,
                 cluster: bool = False, host="127.0.0.1"):
        super().__init__(workdir, host)
        self.config_file = self.workdir / "alertmanager.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.peers = peers or []
        self.cluster_port = free_port(host) if (cluster or peers) else None

    @property
    def cluster_address(self) -> str:
        return f"{self.host}:{self.cluster_port}"

    def argv(self) -> list[str]:
        args = [binary("alertmanager"), f"--config.file={self.config_file}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}"]
        if self.cluster_port:
            args += [f"--cluster.listen-address={self.cluster_address}",
                     f"--cluster.advertise-address={self.cluster_address}",
                     "--cluster.peer-timeout=2s", "--cluster.gossip-interval=100ms",
                     "--cluster.pushpull-interval=2s"]
            args += [f"--cluster.peer={p}" for p in self.peers]
        else:
            args.append("--cluster.listen-address=")
        return args
