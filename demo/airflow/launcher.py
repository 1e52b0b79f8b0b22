"""Run Apache Airflow 3 for the demo (``demo.airflow: true``; docs/automation.md "Airflow").

`opsstack up` supervises one program, ``airflow``: ``python -m demo.airflow.launcher -c
<resolved config>``, which writes AIRFLOW_HOME (``<run_dir>/airflow``) and then runs
``airflow standalone`` from ``.venv-airflow`` (api-server, scheduler, dag-processor, triggerer
under one parent; supervisor signals the whole process group, and the launcher returns only
once every part has stopped: ``supervise``). What it sets:

- SQLite in AIRFLOW_HOME, LocalExecutor with parallelism 2, the DAGs folder ``demo/airflow/dags``,
  no example DAGs, DAGs unpaused at creation;
- everything on ``stack.host``: the API server on ``stack.ports.airflow`` (one worker), the log
  servers of the workers and the triggerer on ``stack.ports.airflow_worker_logs`` /
  ``airflow_trigger_logs``; the Execution API URL the task runners call points at that API server;
- the simple auth manager with one user, ``admin`` (role admin), whose password is made once at
  random into ``<run_dir>/airflow/passwords.json`` (0600; the file Airflow's simple auth manager
  reads, ``{"admin": "<password>"}``): clients get a JWT from ``POST /auth/token``
  (``{"username", "password"}``); the JWT, Fernet and session secrets are made once into
  ``secrets.json`` (0600) and kept, so tokens survive a restart;
- the Variable ``opsstack_eventreq_api`` (as AIRFLOW_VAR_OPSSTACK_EVENTREQ_API): the Event
  Management service's admin listener, where the Event-request API is.

``render``/``environment``/``command`` are what the tests use to start a real standalone in a
temporary folder; ``launcher_programs`` is what stack/launcher.py adds (like demo/edge.py's).
"""
from __future__ import annotations

import argparse
import base64
import configparser
import io
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

log = logging.getLogger("opsstack.demo.airflow")

ROOT = Path(__file__).resolve().parents[2]
DAGS = Path(__file__).resolve().parent / "dags"
VENV_ENV = "OPSSTACK_AIRFLOW_VENV"  # another venv than <repo>/.venv-airflow
ADMIN = "admin"
PARALLELISM = 2
EVENT_SERVICE = "event-management"  # serves the Event-request API on its admin listener
PORT_KEYS = ("airflow", "airflow_worker_logs", "airflow_trigger_logs")  # stack.ports
API_VARIABLE = "opsstack_eventreq_api"
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
HEALTH_PATH = "/api/v2/monitor/health"


def venv() -> Path:
    return Path(os.environ.get(VENV_ENV) or ROOT / ".venv-airflow")


def airflow_bin(v: Path | None = None) -> Path:
    return (v or venv()) / "bin" / "airflow"


def installed(v: Path | None = None) -> bool:
    """Whether the Airflow venv is there (``make airflow-venv`` makes it)."""
    b = airflow_bin(v)
    return b.is_file() and os.access(b, os.X_OK)


def enabled(cfg: dict) -> bool:
    return bool(cfg["demo"]["enabled"] and cfg["demo"].get("airflow"))


def paths(home) -> dict[str, Path]:
    h = Path(home)
    return {"home": h, "cfg": h / "airflow.cfg", "passwords": h / "passwords.json", "secrets": h / "secrets.json",
            "db": h / "airflow.db", "logs": h / "logs"}


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _secrets(p: dict) -> dict:
    """The JWT, session and Fernet secrets of this AIRFLOW_HOME: made once, kept."""
    s = _read_json(p["secrets"])
    want = {"jwt_secret": lambda: secrets.token_urlsafe(48), "secret_key": lambda: secrets.token_urlsafe(32),
            "fernet_key": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()}
    if any(not isinstance(s.get(k), str) or not s[k] for k in want):
        s = {k: s.get(k) if isinstance(s.get(k), str) and s.get(k) else make() for k, make in want.items()}
        _write_private(p["secrets"], json.dumps(s))
    return s


def admin_password(home) -> str:
    """The admin's password (made once at random into passwords.json, which Airflow reads)."""
    p = paths(home)
    doc = _read_json(p["passwords"])
    pw = doc.get(ADMIN)
    if not isinstance(pw, str) or len(pw) < 16:
        pw = secrets.token_urlsafe(18)
        _write_private(p["passwords"], json.dumps({ADMIN: pw}) + "\n")
    return pw


def settings(home, host: str, ports: dict, dags=DAGS, parallelism: int = PARALLELISM) -> dict:
    """airflow.cfg as {section: {key: value}}."""
    p = paths(home)
    s = _secrets(p)
    api = f"http://{host}:{int(ports['airflow'])}"
    return {
        "core": {"dags_folder": str(dags), "load_examples": "False", "executor": "LocalExecutor",
                 "parallelism": str(parallelism), "max_active_tasks_per_dag": str(parallelism),
                 "dags_are_paused_at_creation": "False", "auth_manager": SIMPLE_AUTH,
                 "simple_auth_manager_users": f"{ADMIN}:admin", "simple_auth_manager_all_admins": "False",
                 "simple_auth_manager_passwords_file": str(p["passwords"]),
                 "execution_api_server_url": f"{api}/execution/", "fernet_key": s["fernet_key"],
                 "hide_sensitive_var_conn_fields": "True"},
        "database": {"sql_alchemy_conn": f"sqlite:///{p['db']}"},
        "api": {"host": host, "port": str(int(ports["airflow"])), "base_url": api, "workers": "1",
                "secret_key": s["secret_key"], "expose_config": "False"},
        "api_auth": {"jwt_secret": s["jwt_secret"]},
        "logging": {"base_log_folder": str(p["logs"]), "worker_log_server_port": str(int(ports["airflow_worker_logs"])),
                    "trigger_log_server_port": str(int(ports["airflow_trigger_logs"]))},
        "scheduler": {"enable_health_check": "False"},
        "dag_processor": {"refresh_interval": "30", "min_file_process_interval": "30"},
        "triggerer": {"capacity": "100"},
    }


def render(home, host: str, ports: dict, dags=DAGS, parallelism: int = PARALLELISM) -> dict:
    """Write AIRFLOW_HOME (airflow.cfg 0600, passwords.json, secrets.json); return how to reach it:
    {"url", "username", "password_file", "home"}."""
    p = paths(home)
    p["home"].mkdir(parents=True, exist_ok=True)
    p["logs"].mkdir(exist_ok=True)
    admin_password(home)
    cp = configparser.ConfigParser(interpolation=None)
    for section, kv in settings(home, host, ports, dags, parallelism).items():
        cp[section] = kv
    buf = io.StringIO()
    buf.write("# generated by demo/airflow/launcher.py (opsstack); edit opsstack.yaml instead\n")
    cp.write(buf)
    _write_private(p["cfg"], buf.getvalue())
    return {"url": f"http://{host}:{int(ports['airflow'])}", "username": ADMIN,
            "password_file": str(p["passwords"]), "home": str(p["home"])}


def environment(home, variables: dict | None = None, base: dict | None = None, v: Path | None = None) -> dict:
    """The environment of ``airflow standalone``: AIRFLOW_HOME/AIRFLOW_CONFIG, the venv first on
    PATH (standalone starts its parts as ``airflow <part>``) and AIRFLOW_VAR_* Variables."""
    p = paths(home)
    env = {k: val for k, val in (os.environ if base is None else base).items()
           if not k.startswith(("AIRFLOW_", "AIRFLOW__", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"))}
    bindir = str((v or venv()) / "bin")
    env.update(AIRFLOW_HOME=str(p["home"]), AIRFLOW_CONFIG=str(p["cfg"]), VIRTUAL_ENV=str(v or venv()),
               PATH=bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin"), PYTHONUNBUFFERED="1",
               NO_COLOR="1", SQLALCHEMY_SILENCE_UBER_WARNING="1")
    for k, val in (variables or {}).items():
        env["AIRFLOW_VAR_" + k.upper()] = str(val)
    return env


def command(v: Path | None = None) -> list[str]:
    return [str(airflow_bin(v)), "standalone"]


def event_api_url(cfg: dict) -> str | None:
    """The Event-request API's base URL: the Event Management service's admin listener."""
    port = (cfg["demo"].get("ports") or {}).get(EVENT_SERVICE, {}).get("admin")
    return f"http://{cfg['stack']['host']}:{int(port)}" if port else None


def home_of(cfg: dict) -> Path:
    return Path(cfg["stack"]["run_dir"]) / "airflow"


def access(cfg: dict) -> dict:
    """How a client (the automation exporter) reaches the demo's Airflow, for a resolved config:
    url, username, password (made now when it is not yet: the launcher keeps it), password_file."""
    host, port = cfg["stack"]["host"], cfg["stack"]["ports"]["airflow"]
    home = home_of(cfg)
    return {"url": f"http://{host}:{port}", "username": ADMIN, "password": admin_password(home),
            "password_file": str(paths(home)["passwords"])}


def launcher_programs(cfg: dict) -> list[dict]:
    """The supervised ``airflow`` program (stage 2, with the demo services it calls)."""
    if not enabled(cfg):
        return []
    host, ports = cfg["stack"]["host"], cfg["stack"]["ports"]
    resolved = str(Path(cfg["stack"]["run_dir"]) / "opsstack.resolved.yaml")
    return [{"name": "airflow", "argv": [sys.executable, "-m", "demo.airflow.launcher", "-c", resolved],
             "ready_url": f"http://{host}:{ports['airflow']}{HEALTH_PATH}",
             "url": f"http://{host}:{ports['airflow']} (user {ADMIN}, password in "
                    f"{paths(home_of(cfg))['passwords']})",
             "reads": ["demo.enabled", "demo.airflow", "demo.ports"]}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo.airflow.launcher",
                                 description="write AIRFLOW_HOME from the resolved config, then run airflow standalone")
    ap.add_argument("-c", "--config", required=True, help="the resolved opsstack config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with open(args.config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    if not installed():
        log.error("event=airflow_missing venv=%s hint='make airflow-venv'", venv())
        return 2
    home = home_of(cfg)
    info = render(home, cfg["stack"]["host"], cfg["stack"]["ports"])
    api = event_api_url(cfg)
    env = environment(home, {API_VARIABLE: api} if api else {})
    log.info("event=airflow_start url=%s home=%s", info["url"], home)
    return supervise(command(), env, home)


def _group_members(pgid: int, me: int) -> list[int]:
    """The live processes of process group ``pgid`` but ``me`` (Linux /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            out.append(int(d))
    return out


def supervise(cmd: list[str], env: dict, cwd, grace: float = 15.0) -> int:
    """Run ``airflow standalone`` as a child and outlive its parts: standalone dies at once on
    SIGTERM while its API server, scheduler and triggerer (same process group, which supervisor
    signals as a whole) take a few seconds to stop. Returning only when they are gone (SIGKILL
    after ``grace``) keeps `opsstack down` and a restart from racing the old API server for its
    port and the SQLite file."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd)
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    rc = proc.wait()
    pgid, me = os.getpgid(0), os.getpid()
    left = _group_members(pgid, me)
    if left and not stopping:  # standalone ended by itself: stop what it left behind
        for pid in left:
            _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _group_members(pgid, me)
    for pid in left:
        _kill(pid, signal.SIGKILL)
    log.info("event=airflow_stopped rc=%s killed=%d", rc, len(left))
    return 0 if stopping else (rc or 1)


def _kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())
