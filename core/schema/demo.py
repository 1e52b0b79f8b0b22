"""`demo:` the simulated Integrated Platform that `opsstack up` monitors by default."""
from core.spec import ConfigError, Field


def _mix(*names):
    def check(v):
        if set(v) != set(names):
            return f"needs exactly the keys {', '.join(names)}"
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 for x in v.values()):
            return "shares must be numbers >= 0"
        if abs(sum(v.values()) - 1.0) > 1e-6:
            return f"shares must add up to 1, got {sum(v.values()):g}"
        return None
    return check


SECTION = {
    "enabled": Field("bool", True, "run the demo platform and monitor it"),
    "seed": Field("int", 42),
    "time_acceleration": Field("float", 1.0, minimum=0.001, help="simulated seconds per real second"),
    "load": Field("bool", True, "run the built-in load generator"),
    # service -> {"admin": port, <region>: port}; filled in by `opsstack up` (leave empty)
    "ports": Field("dict", {}),
    "timezone": Field("str", "Asia/Seoul", "local time of the diurnal curve (IANA name)"),
    "home_region": Field("str", "seoul", "serves capital + provinces users; the other regions serve overseas"),
    "requests_per_second": Field("float", 3.0, minimum=0, help="daily average of real requests/s per service"),
    "peak_factor": Field("float", 3.0, minimum=1.0, help="load at the 14:00-16:00 peak / daily average"),
    "peak_sessions": Field("int", 2450, minimum=0, help="active sessions across the platform at the peak"),
    "home_latency": Field("duration", "95ms", minimum=0),
    "overseas_latency": Field("duration", "160ms", minimum=0),
    "client_mix": Field("dict", {"mobile": 0.78, "web": 0.22}, check=_mix("mobile", "web")),
    "geo_mix": Field("dict", {"capital": 0.65, "provinces": 0.25, "overseas": 0.10},
                     check=_mix("capital", "provinces", "overseas")),
    "volume_capacity_bytes": Field("int", 256 * 1024 * 1024, minimum=1024 * 1024),
    # on the FIRST `opsstack up` (empty Prometheus data folder): this much past history of the
    # demo, generated from its model, is written into Prometheus before it starts (docs/demo.md)
    "backfill": Field("duration", "14d", minimum=0, help="history a fresh stack starts with; 0 = none"),
    # a local mail sink (SMTP + a web page listing what arrived, demo/mailsink.py); when
    # notifications.channels is empty, `opsstack up` makes it the notification channel
    "mailsink": Field("bool", True, "run the local mail sink and, with no channel configured, notify there"),
    # Apache Airflow 3 running the event-creation DAG (demo/airflow, docs/automation.md "Airflow"):
    # heavy (about 1 GB of memory, a minute to start), hence off; needs `make airflow-venv`
    "airflow": Field("bool", False, "run Apache Airflow (standalone, from .venv-airflow) with the demo's DAGs"),
    # `opsstack demo approver` (demo/approver.py) approves the event requests waiting for a manager or
    # an executive (docs/demo.md "Event-request API") this long after the approval was requested
    "airflow_approver_delay": Field("duration", "20s", minimum=0,
                                    help="the approver simulator decides a pending approval after this"),
    # the capacity knob of each region instance (POST /admin/replicas, docs/demo.md): `initial`
    # replicas of `workers` workers each; a request (not /health) holds one worker while it is
    # served and waits for one when all are busy (for at most queue_timeout, then 503)
    "replicas": {
        "initial": Field("int", 2, minimum=1, help="replicas of each region instance at start"),
        "min": Field("int", 2, minimum=1, help="the knob never goes below this"),
        "max": Field("int", 16, minimum=1, help="the knob never goes above this"),
        "workers": Field("int", 2, minimum=1, help="requests one replica serves at once"),
        "queue_timeout": Field("duration", "10s", minimum=0.01, help="longest wait for a free worker"),
    },
    # the demo's traffic path (demo/edge.py, docs/demo.md "Edge"): nginx + ModSecurity/CRS, Varnish,
    # Redis, fail2ban and the fake Cloudflare, started by `opsstack up` in <run_dir>/edge
    "edge": {
        "enabled": Field("bool", True, "run the edge (nginx, Varnish, Redis, fail2ban, fake Cloudflare)"),
        "tls_regions": Field("list", None, nullable=True,
                             help="regions whose nginx listeners serve TLS; null = every region but home_region"),
        "expiring_cert_days": Field("int", 45, minimum=31, maximum=3650,
                                    help="validity of the one 'close to expiry' certificate (over the 30d warning)"),
        "requests_share": Field("float", 0.3, minimum=0, maximum=10,
                                help="edge requests (through nginx) per direct request of the load generator"),
        # {"nginx": {service: {region: port}}, "varnish", "varnish_admin", "redis", "cloudflare"}:
        # filled in by `opsstack up` (leave empty)
        "ports": Field("dict", {}),
    },
    "faults": {
        "max_duration": Field("duration", "1h", minimum=1, help="every fault heals itself after this"),
        "memory_leak_max_bytes": Field("int", 1024 ** 3, minimum=1024 * 1024,
                                       help="cap of retained memory (also <= the service's memory_limit_bytes)"),
        "cpu_ramp_max_cores": Field("float", 0.95, minimum=0.01, maximum=1.0,
                                    help="cap of the burn duty cycle (also <= the service's cpu_limit_cores)"),
        "cpu_ramp_seconds": Field("duration", "2m", minimum=0, help="time from 10% to the cap"),
        "max_latency": Field("duration", "5s", minimum=0, help="cap of latency-spike's added delay"),
        "disk_fill_max_ratio": Field("float", 0.97, minimum=0.01, maximum=1.0),
        "disk_min_free_bytes": Field("int", 1024 ** 3, minimum=0,
                                     help="disk-fill never leaves the real filesystem with less free space"),
    },
}


def check(cfg):
    d = cfg["demo"]
    regions = cfg["platform"]["regions"]
    services = [s["name"] for s in cfg["platform"]["services"]]
    for name, ports in d["ports"].items():  # filled in by `opsstack up`; when set by hand, checked here
        if name not in services:
            raise ConfigError(f"demo.ports.{name}", f"unknown service (services: {', '.join(services)})")
        if not isinstance(ports, dict):
            raise ConfigError(f"demo.ports.{name}", "expected a mapping of admin/<region> -> port")
        for k, v in ports.items():
            if k != "admin" and k not in regions:
                raise ConfigError(f"demo.ports.{name}.{k}", f"unknown region (admin or one of {', '.join(regions)})")
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
                raise ConfigError(f"demo.ports.{name}.{k}", f"expected a TCP port 1-65535, got {v!r}")
    if d["backfill"] and d["backfill"] > cfg["stack"]["retention"]:
        raise ConfigError("demo.backfill", "longer than stack.retention: Prometheus would delete it at once")
    rep = d["replicas"]
    if rep["min"] > rep["max"]:
        raise ConfigError("demo.replicas.min", f"greater than demo.replicas.max ({rep['max']})")
    if not rep["min"] <= rep["initial"] <= rep["max"]:
        raise ConfigError("demo.replicas.initial", f"must be within demo.replicas.min..max ({rep['min']}..{rep['max']})")
    for i, r in enumerate(d["edge"]["tls_regions"] or []):
        if r not in regions:
            raise ConfigError(f"demo.edge.tls_regions[{i}]", f"unknown region (regions: {', '.join(regions)})")
    if d["home_region"] not in regions:
        raise ConfigError("demo.home_region", f"unknown region (regions: {', '.join(regions)})")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(d["timezone"])
    except Exception:
        raise ConfigError("demo.timezone", f"unknown time zone {d['timezone']!r}") from None
