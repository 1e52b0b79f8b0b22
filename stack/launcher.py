"""The native stack: every component as a supervisor program in the run folder.

`up` resolves the config (ports, database, token), renders prometheus.yml, alertmanager.yml,
the rule files and supervisord.conf into <run_dir>, starts supervisord, then starts the
programs in stages, each waited for (supervisor RUNNING and its readiness endpoint) before the
next: the embedded PostgreSQL; everything Prometheus scrapes or notifies; Prometheus; the
forecaster, which reads Prometheus. So Prometheus' first scrapes and rule evaluations find
every target up: a program that is slow to start (a busy machine) is not a ScrapeTargetDown
of a fresh stack, and the forecaster's first pass finds Prometheus answering. Running `up`
again while the stack runs applies what changed in the config (`Stack.apply`): it re-renders
every file, has promtool/amtool check them (a rejected config is put back and the old one keeps
running), reloads Prometheus and Alertmanager, and restarts only the programs whose command,
environment or config sections changed (keeping the demo services' active faults); then it
starts whatever is stopped, and returns once all of them are up. `down` shuts
supervisord down, which stops every program.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from alert_rules import build as rules_build
from core.config import format_duration, redact_url
from core.pg import PostgresUnavailable, ensure_database
from core.procs import binary, http_ok, port_open, tail
from demo import approver, backups
from demo import edge
from demo.airflow import launcher as airflow_launcher
from demo.db import launcher_programs
from exporters import automation as automation_exporter
from exporters.security.access import FAIL2BAN_FILTER, NGINX_LOG_FORMAT
from stack import alertmanager_config, loki_config, prometheus_config, runtime
from stack.pgcluster import Cluster, socket_dir

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    pass


class ConfigRejected(LaunchError):
    """`up` on a running stack: the new config was refused; the old one keeps running."""


# the keys of the resolved config that the opsstack programs read (dotted paths); a program
# is restarted by `up` only when its command, environment or one of these changed
STACK_KEYS = ("stack.host", "stack.ports", "stack.run_dir")
# the receiver reads every section but these (only Prometheus' rules, Alertmanager's routes or
# other programs read them) and, of stack and demo, only the keys in RECEIVER_READS: a change
# elsewhere does not restart it (webhook_receiver/remediation/model.py reads demo.enabled/ports,
# webhook_receiver/kpis.py the KPI targets alerts.kpi)
NOT_READ_BY_RECEIVER = ("alerts", "alertmanager", "forecast", "exporters", "stack", "demo", "runtime")
RECEIVER_READS = STACK_KEYS + ("demo.enabled", "demo.ports", "alerts.kpi")


@dataclass
class Program:
    name: str
    command: list[str]
    ready_url: str | None = None              # 2xx means ready
    ready_fn: Callable[[], bool] | None = None  # or a custom check
    user: str | None = None
    stage: int = 2                            # 1 database, 2 scraped programs, 3 Prometheus, 4 its readers
    env: dict = field(default_factory=dict)
    url: str | None = None                    # what `up` prints for people
    stopsignal: str = "TERM"
    # dotted keys of the resolved config it reads (None: all of it); files it is given by
    # path (prometheus.yml...) are not in here: `apply` reloads on those
    reads: tuple[str, ...] | None = None
    # run before supervisor starts it (when it is not running), e.g. the replica's pg_basebackup
    prepare: Callable[[], None] | None = None

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
        return runtime.supervisor_pid(self.rdir)

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
            fsync = {"fsync": "on" if emb["durable"] else "off"}
            bk = emb["backup"]  # WAL archiving into <run_dir>/pgbackrest (demo/backups.py)
            archive = backups.archive_settings(backups.paths(rd), bk["stanza"], bk["archive_timeout"]) \
                if bk["enabled"] else {}
            archive.update(backups.REPLICATION_SETTINGS)  # also with the replica off: its slot may be left
            cluster = Cluster(rd / "postgres" / "data", ports["postgres"], host=host,
                              preload=emb["preload"], max_connections=emb["max_connections"],
                              settings={**fsync, **archive})
            self._cluster = cluster
            progs.append(Program("postgres", cluster.command(), user=cluster.user, stage=1,
                                 ready_fn=lambda: self._pg_ready(cluster), stopsignal="INT",
                                 url=cluster.url(r["database"]["name"]), reads=()))
            if emb["replica"]["enabled"]:  # pg_basebackup -R once, then a hot standby streaming from a slot
                replica = Cluster(rd / "postgres" / "replica", ports["postgres_replica"], host=host,
                                  preload=emb["preload"], max_connections=emb["max_connections"],
                                  settings={**fsync, "cluster_name": backups.REPLICA_NAME})
                progs.append(Program("postgres-replica", replica.command(), user=replica.user, stage=2,
                                     ready_fn=lambda: self._pg_ready(replica), stopsignal="INT",
                                     url=replica.url(r["database"]["name"]), reads=(),
                                     prepare=lambda: replica.basebackup(cluster, backups.SLOT)))
            if bk["enabled"]:  # stanza, scheduled backups, restore verification, the backup faults
                progs.append(Program("db-backups", ops + ["demo", "backups"], stage=2,
                                     url=f"file://{self.logs / 'db-backups.log'}",
                                     ready_fn=lambda: self._state("db-backups") == "RUNNING",
                                     reads=("database", "exporters.security.backup") + STACK_KEYS))
        progs += [
            Program("prometheus", [binary("prometheus"), f"--config.file={rd / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={rd / 'prometheus'}",
                                   f"--storage.tsdb.retention.time={format_duration(r['stack']['retention'])}",
                                   f"--web.listen-address={host}:{ports['prometheus']}",
                                   "--web.enable-lifecycle"],
                    ready_url=f"http://{host}:{ports['prometheus']}/-/ready",
                    url=f"http://{host}:{ports['prometheus']}", reads=(), stage=3),
            Program("alertmanager", [binary("alertmanager"), f"--config.file={rd / 'alertmanager.yml'}",
                                     f"--storage.path={rd / 'alertmanager'}",
                                     f"--web.listen-address={host}:{ports['alertmanager']}",
                                     "--cluster.listen-address="],
                    ready_url=f"http://{host}:{ports['alertmanager']}/-/ready",
                    url=f"http://{host}:{ports['alertmanager']}", reads=()),
            Program("node_exporter", [binary("node_exporter"), f"--web.listen-address={host}:{ports['node_exporter']}"],
                    ready_url=f"http://{host}:{ports['node_exporter']}/metrics",
                    url=f"http://{host}:{ports['node_exporter']}/metrics", reads=()),
        ]
        if r["demo"]["enabled"]:
            for s in r["platform"]["services"]:
                admin = r["demo"]["ports"][s["name"]]["admin"]
                progs.append(Program(f"demo-{s['name']}", ops + ["demo", "serve", "--service", s["name"]],
                                     ready_url=f"http://{host}:{admin}/health",
                                     url=f"http://{host}:{admin}",
                                     reads=("demo", "platform", "database") + STACK_KEYS))
        if r["exporters"]["app"]["enabled"]:
            progs.append(Program("exporter-app", ops + ["exporter", "app"],
                                 ready_url=f"http://{host}:{ports['exporter_app']}/metrics",
                                 url=f"http://{host}:{ports['exporter_app']}/metrics",
                                 reads=("exporters.app", "platform") + STACK_KEYS))
        if r["exporters"].get("db", {}).get("enabled"):
            progs.append(Program("exporter-db", ops + ["exporter", "db"],
                                 ready_url=f"http://{host}:{ports['exporter_db']}/metrics",
                                 url=f"http://{host}:{ports['exporter_db']}/metrics",
                                 reads=("exporters.db", "database") + STACK_KEYS))
        for name in ("cdn", "security", "cost"):  # exporters/cdn, /security (demo/edge.py wires them), /cost
            if r["exporters"][name]["enabled"]:
                port = ports[f"exporter_{name}"]
                progs.append(Program(f"exporter-{name}", ops + ["exporter", name],
                                     ready_url=f"http://{host}:{port}/metrics", url=f"http://{host}:{port}/metrics",
                                     reads=(f"exporters.{name}",) + STACK_KEYS))
        if automation_exporter.enabled(r):  # exporters/automation: enabled, or the demo runs Airflow
            port = ports["exporter_automation"]
            progs.append(Program("exporter-automation", ops + ["exporter", "automation"],
                                 ready_url=f"http://{host}:{port}/metrics", url=f"http://{host}:{port}/metrics",
                                 reads=("exporters.automation", "receiver.token", "demo.enabled", "demo.ports",
                                        "demo.airflow") + STACK_KEYS))
        if r["forecast"]["enabled"]:
            progs.append(Program("forecaster", ops + ["forecast", "serve"], stage=4,
                                 ready_url=f"http://{host}:{ports['forecaster']}/metrics",
                                 url=f"http://{host}:{ports['forecaster']}/metrics",
                                 reads=("forecast", "platform", "exporters", "demo", "database") + STACK_KEYS))
        progs.append(Program("receiver", ops + ["receiver", "serve"],
                             ready_url=f"http://{host}:{ports['receiver']}/readyz",
                             url=f"http://{host}:{ports['receiver']}",
                             reads=tuple(k for k in r if k not in NOT_READ_BY_RECEIVER) + RECEIVER_READS))
        if r["demo"]["enabled"] and r["demo"]["mailsink"]:  # demo/mailsink.py: where the notifications land
            progs.append(Program("mailsink", ops + ["demo", "mailsink"],
                                 ready_url=f"http://{host}:{ports['mailsink_web']}/health",
                                 url=f"http://{host}:{ports['mailsink_web']}/", reads=STACK_KEYS))
        progs += self._extra_programs(r, ops)
        if r.get("logs", {}).get("loki") == "on":  # Grafana Loki, first: the others ship to it (docs/logs.md)
            progs.insert(0, Program("loki", loki_config.command(r), ready_url=loki_config.ready_url(r), stage=1,
                                    url=f"http://{host}:{ports['loki']}", reads=loki_config.READS + STACK_KEYS))
            for p in progs:  # core/logs.py ships each opsstack program's lines to it
                p.env.update(loki_config.ship_env(r, p.name, p.command[:len(ops)] == ops))
        return progs

    def _extra_programs(self, r: dict, ops: list[str]) -> list[Program]:
        """Programs that other parts declare (e.g. the demo database workload)."""
        extra = []
        host = r["stack"]["host"]
        for spec in (launcher_programs(r) + edge.launcher_programs(r) + airflow_launcher.launcher_programs(r)
                     + approver.launcher_programs(r)):
            # "args": an opsstack subcommand; "argv": a command line of its own (nginx, varnishd...)
            command = list(spec["argv"]) if spec.get("argv") else ops + spec["args"]
            prog = Program(spec["name"], command, ready_url=spec.get("ready_url"),
                           url=spec.get("url") or f"file://{self.logs / (spec['name'] + '.log')}",
                           stage=spec.get("stage", 2),
                           # the keys it declares it reads, or (none declared) the whole config
                           reads=None if spec.get("reads") is None else tuple(spec["reads"]) + STACK_KEYS)
            if spec.get("ready_tcp"):  # ready when its port accepts connections
                prog.ready_fn = lambda port=int(spec["ready_tcp"]): port_open(host, port)
            elif spec.get("ready_path"):  # ready when the file (a socket) exists
                prog.ready_fn = lambda f=Path(spec["ready_path"]): f.exists()
            elif not prog.ready_url:  # no endpoint: ready while supervisor says RUNNING
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
        if r.get("logs", {}).get("loki") == "on":  # loki.yml and the ruler's rules (stack/loki_config.py)
            loki_config.write(r)
        if edge.enabled(r):  # nginx, ModSecurity, Varnish, Redis, fail2ban files and the demo CA
            edge.render(r, NGINX_LOG_FORMAT, FAIL2BAN_FILTER)
        if r["runtime"]["embedded_database"] and r["database"]["embedded"]["backup"]["enabled"]:
            bk, p = r["database"]["embedded"]["backup"], backups.paths(rd)
            backups.write_files(p, backups.render_conf(
                p, bk["stanza"], rd / "postgres" / "data", r["runtime"]["ports"]["postgres"],
                socket_dir(rd / "postgres" / "data"), bk["retention_full"], bk["retention_diff"]))

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
            return self.apply(progress)
        resolved = runtime.resolve(self.cfg)
        runtime.write_resolved(resolved)
        progs = self.programs(resolved)
        if resolved["runtime"]["embedded_database"]:
            progress(f"opsstack: preparing the embedded PostgreSQL cluster in {self.rdir / 'postgres'}")
            self._cluster.init()
        self.render(resolved, progs)
        from stack import backfill  # heavy: numpy + the demo model, only when a stack starts

        backfill.raw_history(resolved, progress)  # first start only: demo.backfill of past data
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
        for stage in sorted({p.stage for p in progs} - {1}):
            self._start_and_wait([p for p in progs if p.stage == stage], progress)
        backfill.after_start(resolved, progress)  # the recording rules over that history
        return resolved

    # ----------------------------------------------------------------- up on a running stack
    def _running_resolved(self) -> dict:
        resolved = yaml.safe_load((self.rdir / runtime.RESOLVED_NAME).read_text())
        resolved["runtime"] = runtime.load_runtime(self.cfg) or {}
        return resolved

    def _rendered(self) -> dict[Path, bytes]:
        """The files `up` writes into the run folder (what `apply` compares and puts back)."""
        names = ["prometheus.yml", "alertmanager.yml", "receiver_token", "supervisord.conf",
                 runtime.RESOLVED_NAME, "runtime.json"]
        files = [self.rdir / n for n in names] + sorted((self.rdir / "rules").glob("*.yml"))
        return {f: f.read_bytes() for f in files if f.exists()}

    def _put_back(self, files: dict[Path, bytes]) -> None:
        for f in (self.rdir / "rules").glob("*.yml"):
            if f not in files:
                f.unlink()
        for f, data in files.items():
            runtime.write_private(f, data.decode())

    @staticmethod
    def fingerprint(p: Program, r: dict) -> str:
        """What a program's behaviour depends on: command, environment and the config it reads."""
        if p.reads is None:
            conf = {k: v for k, v in r.items() if k != "runtime"}
        else:
            conf = {}
            for key in p.reads:
                node = r
                for part in key.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                conf[key] = node
        return json.dumps({"command": p.command, "env": p.env, "user": p.user, "stopsignal": p.stopsignal,
                           "config": conf}, sort_keys=True, default=str)

    def _check_rendered(self) -> None:
        """promtool / amtool on the rendered files; ConfigRejected with their complaint."""
        checks = [("prometheus", [binary("promtool"), "check", "config", str(self.rdir / "prometheus.yml")]),
                  ("alertmanager", [binary("amtool"), "check-config", str(self.rdir / "alertmanager.yml")])]
        for name, cmd in checks:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if res.returncode != 0:
                lines = [x.strip() for x in (res.stderr + "\n" + res.stdout).splitlines()
                         if x.strip() and ("FAILED" in x or "error" in x.lower())]
                raise ConfigRejected(f"{name} rejects the new config: "
                                     + ("; ".join(lines[:3]) or f"{cmd[0]} exited {res.returncode}"))

    def _reload(self, r: dict, name: str) -> None:
        """POST /-/reload to prometheus or alertmanager; ConfigRejected unless it answers 2xx."""
        url = f"http://{r['stack']['host']}:{r['runtime']['ports'][name]}/-/reload"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=60):
                return
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace").strip().splitlines()
            raise ConfigRejected(f"{name} refused the new config (HTTP {exc.code}): {(body or [''])[0][:500]}") from None
        except OSError as exc:
            raise ConfigRejected(f"{name} did not answer the reload at {url}: {exc}") from None

    def _demo_faults(self, r: dict, name: str) -> list[dict]:
        """The active faults of demo program ``name`` (lost when it restarts), or []."""
        svc = name[len("demo-"):]
        port = (r.get("demo", {}).get("ports") or {}).get(svc, {}).get("admin")
        if not name.startswith("demo-") or not port:
            return []
        try:
            with urllib.request.urlopen(f"http://{r['stack']['host']}:{port}/admin/faults", timeout=10) as resp:
                return list(json.loads(resp.read()).get("active") or [])
        except (OSError, ValueError) as exc:
            log.warning("event=apply_demo_faults_unread program=%s error=%r", name, str(exc))
            return []

    def _reinject(self, r: dict, name: str, faults: list[dict]) -> None:
        port = r["demo"]["ports"][name[len("demo-"):]]["admin"]
        for f in faults:
            left = float(f.get("expires", 0)) - time.time()
            if left < 1:
                continue
            body = json.dumps({"kind": f["kind"], "region": f.get("region"), "rate": f.get("rate"),
                               "duration": left}).encode()
            req = urllib.request.Request(f"http://{r['stack']['host']}:{port}/admin/faults", data=body,
                                         method="POST", headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10):
                    pass
            except (OSError, ValueError) as exc:
                log.warning("event=apply_fault_not_kept program=%s kind=%s error=%r", name, f["kind"], str(exc))

    def apply(self, progress: Callable[[str], None] = print) -> dict:
        """`up` on a running stack: apply what changed in the config since the stack started.

        Renders every file again and has promtool and amtool check them: a rejected config is put
        back (ConfigRejected) and the old one keeps running. Then Prometheus and Alertmanager are
        reloaded when their files changed (restarted when their command did), the programs whose
        command, environment or config keys (Program.reads) changed are restarted (a demo
        service's active faults are injected again), new ones started, dropped ones stopped; last,
        whatever is stopped is started. Prints what it did.
        """
        old = self._running_resolved()
        try:
            old_progs: dict[str, Program] | None = {p.name: p for p in self.programs(old)}
        except (KeyError, TypeError, ValueError) as exc:  # resolved by an older opsstack: restart them all
            log.warning("event=apply_old_programs_unknown error=%r", str(exc))
            old_progs = None
        old_files = self._rendered()
        new = runtime.resolve(self.cfg)
        progs = self.programs(new)
        new_progs = {p.name: p for p in progs}
        try:
            runtime.write_resolved(new)
            self.render(new, progs)
            self._check_rendered()
        except BaseException:
            self._put_back(old_files)
            raise
        new_files = self._rendered()

        diff = {p for p in set(old_files) | set(new_files) if old_files.get(p) != new_files.get(p)}
        files_of = {"prometheus": lambda p: p.name == "prometheus.yml" or p.parent.name == "rules",
                    "alertmanager": lambda p: p.name in ("alertmanager.yml", "receiver_token")}

        if old_progs is None:
            running = {i["name"] for i in self._rpc().supervisor.getAllProcessInfo()}
            added = [n for n in new_progs if n not in running]
            removed = [n for n in running if n not in new_progs]
            restart = [n for n in new_progs if n in running]
        else:
            added = [n for n in new_progs if n not in old_progs]
            removed = [n for n in old_progs if n not in new_progs]
            restart = [n for n in new_progs if n in old_progs
                       and self.fingerprint(old_progs[n], old) != self.fingerprint(new_progs[n], new)]
        reloads = [n for n, is_its in files_of.items()
                   if n in new_progs and n not in restart and any(is_its(p) for p in diff)]
        done: list[str] = []
        for n in reloads:
            try:
                self._reload(new, n)
            except ConfigRejected:
                self._put_back(old_files)
                for back in done:
                    try:
                        self._reload(old, back)
                    except ConfigRejected as exc:
                        log.warning("event=apply_reload_back_failed program=%s error=%r", back, str(exc))
                raise
            done.append(n)
        rpc = self._rpc()
        sup_added, sup_changed, sup_removed = rpc.supervisor.reloadConfig()[0]
        restart += [n for n in sup_changed if n not in restart]
        kept_faults = {n: self._demo_faults(old, n) for n in restart}
        for n in removed:
            self._stop(rpc, n)
        for n in sup_removed:
            rpc.supervisor.removeProcessGroup(n)
        for n in restart:
            self._stop(rpc, n)
            if n in sup_changed:
                rpc.supervisor.removeProcessGroup(n)
                rpc.supervisor.addProcessGroup(n)
        for n in sup_added:
            rpc.supervisor.addProcessGroup(n)
        started = self._start_and_wait([p for p in progs if p.stage == 1], progress)
        if "postgres" in restart or "postgres" in added:
            try:
                ensure_database(new["database"]["url"], new["database"]["name"])
            except PostgresUnavailable as exc:
                raise LaunchError(str(exc)) from None
        for stage in sorted({p.stage for p in progs} - {1}):
            started += self._start_and_wait([p for p in progs if p.stage == stage], progress)
        for n, faults in kept_faults.items():
            if faults and n in new_progs:
                self._reinject(new, n, faults)
        was_stopped = [n for n in started if n not in restart and n not in added]
        what = [f"{verb} {', '.join(names)}" for verb, names in (
            ("reloaded", done), ("restarted", restart), ("started", added), ("stopped", removed),
            ("started what was stopped:", was_stopped)) if names]
        if what:
            progress("opsstack: " + "; ".join(what) + "; nothing else changed")
        else:
            progress("opsstack: the stack is already running, nothing changed")
        return new

    def _stop(self, rpc, name: str) -> None:
        try:
            if rpc.supervisor.getProcessInfo(name)["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
                rpc.supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as exc:
            log.warning("event=apply_stop_failed program=%s error=%r", name, exc.faultString)

    def _start_and_wait(self, progs: list[Program], progress) -> list[str]:
        """Start those not running, wait until every one is up: supervisor reports it RUNNING
        (past its startsecs) AND its readiness check answers, so that when `up` returns (a
        first start or `apply` restarting programs) every program runs as a new process that
        serves. Bounded by stack.startup_timeout; a program that never comes up is a
        LaunchError naming it, its supervisor state and its last log lines. The names it started."""
        if not progs:
            return []
        rpc = self._rpc()
        started = []
        # the others first: a prepare step (pg_basebackup) must not hold up their start
        for p in sorted(progs, key=lambda p: p.prepare is not None):
            info = rpc.supervisor.getProcessInfo(p.name)
            if info["statename"] not in ("RUNNING", "STARTING"):
                if p.prepare is not None:
                    try:
                        p.prepare()
                    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
                        raise LaunchError(f"{p.name} could not be prepared: {exc}") from None
                rpc.supervisor.startProcess(p.name, False)
                started.append(p.name)
        timeout = self.cfg["stack"]["startup_timeout"]
        deadline = time.monotonic() + timeout
        pending = {p.name: p for p in progs}
        states: dict[str, str] = {}
        shown = 0.0
        while pending:
            for name, p in list(pending.items()):
                state = states[name] = rpc.supervisor.getProcessInfo(name)["statename"]
                if state == "FATAL":  # startretries used up (BACKOFF, EXITED: supervisor retries)
                    raise LaunchError(f"{name} did not come up: supervisor reports it {state}; last log lines "
                                      f"of {name}:\n" + tail(self.logs / f"{name}.log"))
                # ready() first: a program that answers while supervisor still counts its
                # startsecs is simply asked again on the next round
                if p.ready() and rpc.supervisor.getProcessInfo(name)["statename"] == "RUNNING":
                    progress(f"  ready  {name:<26} {redact_url(p.url) or ''}")
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                first = next(iter(pending))
                what = "; ".join(f"{n} ({states.get(n, 'UNKNOWN')}"
                                 + (", running but not answering " + (redact_url(p.ready_url) or "its readiness check")
                                    if states.get(n) == "RUNNING" else "") + ")"
                                 for n, p in pending.items())
                raise LaunchError(f"did not come up within {timeout:.0f}s: {what}; last log lines of {first}:\n"
                                  + tail(self.logs / f"{first}.log"))
            if time.monotonic() - shown > 3:
                progress(f"  waiting for {', '.join(pending)} ...")
                shown = time.monotonic()
            time.sleep(0.25)
        return started

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
