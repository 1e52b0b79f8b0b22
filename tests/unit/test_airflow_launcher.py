"""demo/airflow: what `opsstack up` runs for demo.airflow and the AIRFLOW_HOME it writes, checked
without starting Airflow (tests/integration/test_airflow_dag.py starts a real one)."""
from __future__ import annotations

import ast
import configparser
import json
import stat
import sys

from core.config import load_data
from demo.airflow import launcher as AL
from stack import runtime
from stack.launcher import Stack

PORTS = {"airflow": 18080, "airflow_worker_logs": 18793, "airflow_trigger_logs": 18794}


def _resolved(tmp_path, **demo):
    cfg = load_data({"stack": {"run_dir": str(tmp_path / ".run")}, "demo": {"backfill": 0, **demo}})
    return cfg, runtime.resolve(cfg)


def test_off_by_default(tmp_path):
    cfg, r = _resolved(tmp_path)
    assert cfg["demo"]["airflow"] is False
    assert AL.launcher_programs(r) == []
    assert "airflow" not in {p.name for p in Stack(cfg).programs(r)}


def test_on_it_is_one_supervised_program_on_its_own_ports(tmp_path):
    cfg, r = _resolved(tmp_path, airflow=True)
    ports = r["stack"]["ports"]
    assert len({ports[k] for k in AL.PORT_KEYS}) == 3
    prog = next(p for p in Stack(cfg).programs(r) if p.name == "airflow")
    assert prog.command[:3] == [sys.executable, "-m", "demo.airflow.launcher"]
    assert prog.command[-1].endswith(runtime.RESOLVED_NAME)
    assert prog.ready_url == f"http://127.0.0.1:{ports['airflow']}/api/v2/monitor/health"
    assert {"demo.airflow", "demo.ports", "stack.ports"} <= set(prog.reads)
    # the DAG finds the Event-request API on the Event Management service's admin listener
    assert AL.event_api_url(r) == f"http://127.0.0.1:{r['demo']['ports']['event-management']['admin']}"
    acc = AL.access(r)
    assert acc["url"] == f"http://127.0.0.1:{ports['airflow']}" and acc["username"] == "admin"
    assert acc["password"] == json.loads((tmp_path / ".run" / "airflow" / "passwords.json").read_text())["admin"]


def test_demo_off_means_no_airflow(tmp_path):
    _, r = _resolved(tmp_path, airflow=True, enabled=False)
    assert AL.launcher_programs(r) == []


def test_render_writes_a_private_home_and_keeps_its_secrets(tmp_path):
    home = tmp_path / "home"
    info = AL.render(home, "127.0.0.1", PORTS)
    p = AL.paths(home)
    for f in ("cfg", "passwords", "secrets"):
        assert stat.S_IMODE(p[f].stat().st_mode) == 0o600, f
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(p["cfg"])
    assert cp["core"]["executor"] == "LocalExecutor" and cp["core"]["parallelism"] == "2"
    assert cp["core"]["load_examples"] == "False"
    assert (AL.DAGS / "event_creation.py").is_file() and cp["core"]["dags_folder"] == str(AL.DAGS)
    assert cp["core"]["auth_manager"].endswith("SimpleAuthManager")
    assert cp["core"]["simple_auth_manager_users"] == "admin:admin"
    assert cp["core"]["simple_auth_manager_passwords_file"] == str(p["passwords"])
    assert cp["database"]["sql_alchemy_conn"] == f"sqlite:///{p['db']}"
    assert (cp["api"]["host"], cp["api"]["port"], cp["api"]["workers"]) == ("127.0.0.1", "18080", "1")
    assert cp["core"]["execution_api_server_url"] == "http://127.0.0.1:18080/execution/"
    assert cp["logging"]["worker_log_server_port"] == "18793"
    assert cp["logging"]["trigger_log_server_port"] == "18794"
    assert info == {"url": "http://127.0.0.1:18080", "username": "admin", "password_file": str(p["passwords"]),
                    "home": str(home)}
    pw, secrets = AL.admin_password(home), p["secrets"].read_text()
    assert len(pw) >= 16
    AL.render(home, "127.0.0.1", PORTS)  # a restart keeps the login and the JWT/Fernet secrets
    assert AL.admin_password(home) == pw and p["secrets"].read_text() == secrets
    assert set(json.loads(secrets)) == {"jwt_secret", "secret_key", "fernet_key"}


def test_environment_puts_the_venv_first_and_drops_stray_airflow_settings(tmp_path):
    base = {"PATH": "/usr/bin", "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "AIRFLOW_HOME": "/elsewhere",
            "HOME": "/root"}
    env = AL.environment(tmp_path, {AL.API_VARIABLE: "http://127.0.0.1:9"}, base=base, v=tmp_path / "venv")
    assert env["PATH"] == f"{tmp_path / 'venv' / 'bin'}:/usr/bin"
    assert env["AIRFLOW_HOME"] == str(tmp_path) and env["AIRFLOW_CONFIG"] == str(tmp_path / "airflow.cfg")
    assert "AIRFLOW__CORE__EXECUTOR" not in env and env["HOME"] == "/root"
    assert env["AIRFLOW_VAR_OPSSTACK_EVENTREQ_API"] == "http://127.0.0.1:9"
    assert AL.command(tmp_path / "venv") == [str(tmp_path / "venv" / "bin" / "airflow"), "standalone"]
    assert not AL.installed(tmp_path / "venv")


def test_the_dag_file_parses_light():
    """At module level only the Airflow SDK and the standard library: parsing is cheap."""
    tree = ast.parse((AL.DAGS / "event_creation.py").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add(node.module if node.module == "airflow.sdk" else (node.module or "").split(".")[0])
    assert top - set(sys.stdlib_module_names) == {"airflow.sdk"}
