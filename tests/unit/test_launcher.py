"""What `opsstack up` generates, checked without starting anything."""
from __future__ import annotations

import configparser

from demo import edge
from stack import prometheus_config, runtime
from core.config import load_data
from stack.launcher import Stack


def _resolved(tmp_path, **over):
    data = {"stack": {"run_dir": str(tmp_path / ".run")}}
    data.update(over)
    cfg = load_data(data)
    return cfg, runtime.resolve(cfg)


def test_resolve_allocates_distinct_ports_and_remembers_them(tmp_path):
    cfg, r = _resolved(tmp_path)
    ports = r["runtime"]["ports"]
    flat = [v for k, v in ports.items() if k not in ("demo", "edge")] + \
        [p for d in ports["demo"].values() for p in d.values()] + list(edge.flat_ports(ports["edge"]).values())
    assert len(flat) == len(set(flat))
    assert len(edge.flat_ports(ports["edge"])) == 4 * 3 + 4  # nginx per service x region, varnish x2, redis, cf
    again = runtime.resolve(cfg)
    assert again["runtime"]["ports"] == ports
    # endpoints of the demo platform are filled in per service and region
    svc = r["platform"]["services"][0]
    assert set(svc["endpoints"]) == {"seoul", "singapore", "tokyo"}
    assert r["database"]["url"].endswith(f":{ports['postgres']}/opsstack")
    assert r["runtime"]["embedded_database"] is True
    assert len(r["receiver"]["token"]) >= 32


def test_database_url_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSSTACK_DATABASE_URL", "postgresql://u@db.example:5433/x")
    _, r = _resolved(tmp_path)
    assert r["database"]["url"] == "postgresql://u@db.example:5433/x"
    assert r["runtime"]["embedded_database"] is False


def test_fixed_ports_are_kept(tmp_path):
    _, r = _resolved(tmp_path, stack={"run_dir": str(tmp_path / ".run"), "ports": {"prometheus": 19090}})
    assert r["runtime"]["ports"]["prometheus"] == 19090


def test_supervisord_conf_has_every_program_with_its_log(tmp_path):
    _, r = _resolved(tmp_path)
    st = Stack(r)
    progs = st.programs(r)
    text = st.supervisord_conf(r, progs)
    cp = configparser.RawConfigParser()
    cp.read_string(text)
    names = {s.split(":", 1)[1] for s in cp.sections() if s.startswith("program:")}
    assert {"postgres", "prometheus", "alertmanager", "node_exporter", "receiver", "exporter-app",
            "demo-user-app", "demo-gate-management"} <= names
    for n in names:
        sec = cp[f"program:{n}"]
        assert sec["stdout_logfile"].endswith(f"logs/{n}.log")
        assert sec["autostart"] == "false"  # the launcher starts them in order
    port = r["runtime"]["ports"]["supervisor"]
    assert cp["inet_http_server"]["port"] == f"127.0.0.1:{port}"


def test_prometheus_starts_after_what_it_scrapes_and_before_the_forecaster(tmp_path):
    """Its first scrapes find every target up (no ScrapeTargetDown from a slow start on a fresh
    stack); the forecaster's first pass finds it answering."""
    _, r = _resolved(tmp_path)
    stage = {p.name: p.stage for p in Stack(r).programs(r)}
    assert stage["postgres"] == 1
    scraped = [n for n in stage if n not in ("postgres", "prometheus", "forecaster")]
    assert {"alertmanager", "node_exporter", "receiver", "exporter-app", "exporter-db", "demo-user-app"} <= set(scraped)
    assert max(stage[n] for n in scraped) < stage["prometheus"] < stage["forecaster"]


def test_prometheus_config_scrapes_every_component(tmp_path):
    _, r = _resolved(tmp_path)
    conf = prometheus_config.build(r, "native")
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    assert {"prometheus", "alertmanager", "node", "opsstack_app", "opsstack_receiver", "platform"} <= set(jobs)
    services = {sc["labels"]["service"] for sc in jobs["platform"]["static_configs"]}
    assert services == {s["name"] for s in r["platform"]["services"]}
    assert conf["rule_files"] == [f"{r['stack']['run_dir']}/rules/*.yml"]
    docker = prometheus_config.build(r, "docker")
    assert docker["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert all("127.0.0.1" not in t for j in docker["scrape_configs"] for sc in j["static_configs"]
               for t in sc["targets"])


def test_a_console_login_is_made_when_none_is_configured(tmp_path):
    from werkzeug.security import check_password_hash

    _, r = _resolved(tmp_path)
    [user] = r["receiver"]["console"]["users"]
    pw = (tmp_path / ".run" / "console_password").read_text().strip()
    assert user["name"] == "admin" and check_password_hash(user["password_hash"], pw)
    assert r["runtime"]["console_login"]["password_file"].endswith("console_password")
    # configured users are kept as they are, and nothing is generated
    users = [{"name": "kim", "password_hash": "pbkdf2:sha256:1$x$y"}]
    _, r2 = _resolved(tmp_path / "other", receiver={"console": {"users": users}})
    assert [u["name"] for u in r2["receiver"]["console"]["users"]] == ["kim"]
    assert r2["runtime"]["console_login"] is None
