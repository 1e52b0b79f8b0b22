"""docker-compose.yml: parses, pinned images, healthchecks, named volumes, mounted paths exist,
and it mounts the very files the rest of the suite validates (rules, provisioning, dashboards).

Docker itself is not needed (and not available on CI): this reads the file.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from alert_rules import build as rules_build
from dashboards import provisioning as dash_prov
from core.config import load
from stack.prometheus_config import DOCKER_HOSTS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DATA_DIRS = {"prometheus": "/prometheus", "alertmanager": "/alertmanager", "grafana": "/var/lib/grafana",
             "postgres": "/var/lib/postgresql/data"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services(compose) -> dict[str, dict]:
    return compose["services"]


def mounts(svc: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of every short-syntax volume of a service."""
    out = []
    for v in svc.get("volumes") or []:
        assert isinstance(v, str), f"use the short volume syntax: {v}"
        parts = v.split(":")
        src, dst = parts[0], parts[1]
        out.append((src, dst, parts[2] if len(parts) > 2 else "rw"))
    return out


def host_path(src: str) -> Path:
    return (ROOT / src).resolve()


def _flag(svc: dict, name: str) -> str | None:
    for arg in svc.get("command") or []:
        if isinstance(arg, str) and arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def _mounted_at(svc: dict, container_path: str) -> Path | None:
    """The host path that a container path comes from (longest matching mount target)."""
    best = None
    for src, dst, _ in mounts(svc):
        if not src.startswith("."):
            continue
        p = PurePosixPath(container_path)
        d = PurePosixPath(dst)
        if p == d or d in p.parents:
            if best is None or len(dst) > len(best[1]):
                best = (src, dst)
    if best is None:
        return None
    rel = PurePosixPath(container_path).relative_to(best[1])
    return host_path(best[0]) / rel


# ------------------------------------------------------------------ shape

def test_parses_and_has_every_program(compose):
    names = set(services(compose))
    expected = {"prometheus", "alertmanager", "grafana", "postgres", "node-exporter", "receiver",
                "exporter-app", "exporter-db", "forecaster"}
    cfg = load(ROOT / "docker" / "opsstack.yaml")
    expected |= {f"demo-{s['name']}" for s in cfg["platform"]["services"]}
    try:  # programs the demo adds to the native stack run here too
        from demo.db import launcher_programs

        resolved = dict(cfg, demo=dict(cfg["demo"], enabled=True))
        expected |= {p["name"] for p in launcher_programs(resolved)}
    except ImportError:
        pass
    assert expected <= names, f"missing services: {sorted(expected - names)}"


def test_every_image_is_pinned(compose):
    for name, svc in services(compose).items():
        image = svc.get("image")
        assert image, f"{name}: needs an image (a pinned tag, also for built images)"
        if "@sha256:" in image:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: image {image} is not pinned"


def test_grafana_matches_the_pinned_foundation_sdk(compose):
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    sdk = next(d for d in deps if d.startswith("grafana-foundation-sdk=="))
    major_minor = re.search(r"!(\d+\.\d+)\.", sdk).group(1)
    tag = services(compose)["grafana"]["image"].rpartition(":")[2]
    assert tag.startswith(major_minor + "."), f"grafana {tag} vs {sdk}"


def test_healthchecks(compose):
    for name, svc in services(compose).items():
        if svc.get("restart") == "no":  # one-shot init containers
            continue
        hc = svc.get("healthcheck")
        assert hc and hc.get("test"), f"{name}: no healthcheck"
        assert not hc.get("disable"), f"{name}: healthcheck disabled"


def test_named_volumes_for_data(compose):
    declared = set(compose.get("volumes") or {})
    for name, svc in services(compose).items():
        for src, dst, _ in mounts(svc):
            if not src.startswith((".", "/")):
                assert src in declared, f"{name}: volume {src} is not declared at the top level"
    for name, path in DATA_DIRS.items():
        named = [src for src, dst, _ in mounts(services(compose)[name]) if dst == path]
        assert named and not named[0].startswith((".", "/")), f"{name}: {path} must be a named volume"


def test_every_mounted_path_and_build_context_exists(compose):
    for name, svc in services(compose).items():
        for src, dst, mode in mounts(svc):
            if src.startswith("."):
                assert host_path(src).exists(), f"{name}: {src} does not exist"
                assert mode.startswith("ro"), f"{name}: {src} should be mounted read-only"
        b = svc.get("build")
        if b:
            ctx = host_path(b["context"] if isinstance(b, dict) else b)
            dockerfile = ctx / (b.get("dockerfile", "Dockerfile") if isinstance(b, dict) else "Dockerfile")
            assert dockerfile.exists(), f"{name}: {dockerfile} missing"


def test_ports_are_published_on_loopback_only(compose):
    for name, svc in services(compose).items():
        for p in svc.get("ports") or []:
            assert str(p).startswith("127.0.0.1:"), f"{name}: port {p} must be bound to 127.0.0.1"


# ------------------------------------------------------------------ the files the tests validate

def test_prometheus_mounts_the_validated_config_and_rule_files(compose):
    svc = services(compose)["prometheus"]
    cfg_path = _flag(svc, "config.file")
    assert _mounted_at(svc, cfg_path) == ROOT / "provisioning" / "prometheus" / "prometheus.yml"
    prom = yaml.safe_load((ROOT / "provisioning" / "prometheus" / "prometheus.yml").read_text())
    for pattern in prom["rule_files"]:
        folder = _mounted_at(svc, str(PurePosixPath(pattern).parent))
        assert folder is not None, f"rule_files {pattern} is not mounted"
        loaded = sorted(folder.glob(PurePosixPath(pattern).name))
        committed = sorted(p.resolve() for p in rules_build.committed_files())
        assert loaded == committed, f"Prometheus would load {loaded}, the tests validate {committed}"


def test_alertmanager_mounts_the_validated_config(compose):
    svc = services(compose)["alertmanager"]
    path = _flag(svc, "config.file")
    assert _mounted_at(svc, path) == ROOT / "provisioning" / "alertmanager" / "alertmanager.yml"


def test_grafana_mounts_provisioning_and_dashboards(compose):
    svc = services(compose)["grafana"]
    assert _mounted_at(svc, "/etc/grafana/provisioning") == ROOT / "provisioning" / "grafana"
    for provider in dash_prov.build()["providers"]:
        path = provider["options"]["path"]
        host = _mounted_at(svc, path)
        assert host is not None and host.is_dir(), f"provider {provider['name']}: {path} is not mounted"
        assert list(host.glob("*.json")), f"provider {provider['name']}: no dashboards in {host}"
    home = svc["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert _mounted_at(svc, home).exists()


def test_opsstack_services_run_the_docker_config(compose):
    cfg = load(ROOT / "docker" / "opsstack.yaml")
    for name, svc in services(compose).items():
        if svc.get("image", "").startswith("opsstack:") and svc.get("restart") != "no":
            assert _mounted_at(svc, "/etc/opsstack/opsstack.yaml") == ROOT / "docker" / "opsstack.yaml", name
    # every scrape/alerting target of prometheus.yml is a compose service
    for host in DOCKER_HOSTS.values():
        assert host in services(compose), f"prometheus.yml targets {host}, which is not a compose service"
    for s in cfg["platform"]["services"]:
        for url in s["endpoints"].values():
            host = re.match(r"https?://([^:/]+)", url).group(1)
            assert host in services(compose), f"{s['name']}: endpoint host {host} is not a compose service"


def test_every_built_image_starts_from_a_tagged_base(compose):
    for name, svc in services(compose).items():
        b = svc.get("build")
        if not b:
            continue
        dockerfile = host_path(b["context"]) / b.get("dockerfile", "Dockerfile")
        froms = re.findall(r"^FROM\s+(?:--\S+\s+)?(\S+)", dockerfile.read_text(), re.M)
        assert froms, f"{name}: no FROM in {dockerfile}"
        for f in froms:
            assert ":" in f and not f.endswith(":latest"), f"{name}: base image {f} is not pinned"


def test_dockerfile_is_pinned_and_installs_the_project():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms), froms
    assert "pyproject.toml" in text and "pip install" in text
    assert re.search(r"^USER\s+(?!root|0)\S+", text, re.M), "the image must not run as root"
