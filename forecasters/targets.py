"""Config -> forecast targets (name, PromQL, Spec), and the default targets for the demo stack."""
from __future__ import annotations

from dataclasses import dataclass

from forecasters.engine import Spec
from forecasters.models import DAY, PROPHET_DEFAULTS, WEEK
from core.config import format_duration, parse_duration
from core.schema.forecast import PEAK_KINDS

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
    peak: bool = False          # publish the next daily peak (forecasters/peak.py)
    timezone: str = "UTC"       # local time of that peak

    @property
    def horizon_labels(self) -> dict[float, str]:
        return {h: format_duration(h) for h in self.spec.horizons}

    def labels(self) -> dict[str, str]:
        return {"target": self.name, "kind": self.kind, "service": self.service, "team": self.team}


def threshold_label(v: float) -> str:
    """The `threshold` label value: shortest exact form (0.9, 1, 1e+09)."""
    return f"{float(v):g}"


def kind_horizon(cfg: dict, kind: str) -> float | None:
    """How far ahead targets of this kind are forecast and their predictive alert looks
    (forecast.kind_horizons; None for kind `other`)."""
    return cfg["forecast"]["kind_horizons"].get(kind)


def horizons_for(cfg: dict, t: dict) -> tuple[float, ...]:
    """The target's horizons: its own, else forecast.horizons up to its kind's horizon; always
    with the kind's horizon (the one its alert's expression reads)."""
    f = cfg["forecast"]
    kh = kind_horizon(cfg, t.get("kind", "other"))
    if t.get("horizons"):
        hs = {parse_duration(h) for h in t["horizons"]}
    else:
        hs = {parse_duration(h) for h in f["horizons"]}
        if kh is not None:
            hs = {h for h in hs if h <= kh}
    if kh is not None:
        hs.add(kh)
    return tuple(sorted(hs))


def peak_timezone(cfg: dict) -> str:
    return cfg["forecast"]["timezone"] or cfg["demo"]["timezone"]


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
        horizons = horizons_for(cfg, t)
        seasons = tuple(SEASONS[s] for s in (t["seasonality"] or f["seasonality"]))
        spec = Spec(
            step=step, horizons=horizons, thresholds=tuple(float(x) for x in t["thresholds"]),
            direction=t["direction"], lower=t["min"], upper=t["max"], seasonalities=seasons,
            candidates=tuple(f["models"]), folds=f["backtest"]["folds"], ensemble=f["ensemble"],
            ensemble_within=f["ensemble_within"],
            backtest_horizon=f["backtest"]["horizon"], level=f["level"], samples=f["samples"],
            curve_points=f["curve_points"], prophet=tuple(sorted(prophet.items())), model=t["model"],
            change_point=t["kind"] in f["change_point"]["kinds"], change_window=f["change_point"]["window"],
            change_min_t=f["change_point"]["min_t"],
        )
        out.append(Target(name=t["name"], query=t["query"], kind=t["kind"], service=t["service"],
                          team=t["team"], history=t["history"] or f["history"], step=step, spec=spec,
                          peak=t["peak"] if t["peak"] is not None else t["kind"] in PEAK_KINDS,
                          timezone=peak_timezone(cfg)))
    return out


_TARGET_DEFAULTS = {"kind": "other", "service": "platform", "team": "ops", "history": None, "step": None,
                    "horizons": None, "thresholds": [], "direction": "above", "min": None, "max": None,
                    "seasonality": None, "model": None, "peak": None}


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
    - requests: platform-wide request rate (requests/s), sessions: active sessions (concurrent
      users); both publish their next daily peak (time and value)
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
        "name": "requests", "kind": "requests", "service": "platform", "team": "ops",
        "query": 'sum(rate(opsstack_http_requests_total{job="platform"}[5m]))',
        "thresholds": [], "min": 0.0,
    })
    out.append({
        "name": "sessions", "kind": "sessions", "service": "platform", "team": "ops",
        "query": 'sum(opsstack_active_sessions{job="platform"})',
        "thresholds": [], "min": 0.0,
    })
    out.append({
        "name": "latency-p95", "kind": "latency", "service": "platform", "team": "ops",
        "query": ('histogram_quantile(0.95, sum by (le) '
                  '(rate(opsstack_http_request_duration_seconds_bucket{job="platform"}[5m])))'),
        "thresholds": [], "min": 0.0,
    })
    return out
