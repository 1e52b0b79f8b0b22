"""Config -> forecast targets (name, PromQL, Spec), and the default targets for the demo stack."""
from __future__ import annotations

from dataclasses import dataclass

from forecasters.engine import Spec
from forecasters.models import DAY, PROPHET_DEFAULTS, WEEK
from core.config import format_duration, parse_duration

SEASONS = {"daily": DAY, "weekly": WEEK}


@dataclass(frozen=True)
class Target:
    name: str
    query: str
    kind: str
    service: str
    team: str
    history: float
    step: float
    spec: Spec

    @property
    def horizon_labels(self) -> dict[float, str]:
        return {h: format_duration(h) for h in self.spec.horizons}

    def labels(self) -> dict[str, str]:
        return {"target": self.name, "kind": self.kind, "service": self.service, "team": self.team}


def threshold_label(v: float) -> str:
    """The `threshold` label value: shortest exact form (0.9, 1, 1e+09)."""
    return f"{float(v):g}"


def build(cfg: dict) -> list[Target]:
    f = cfg["forecast"]
    targets = f["targets"] or default_targets(cfg)
    p = f["prophet"]
    prophet = dict(PROPHET_DEFAULTS)
    prophet.update({k: p[k] for k in ("changepoint_prior_scale", "changepoint_range", "n_changepoints",
                                       "seasonality_prior_scale", "window")})
    out = []
    for t in targets:
        t = _with_defaults(t)
        step = t["step"] or f["step"]
        horizons = tuple(sorted(parse_duration(h) for h in (t["horizons"] or f["horizons"])))
        seasons = tuple(SEASONS[s] for s in (t["seasonality"] or f["seasonality"]))
        spec = Spec(
            step=step, horizons=horizons, thresholds=tuple(float(x) for x in t["thresholds"]),
            direction=t["direction"], lower=t["min"], upper=t["max"], seasonalities=seasons,
            candidates=tuple(f["models"]), folds=f["backtest"]["folds"], ensemble=f["ensemble"],
            ensemble_within=f["ensemble_within"],
            backtest_horizon=f["backtest"]["horizon"], level=f["level"], samples=f["samples"],
            curve_points=f["curve_points"], prophet=tuple(sorted(prophet.items())), model=t["model"],
        )
        out.append(Target(name=t["name"], query=t["query"], kind=t["kind"], service=t["service"],
                          team=t["team"], history=t["history"] or f["history"], step=step, spec=spec))
    return out


_TARGET_DEFAULTS = {"kind": "other", "service": "platform", "team": "ops", "history": None, "step": None,
                    "horizons": None, "thresholds": [], "direction": "above", "min": None, "max": None,
                    "seasonality": None, "model": None}


def _with_defaults(t: dict) -> dict:
    d = dict(_TARGET_DEFAULTS)
    d.update(t)
    return d


def default_targets(cfg: dict) -> list[dict]:
    """What the forecaster watches when `forecast.targets` is empty: the demo platform + host.

    - memory-<service>: resident memory / memory limit of each demo service (OOM at 1.0)
    - cpu-<service>: CPU cores used / CPU limit of each demo service
    - disk-<service>: used ratio of each demo service's data volume
    - disk-root: used ratio of the host's root filesystem (node_exporter)
    - db-storage: size of the PostgreSQL databases (database exporter) over
      `forecast.alerts.db_storage_capacity_bytes`
    - bandwidth: host network receive+transmit bytes/s over a 1 Gbit/s link, as a ratio
    - latency-p95: platform-wide p95 request latency (seconds)
    """
    a = cfg["forecast"]["alerts"]
    out: list[dict] = []
    # the platform job (service memory/CPU/volumes, request latency) is the demo platform's
    services = cfg["platform"]["services"] if cfg["demo"]["enabled"] else []
    for s in services:
        name = s["name"]
        sel = f'job="platform",service="{name}"'
        out.append({
            "name": f"memory-{name}", "kind": "memory", "service": name, "team": s["team"],
            "query": (f"max(process_resident_memory_bytes{{{sel}}}) / "
                      f"max(opsstack_service_memory_limit_bytes{{{sel}}})"),
            "thresholds": [a["memory_threshold"]], "min": 0.0,
        })
        out.append({
            "name": f"cpu-{name}", "kind": "cpu", "service": name, "team": s["team"],
            "query": (f"sum(rate(process_cpu_seconds_total{{{sel}}}[5m])) / "
                      f"max(opsstack_service_cpu_limit_cores{{{sel}}})"),
            "thresholds": [a["cpu_threshold"]], "min": 0.0,
        })
        out.append({
            "name": f"disk-{name}", "kind": "disk", "service": name, "team": s["team"],
            "query": (f"max(opsstack_volume_used_bytes{{{sel}}}) / "
                      f"max(opsstack_volume_capacity_bytes{{{sel}}})"),
            "thresholds": [a["disk_threshold"]], "min": 0.0, "max": 1.0,
        })
    fs = 'mountpoint="/",fstype!~"tmpfs|overlay|squashfs"'
    out.append({
        "name": "disk-root", "kind": "disk", "service": "host", "team": "ops",
        "query": f"1 - max(node_filesystem_avail_bytes{{{fs}}}) / max(node_filesystem_size_bytes{{{fs}}})",
        "thresholds": [a["disk_threshold"]], "min": 0.0, "max": 1.0,
    })
    if cfg["exporters"].get("db", {}).get("enabled"):
        out.append({
            "name": "db-storage", "kind": "db_storage", "service": "database", "team": "dba",
            "query": (f'sum(opsstack_db_database_size_bytes{{job="opsstack_db"}}) / '
                      f'{a["db_storage_capacity_bytes"]:.0f}'),
            "thresholds": [a["db_storage_threshold"]], "min": 0.0, "max": 1.0,
        })
    out.append({
        "name": "bandwidth", "kind": "bandwidth", "service": "host", "team": "ops",
        "query": ('(sum(rate(node_network_receive_bytes_total{device!="lo"}[5m])) + '
                  'sum(rate(node_network_transmit_bytes_total{device!="lo"}[5m]))) / 125000000'),
        "thresholds": [a["bandwidth_threshold"]], "min": 0.0,
    })
    if not services:
        return out
    out.append({
        "name": "latency-p95", "kind": "latency", "service": "platform", "team": "ops",
        "query": ('histogram_quantile(0.95, sum by (le) '
                  '(rate(opsstack_http_request_duration_seconds_bucket{job="platform"}[5m])))'),
        "thresholds": [], "min": 0.0,
    })
    return out
