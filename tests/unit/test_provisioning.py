"""provisioning/grafana and provisioning/prometheus: fixed datasource uids, read-only providers,
one folder per dashboard domain, and generated files that match their generators."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import yaml

from dashboards import common, provisioning as dash_prov
from dashboards.registry import DASHBOARDS
from core.procs import binary

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "provisioning" / "grafana"
PROMETHEUS_YML = ROOT / "provisioning" / "prometheus" / "prometheus.yml"


def datasources() -> list[dict]:
    out = []
    for p in sorted((GRAFANA / "datasources").glob("*.y*ml")):
        out += yaml.safe_load(p.read_text()).get("datasources") or []
    return out


def test_datasources_have_fixed_uids_and_are_not_editable():
    by_uid = {d["uid"]: d for d in datasources()}
    assert set(by_uid) == {common.PROMETHEUS_UID, common.ALERTMANAGER_UID, common.POSTGRES_UID, common.LOKI_UID}
    assert by_uid["loki"]["type"] == "loki"
    assert by_uid["prometheus"]["type"] == "prometheus" and by_uid["prometheus"].get("isDefault")
    assert by_uid["alertmanager"]["type"] == "alertmanager"
    assert by_uid["alertmanager"]["jsonData"]["implementation"] == "prometheus"
    assert by_uid["postgres"]["type"] == common.POSTGRES.type_val
    for d in by_uid.values():
        assert d.get("editable") is False, f"{d['name']}: editable must be false"
    names = [d["name"] for d in by_uid.values()]
    assert len(set(names)) == len(names)


def test_datasources_point_at_compose_services_and_keep_secrets_out():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for d in datasources():
        host = re.match(r"(?:https?://)?([^:/]+)", d["url"]).group(1)
        assert host in compose, f"{d['name']}: {host} is not a compose service"
        for value in (d.get("secureJsonData") or {}).values():
            assert str(value).startswith("$"), f"{d['name']}: secrets come from the environment"


def test_prometheus_datasource_scrape_interval_matches_the_stack():
    from core.config import load

    cfg = load(ROOT / "docker" / "opsstack.yaml")
    prom = next(d for d in datasources() if d["uid"] == "prometheus")
    from core.config import parse_duration

    assert parse_duration(prom["jsonData"]["timeInterval"]) == cfg["stack"]["scrape_interval"]


def test_dashboard_providers_match_the_registry():
    p = GRAFANA / "dashboards" / "opsstack.yml"
    assert p.read_text() == dash_prov.render(), "run `.venv/bin/python -m dashboards.provisioning`"
    providers = yaml.safe_load(p.read_text())["providers"]
    assert {pr["folder"] for pr in providers} == set(DASHBOARDS.values())
    for pr in providers:
        assert pr["allowUiUpdates"] is False and pr["type"] == "file"
        folder = pr["options"]["path"].rsplit("/", 1)[1]
        assert (ROOT / "dashboards" / "json" / folder).is_dir(), f"no dashboards/json/{folder}"
    assert len({pr["options"]["path"] for pr in providers}) == len(providers)


def _render_module():
    spec = importlib.util.spec_from_file_location("docker_render", ROOT / "docker" / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_prometheus_yml_is_the_docker_rendering():
    assert PROMETHEUS_YML.read_text() == _render_module().prometheus_yml(), \
        "run `.venv/bin/python docker/render.py`"


def test_promtool_check_config():
    r = subprocess.run([binary("promtool"), "check", "config", "--syntax-only", str(PROMETHEUS_YML)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_yml_scrapes_the_jobs_the_rules_and_dashboards_select():
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {j["job_name"] for j in prom["scrape_configs"]}
    from core.config import load

    sel = load(ROOT / "docker" / "opsstack.yaml")["alerts"]["selectors"]
    for key in ("platform", "node"):
        m = re.search(r'job="([^"]+)"', sel[key])
        assert m and m.group(1) in jobs, f"alerts.selectors.{key} selects a job prometheus.yml does not scrape"
    assert "alertmanager" in jobs  # the Active alerts row reads alertmanager_alerts{job="alertmanager"}
