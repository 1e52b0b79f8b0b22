"""The native stack: every component as a supervisor program in the run folder.

`up` resolves the config (ports, database, token), renders prometheus.yml, alertmanager.yml,
the rule files and supervisord.conf into <run_dir>, starts supervisord, then starts the
programs in two stages (the embedded PostgreSQL first, then everything else) and waits for
each readiness endpoint. Running `up` again while the stack runs starts whatever is stopped
and changes nothing else. `down` shuts supervisord down, which stops every program.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from alert_rules import build as rules_build
from core.config import format_duration, redact_url
from core.pg import PostgresUnavailable, ensure_database
from core.procs import binary, http_ok, tail
from demo.db import launcher_programs
from stack import alertmanager_config, prometheus_config, runtime
from stack.pgcluster import Cluster

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    pass


@dataclass
class Program:
    name: str
    command: list[str]
    ready_url: str | None = None              # 2xx means ready
    ready_fn: Callable[[], bool] | None = None  # or a custom check
    user: str | None = None
    stage: int = 2
    env: dict = field(default_factory=dict)
    url: str | None = None                    # what `up` prints for people
    stopsignal: str = "TERM"

    def ready(self) -> bool:
        if self.ready_fn is not None:
            return self.ready_fn()
        return http_ok(self.ready_url, timeout=2) if self.ready_url else True


def opsstack_exe() -> str:
    exe = Path(sys.executable).parent / "opsstack"
    return str(exe) if exe.exists() else "opsstack"


def supervisord_exe() -> str:
    exe = Path(sys.executable).parent / "supervisord"
    return str(exe) if exe.exists() else "supervisord"


class Stack:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.rdir = runtime.run_dir(cfg)
        self.logs = self.rdir / "logs"
        self.conf = self.rdir / "supervisord.conf"
        self.pidfile = self.rdir / "supervisord.pid"

    # ----------------------------------------------------------------- supervisor
    def _rpc(self, port: int | None = None):
        port = port or self._supervisor_port()
        if not port:
            return None
        return xmlrpc.client.ServerProxy(f"http://{self.cfg['stack']['host']}:{port}/RPC2")

    def _supervisor_port(self) -> int | None:
        rt = runtime.load_runtime(self.cfg)
        return rt["ports"]["supervisor"] if rt else None

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def running(self) -> bool:
        if not self.supervisor_pid():
            return False
        try:
            self._rpc().supervisor.getState()
            return True
        except (OSError, xmlrpc.client.Error, AttributeError):
            return False

    # ----------------------------------------------------------------- programs
    def programs(self, r: dict) -> list[Program]:
        host = r["stack"]["host"]
        ports = r["runtime"]["ports"]
        rd = Path(r["stack"]["run_dir"])
        resolved_file = str(rd / runtime.RESOLVED_NAME)
        ops = [opsstack_exe(), "-c", resolved_file]
        progs: list[Program] = []
        if r["runtime"]["embedded_database"]:
            emb = r["database"]["embedded"]
            cluster = Cluster(rd / "postgres" / "data", ports["postgres"], host=host,
                              preload=emb["preload"], max_connections=emb["max_connections"])
            self._cluster = cluster
            progs.append(Program("postgres", cluster.command(), user=cluster.user, stage=1,
                                 ready_fn=lambda: self._pg_ready(cluster), stopsignal="INT",
                                 url=cluster.url(r["database"]["name"])))
        progs += [
            Program("prometheus", [binary("prometheus"), f"--config.file={rd / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={rd / 'prometheus'}",
                                   f"--storage.tsdb.retention.time={format_duration(r['stack']['retention'])}",
                                   f"--web.listen-address={host}:{ports['prometheus']}",
                                   "--web.enable-lifecycle"],
                    ready_url=f"http://{host}:{ports['prometheus']}/-/ready",
                    url=f"http://{host}:{ports['prometheus']}"),
            Program("alertmanager", [binary("alertmanager"), f"--config.file={rd / 'alertmanager.yml'}",
                                     f"--storage.path={rd / 'alertmanager'}",
                                     f"--web.listen-address={host}:{ports['alertmanager']}",
                                     "--cluster.listen-address="],
                    ready_url=f"http://{host}:{ports['alertmanager']}/-/ready",
                    url=f"http://{host}:{ports['alertmanager']}"),
            Program("node_exporter", [binary("node_exporter"), f"--web.listen-address={host}:{ports['node_exporter']}"],
                    ready_url=f"http://{host}:{ports['node_exporter']}/metrics",
                    url=f"http://{host}:{ports['node_exporter']}/metrics"),
        ]
        if r["demo"]["enabled"]:
            for s in r["platform"]["services"]:
                admin = r["demo"]["ports"][s["name"]]["admin"]
                progs.append(Program(f"demo-{s['name']}", ops + ["demo", "serve", "--service", s["name"]],
                                     ready_url=f"http://{host}:{admin}/health",
                                     url=f"http://{host}:{admin}"))
        if r["exporters"]["app"]["enabled"]:
            progs.append(Program("exporter-app", ops + ["exporter", "app"],
                                 ready_url=f"http://{host}:{ports['exporter_app']}/metrics",
                                 url=f"http://{host}:{ports['exporter_app']}/metrics"))
        if r["exporters"].get("db", {}).get("enabled"):
            progs.append(Program("exporter-db", ops + ["exporter", "db"],
                                 ready_url=f"http://{host}:{ports['exporter_db']}/metrics",
                                 url=f"http://{host}:{ports['exporter_db']}/metrics"))
        if r["forecast"]["enabled"]:
            progs.append(Program("forecaster", ops + ["forecast", "serve"],
                                 ready_url=f"http://{host}:{ports['forecaster']}/metrics",
                                 url=f"http://{host}:{ports['forecaster']}/metrics"))
        progs.append(Program("receiver", ops + ["receiver", "serve"],
                             ready_url=f"http://{host}:{ports['receiver']}/readyz",
                             url=f"http://{host}:{ports['receiver']}"))
        progs += self._extra_programs(r, ops)
        return progs

    def _extra_programs(self, r: dict, ops: list[str]) -> list[Program]:
        """Programs that other parts declare (e.g. the demo database workload)."""
        extra = []
        for spec in launcher_programs(r):
            prog = Program(spec["name"], ops + spec["args"], ready_url=spec.get("ready_url"),
                           url=spec.get("url") or f"file://{self.logs / (spec['name'] + '.log')}")
            if not prog.ready_url:  # no endpoint: ready while supervisor says RUNNING
                prog.ready_fn = lambda n=prog.name: self._state(n) == "RUNNING"
            extra.append(prog)
        return extra

    def _state(self, name: str) -> str:
        try:
            return self._rpc().supervisor.getProcessInfo(name)["statename"]
        except (OSError, xmlrpc.client.Error, AttributeError):
            return "UNKNOWN"

    @staticmethod
    def _pg_ready(cluster: Cluster) -> bool:
        import psycopg
        try:
            with psycopg.connect(cluster.url(), connect_timeout=2) as c:
                c.execute("select 1")
            return True
        except psycopg.OperationalError:
            return False

    # ----------------------------------------------------------------- rendering
    def render(self, r: dict, progs: list[Program]) -> None:
        rd = Path(r["stack"]["run_dir"])
        for sub in ("logs", "prometheus", "alertmanager", "rules"):
            (rd / sub).mkdir(parents=True, exist_ok=True)
        for old in (rd / "rules").glob("*.yml"):
            old.unlink()
        rules_build.write(r, rd / "rules")
        # every file here that holds or points at a credential is created 0600 (runtime.write_private)
        token_file = rd / "receiver_token"
        runtime.write_private(token_file, r["receiver"]["token"])
        runtime.write_private(rd / "prometheus.yml",
                              yaml.safe_dump(prometheus_config.build(r, "native"), sort_keys=False))
        receiver_url = f"http://{r['stack']['host']}:{r['runtime']['ports']['receiver']}/webhook/alertmanager"
        am = alertmanager_config.build(r, receiver_url, str(token_file))
        runtime.write_private(rd / "alertmanager.yml", yaml.safe_dump(am, sort_keys=False))
        runtime.write_private(self.conf, self.supervisord_conf(r, progs))

    def supervisord_conf(self, r: dict, progs: list[Program]) -> str:
        rd = Path(r["stack"]["run_dir"])
        host = r["stack"]["host"]
        lines = [
            "; generated by `opsstack up`",
            "[supervisord]",
            f"logfile={self.logs / 'supervisord.log'}",
            f"pidfile={self.pidfile}",
            f"directory={rd}",
            "childlogdir=" + str(self.logs),
            "logfile_maxbytes=10MB",
            "",
            "[inet_http_server]",
            f"port={host}:{r['runtime']['ports']['supervisor']}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=http://{host}:{r['runtime']['ports']['supervisor']}",
            "",
        ]
        base_env = {"PYTHONUNBUFFERED": "1", "OPSSTACK_CONFIG": str(rd / runtime.RESOLVED_NAME)}
        for p in progs:
            env = dict(base_env, **p.env)
            cmd = " ".join(shlex.quote(c) for c in p.command).replace("%", "%%")
            lines += [
                f"[program:{p.name}]",
                f"command={cmd}",
                "autostart=false",
                "autorestart=true",
                "startsecs=1",
                "startretries=5",
                f"stopsignal={p.stopsignal}",
                "stopwaitsecs=20",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={self.logs / (p.name + '.log')}",
                "stdout_logfile_maxbytes=10MB",
                "stdout_logfile_backups=2",
                "environment=" + ",".join(f'{k}="{v}"' for k, v in env.items()).replace("%", "%%"),
            ]
            if p.user:
                lines.append(f"user={p.user}")
            lines.append("")
        return "\n".join(lines)

    # ----------------------------------------------------------------- up / down
    def up(self, progress: Callable[[str], None] = print) -> dict:
        if self.running():
            progress("opsstack: the stack is already running; starting anything that is stopped")
            rt = runtime.load_runtime(self.cfg) or {}
            resolved = yaml.safe_load((self.rdir / runtime.RESOLVED_NAME).read_text())
            resolved["runtime"] = rt
            progs = self.programs(resolved)
            self._start_and_wait(progs, progress)
            return resolved
        resolved = runtime.resolve(self.cfg)
        runtime.write_resolved(resolved)
        progs = self.programs(resolved)
        if resolved["runtime"]["embedded_database"]:
            progress(f"opsstack: preparing the embedded PostgreSQL cluster in {self.rdir / 'postgres'}")
            self._cluster.init()
        self.render(resolved, progs)
        progress("opsstack: starting supervisord")
        self.logs.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([supervisord_exe(), "-c", str(self.conf)], capture_output=True, text=True)
        if res.returncode != 0:
            raise LaunchError(f"supervisord failed to start: {res.stderr.strip() or res.stdout.strip()}")
        deadline = time.monotonic() + 15
        while not self.running():
            if time.monotonic() > deadline:
                raise LaunchError(f"supervisord did not answer; see {self.logs / 'supervisord.log'}\n"
                                  + tail(self.logs / "supervisord.log"))
            time.sleep(0.1)
        # stage 1: the database; then make sure our database exists
        self._start_and_wait([p for p in progs if p.stage == 1], progress)
        try:
            ensure_database(resolved["database"]["url"], resolved["database"]["name"])
        except PostgresUnavailable as exc:
            raise LaunchError(str(exc)) from None
        self._start_and_wait([p for p in progs if p.stage == 2], progress)
        return resolved

    def _start_and_wait(self, progs: list[Program], progress) -> None:
        if not progs:
            return
        rpc = self._rpc()
        for p in progs:
            info = rpc.supervisor.getProcessInfo(p.name)
            if info["statename"] not in ("RUNNING", "STARTING"):
                rpc.supervisor.startProcess(p.name, False)
        timeout = self.cfg["stack"]["startup_timeout"]
        deadline = time.monotonic() + timeout
        pending = {p.name: p for p in progs}
        shown = 0.0
        while pending:
            for name, p in list(pending.items()):
                if p.ready():
                    progress(f"  ready  {name:<26} {redact_url(p.url) or ''}")
                    del pending[name]
                    continue
                state = rpc.supervisor.getProcessInfo(name)["statename"]
                if state == "FATAL":
                    raise LaunchError(f"{name} failed to start ({state}); last log lines:\n"
                                      + tail(self.logs / f"{name}.log"))
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(pending)
                first = next(iter(pending))
                raise LaunchError(f"not ready after {timeout:.0f}s: {names}; {first} log:\n"
                                  + tail(self.logs / f"{first}.log"))
            if time.monotonic() - shown > 3:
                progress(f"  waiting for {', '.join(pending)} ...")
                shown = time.monotonic()
            time.sleep(0.25)

    def down(self, progress: Callable[[str], None] = print) -> bool:
        pid = self.supervisor_pid()
        if not pid:
            progress("opsstack: the stack is not running")
            return False
        progress("opsstack: stopping every program")
        try:
            self._rpc().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error, AttributeError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while self.supervisor_pid():
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.2)
        progress("opsstack: stopped")
        return True

    # ----------------------------------------------------------------- status
    def status(self) -> dict:
        """{"components": {name: {"url", "healthy", "state"}}} of the running (or last) stack."""
        out: dict = {"components": {}, "running": self.running()}
        if not (self.rdir / runtime.RESOLVED_NAME).exists():
            return out
        resolved = yaml.safe_load((self.rdir / runtime.RESOLVED_NAME).read_text())
        resolved["runtime"] = runtime.load_runtime(self.cfg) or {}
        try:
            progs = self.programs(resolved)
        except Exception as exc:  # a binary removed since `up`, say
            log.warning("event=status_programs_failed error=%r", str(exc))
            return out
        states = {}
        if out["running"]:
            try:
                states = {i["name"]: i["statename"] for i in self._rpc().supervisor.getAllProcessInfo()}
            except (OSError, xmlrpc.client.Error):
                states = {}
        for p in progs:
            healthy = bool(out["running"]) and p.ready()
            out["components"][p.name] = {"url": redact_url(p.url), "healthy": healthy,
                                         "state": states.get(p.name, "STOPPED")}
        return out
