"""Grafana Loki in the native stack (docs/logs.md): finding the binary, its config, its rules,
and what the shipped programs are told.

`logs.loki: auto` is resolved by `up` (stack.runtime.resolve) to `on` when a Grafana Loki binary
is found (`logs.loki_binary`, else `loki` on PATH) and says so in `loki -version`; Debian's
`loki` package is an unrelated genetics program and is never taken for it. `build(r, mode)`
is Loki's config (single binary, filesystem storage under <run_dir>/loki, retention
`logs.retention`, the ruler reading <run_dir>/loki-rules and sending to the stack's
Alertmanager); mode "docker" is the file committed in provisioning/loki/loki.yml.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import yaml

from alert_rules import build as rules_build
from alert_rules import logs as log_rules
from core import logship
from core.config import defaults, format_duration
from core.procs import MissingBinary

# the pinned image of docker-compose.yml; a native binary of another version is used as it is
IMAGE = "grafana/loki:3.4.2"
TENANT = "fake"  # Loki's tenant when auth_enabled is false: rules live in <rules dir>/fake/
HERE = Path(__file__).resolve().parent.parent
# the resolved config keys loki.yml and the rules come from (the launcher restarts Loki on a change)
READS = ("logs", "alerts", "platform", "demo.enabled", "exporters.app.enabled", "exporters.db.enabled",
         "forecast.enabled", "stack.evaluation_interval")
COMMITTED_CONFIG = HERE / "provisioning" / "loki" / "loki.yml"
COMMITTED_RULES = HERE / "provisioning" / "loki" / "rules" / TENANT / "logs.yml"


@functools.lru_cache(maxsize=8)
def _is_grafana_loki(path: str) -> bool:
    try:
        res = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return "loki, version" in (res.stdout + res.stderr)


def find_loki(cfg: dict) -> str | None:
    """Path of a Grafana Loki binary, or None."""
    path = cfg["logs"]["loki_binary"] or shutil.which("loki")
    return path if path and _is_grafana_loki(path) else None


def resolve_mode(cfg: dict) -> str:
    """logs.loki with auto made concrete: on | off."""
    mode = cfg["logs"]["loki"]
    if mode == "auto":
        return "on" if find_loki(cfg) else "off"
    return mode


def build(r: dict, mode: str = "native") -> dict:
    lg = r["logs"]
    if mode == "docker":
        host, http, grpc, base = "0.0.0.0", 3100, 9096, "/loki"
        am = "http://alertmanager:9093"
        rules_dir = "/etc/loki/rules"
    else:
        host, http, grpc = r["stack"]["host"], r["stack"]["ports"]["loki"], r["stack"]["ports"]["loki_grpc"]
        base = str(Path(r["stack"]["run_dir"]) / "loki")
        am = f"http://{host}:{r['stack']['ports']['alertmanager']}"
        rules_dir = str(Path(r["stack"]["run_dir"]) / "loki-rules")
    hours = f"{int(lg['retention'] // 3600)}h"  # Loki wants hours (whole days: the schema checks)
    return {
        "auth_enabled": False,
        "server": {"http_listen_address": host, "http_listen_port": http,
                   "grpc_listen_address": host, "grpc_listen_port": grpc, "log_level": "warn"},
        "common": {"instance_addr": "127.0.0.1" if mode != "docker" else None, "path_prefix": base,
                   "replication_factor": 1,
                   "storage": {"filesystem": {"chunks_directory": f"{base}/chunks",
                                              "rules_directory": f"{base}/rules-scratch"}},
                   "ring": {"kvstore": {"store": "inmemory"}}},
        "schema_config": {"configs": [{"from": "2024-01-01", "store": "tsdb", "object_store": "filesystem",
                                       "schema": "v13", "index": {"prefix": "index_", "period": "24h"}}]},
        "limits_config": {"retention_period": hours, "reject_old_samples": True,
                          "reject_old_samples_max_age": hours,
                          # the shipper cuts lines to logs.max_line_bytes; Loki cuts what others send
                          "max_line_size": 262144, "max_line_size_truncate": True},
        "compactor": {"working_directory": f"{base}/compactor", "retention_enabled": True,
                      "delete_request_store": "filesystem"},
        "ruler": {"storage": {"type": "local", "local": {"directory": rules_dir}},
                  "rule_path": f"{base}/rules-scratch", "alertmanager_url": am, "enable_api": True,
                  "evaluation_interval": format_duration(r["stack"]["evaluation_interval"]),
                  "ring": {"kvstore": {"store": "inmemory"}}},
        "analytics": {"reporting_enabled": False},
    }


def _clean(d):
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if v is not None}
    return d


def rules_text(cfg: dict) -> str:
    groups = log_rules.groups(cfg, log_rules.components_of(cfg))
    return ("# Generated from alert_rules/logs.py (Loki ruler, LogQL); do not edit.\n"
            + rules_build.dump({"groups": groups}))


def config_text(r: dict, mode: str = "native") -> str:
    return "# Generated by stack/loki_config.py; do not edit.\n" + yaml.safe_dump(_clean(build(r, mode)),
                                                                               sort_keys=False)


def write(r: dict) -> list[Path]:
    """loki.yml and the ruler's rule file into the run folder."""
    rd = Path(r["stack"]["run_dir"])
    (rd / "loki").mkdir(parents=True, exist_ok=True)
    rules = rd / "loki-rules" / TENANT / "logs.yml"
    rules.parent.mkdir(parents=True, exist_ok=True)
    (rd / "loki.yml").write_text(config_text(r))
    rules.write_text(rules_text(r))
    return [rd / "loki.yml", rules]


def command(r: dict) -> list[str]:
    path = find_loki(r)
    if path is None:
        raise MissingBinary("logs.loki is on but no Grafana Loki binary was found (logs.loki_binary, "
                                "or `loki` on PATH answering `loki -version`); Debian has no package of it: "
                                "set logs.loki: off or install Grafana Loki (docs/logs.md)")
    rd = Path(r["stack"]["run_dir"])
    return [path, f"-config.file={rd / 'loki.yml'}"]


def ready_url(r: dict) -> str:
    return f"http://{r['stack']['host']}:{r['stack']['ports']['loki']}/ready"


def ship_env(r: dict, program: str, opsstack_program: bool) -> dict:
    """The environment that makes a program's core.logs ship its lines (empty: it does not)."""
    lg = r.get("logs", {})
    if not opsstack_program or lg.get("loki") != "on" or not lg.get("ship"):
        return {}
    if program.startswith("demo-") and program[5:] in {s["name"] for s in r["platform"]["services"]}:
        labels = f"component=demo;service={program[5:]}"
    else:
        labels = f"component={program};service={log_rules.STACK_SERVICE}"
    return {logship.ENV_URL: f"http://{r['stack']['host']}:{r['stack']['ports']['loki']}",
            logship.ENV_LABELS: labels,
            "OPSSTACK_LOGSHIP_QUEUE_SIZE": str(lg["queue_size"]),
            "OPSSTACK_LOGSHIP_BATCH_SIZE": str(lg["batch_size"]),
            "OPSSTACK_LOGSHIP_FLUSH_INTERVAL": str(lg["flush_interval"]),
            "OPSSTACK_LOGSHIP_MAX_LINE_BYTES": str(lg["max_line_bytes"])}


def render_committed() -> dict[Path, str]:
    """The docker-compose files: provisioning/loki/loki.yml and the ruler's rules (defaults)."""
    cfg = defaults()
    return {COMMITTED_CONFIG: config_text(cfg, "docker"), COMMITTED_RULES: rules_text(cfg)}


if __name__ == "__main__":  # python -m stack.loki_config: write the committed files
    for path, text in render_committed().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
