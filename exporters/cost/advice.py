"""The inventory (config, then AWS, then OpenCost) and the advice read from Prometheus: rightsizing
per group, reserved capacity, the utilisation band per service, cost per 1,000 requests.
Used by the exporter's gauges and `opsstack cost report` (docs/cost.md)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

from core.prom import Prometheus, PrometheusError
from exporters.cost import pricing
from exporters.cost.pricing import Group, InstanceType
from exporters.cost.rightsizing import Finding, Rules, Usage, classify

log = logging.getLogger("opsstack.exporter.cost")
HOUR = 3600.0


def types_of(settings) -> dict[str, InstanceType]:
    return {t.name: InstanceType(t.name, t.vcpu, t.memory_bytes, t.hourly_price, t.reserved_hourly_price)
            for t in settings.types}


def config_groups(settings, types: dict[str, InstanceType]) -> list[Group]:
    out = []
    for i in settings.instances:
        g = pricing.price_group(i.name, i.service, i.region, i.type, i.count, i.purchase, types, i.hourly_price)
        if g is not None:
            out.append(g)
    return out


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "")


def fill(template: str, g: Group) -> str:
    """A usage query of group ``g`` ({service}, {region} replaced by its escaped labels)."""
    return template.replace("{service}", _escape(g.service)).replace("{region}", _escape(g.region))


def _scalar(prom: Prometheus, expr: str, at: float) -> float | None:
    res = prom.query(expr, at)["result"]
    vals = [float(r["value"][1]) for r in res]
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) if vals else None


@dataclass
class GroupUsage:
    group: Group
    usage: Usage                                   # per instance
    hourly_cores: dict[float, float] = field(default_factory=dict)  # hour -> cores of the group


@dataclass
class Advice:
    at: float
    window: float
    currency: str
    hours_per_month: float
    groups: list[Group]
    types: dict[str, InstanceType]
    usages: list[GroupUsage]
    findings: list[Finding]
    baseline: dict[tuple[str, str], int]
    reservations: list[pricing.Reservation]
    band: dict[str, dict]
    per_1000: dict[str, list[tuple[float, float]]]
    bandwidth: dict[tuple[str, str], float]        # (service or 'cdn', region) -> hourly
    bandwidth_source: str | None

    def to_json(self) -> dict:
        hpm = self.hours_per_month
        by_service = pricing.totals(self.groups, lambda g: g.service)
        by_region = pricing.totals(self.groups, lambda g: g.region)
        total = sum(by_service.values())
        return {
            "at": self.at, "window_seconds": self.window, "currency": self.currency,
            "spend": {
                "hourly": total, "monthly": total * hpm,
                "by_service_monthly": {k: v * hpm for k, v in sorted(by_service.items())},
                "by_region_monthly": {k: v * hpm for k, v in sorted(by_region.items())},
                "bandwidth_monthly": {f"{s}/{r}": v * hpm for (s, r), v in sorted(self.bandwidth.items())},
                "bandwidth_source": self.bandwidth_source,
                "on_demand_share": pricing.on_demand_share(self.groups),
                "reserved_coverage": pricing.coverage(self.groups),
            },
            "findings": [dict(asdict(f), monthly_saving=f.monthly_saving(hpm), blocked=f.blocked)
                         for f in self.findings],
            "rightsizing_monthly_saving": sum(f.monthly_saving(hpm) for f in self.findings),
            "reserved": {
                "baseline": [{"type": t, "region": r, "instances": n} for (t, r), n in sorted(self.baseline.items())],
                "recommendations": [dict(asdict(r), yearly_saving=r.yearly_saving()) for r in self.reservations],
                "yearly_saving": sum(r.yearly_saving() for r in self.reservations),
            },
            "utilisation_band": self.band,
            "cost_per_1000_requests": {s: [[t, v] for t, v in pts] for s, pts in sorted(self.per_1000.items())},
        }


def group_usage(prom: Prometheus, g: Group, usage, report, at: float) -> GroupUsage:
    """One group's usage per instance over the window ending at ``at``."""
    scale = usage.demo_load_scale / g.count
    w, step = f"{int(report.window)}s", f"{int(report.step)}s"
    cq, mq = fill(usage.cpu_cores_query, g), fill(usage.memory_bytes_query, g)

    def q(expr):
        v = _scalar(prom, expr, at)
        return None if v is None else v * scale

    u = Usage(cpu_max=q(f"max_over_time(({cq})[{w}:{step}])"),
              cpu_p95=q(f"quantile_over_time(0.95, ({cq})[{w}:{step}])"),
              cpu_p995=q(f"quantile_over_time(0.995, ({cq})[{w}:{step}])"),
              memory_peak=q(f"max_over_time(({mq})[{w}:{step}])"))
    hourly = {}
    first = math.floor((at - report.window) / HOUR) * HOUR + HOUR
    for s in prom.query_range(cq, first, at, HOUR)["result"]:
        for t, v in s["values"]:
            v = float(v)
            if math.isfinite(v):
                hourly[float(t)] = hourly.get(float(t), 0.0) + v * usage.demo_load_scale
    return GroupUsage(g, u, hourly)


def baseline(usages: list[GroupUsage], at: float, window: float,
             advised: dict[str, str] | None = None) -> dict[tuple[str, str], int]:
    """(type, region) -> the fewest instances running in any hour of the window (a group runs in
    an hour when its usage series has a value then). A group with a rightsizing finding counts
    as its advised type (``advised``: group name -> type): reserve what will stay."""
    advised = advised or {}

    def key_of(u):
        return advised.get(u.group.name, u.group.type), u.group.region

    first = math.floor((at - window) / HOUR) * HOUR + HOUR
    hours = []
    t = first
    while t <= at:
        hours.append(t)
        t += HOUR
    out: dict[tuple[str, str], int] = {}
    for key in sorted({key_of(u) for u in usages}):
        per_hour = [sum(u.group.count for u in usages if key_of(u) == key and h in u.hourly_cores)
                    for h in hours]
        out[key] = min(per_hour) if per_hour else 0
    return out


def utilisation_band(usages: list[GroupUsage], types: dict[str, InstanceType], low: float, high: float) -> dict:
    """Per service: the hourly utilisation (cores used / vCPUs bought) over the window: its P95,
    its last value and the share of hours inside [low, high]."""
    out = {}
    for svc in sorted({u.group.service for u in usages}):
        mine = [u for u in usages if u.group.service == svc and u.group.type in types]
        vcpus = sum(types[u.group.type].vcpu * u.group.count for u in mine)
        hours = sorted({h for u in mine for h in u.hourly_cores})
        if not hours or vcpus <= 0:
            continue
        vals = [sum(u.hourly_cores.get(h, 0.0) for u in mine) / vcpus for h in hours]
        srt = sorted(vals)
        p95 = srt[min(len(srt) - 1, int(math.ceil(0.95 * len(srt))) - 1)]
        out[svc] = {"p95": p95, "last": vals[-1], "in_band_share": sum(low <= v <= high for v in vals) / len(vals),
                    "low": low, "high": high}
    return out


def requests_per_day(prom: Prometheus, groups: list[Group], usage, at: float, window: float) -> dict[str, list]:
    """service -> [(day end, mean requests/s over that day, scaled)]."""
    out: dict[str, dict[float, float]] = {}
    first = at - window + 86400.0
    for g in groups:
        rq = fill(usage.requests_query, g)
        try:
            res = prom.query_range(f"avg_over_time(({rq})[1d:5m])", first, at, 86400.0)["result"]
        except PrometheusError as exc:
            log.warning("event=requests_query_failed group=%s error=%r", g.name, str(exc))
            continue
        for s in res:
            for t, v in s["values"]:
                v = float(v)
                if math.isfinite(v):
                    d = out.setdefault(g.service, {})
                    d[float(t)] = d.get(float(t), 0.0) + v * usage.demo_load_scale
    return {svc: sorted(d.items()) for svc, d in out.items()}


def bandwidth(prom: Prometheus, s, at: float) -> tuple[dict[tuple[str, str], float], str | None]:
    """(service or 'cdn', region) -> hourly cost of the bytes served; the CDN exporter's bytes
    when Prometheus has them, else the demo's requests x bytes per request."""
    prices = dict(s.bandwidth.price_per_gb)
    out = {}
    for r in prom.query(s.bandwidth.cdn_bytes_query, at)["result"]:
        region = r["metric"].get("region", "")
        if region in prices:
            out[("cdn", region)] = pricing.bandwidth_hourly(float(r["value"][1]), prices[region])
    if out:
        return out, "cdn"
    for r in prom.query(s.bandwidth.demo_requests_query, at)["result"]:
        region, svc = r["metric"].get("region", ""), r["metric"].get("service", "")
        if region in prices and svc:
            bps = float(r["value"][1]) * s.usage.demo_load_scale * s.bandwidth.demo_bytes_per_request
            out[(svc[:64], region)] = pricing.bandwidth_hourly(bps, prices[region])
    return out, ("demo" if out else None)


def saved_bandwidth(prom: Prometheus, s, at: float) -> dict[str, float]:
    """region -> hourly cost the CDN cache saves (bytes it kept off the origin)."""
    prices = dict(s.bandwidth.price_per_gb)
    out = {}
    for r in prom.query(s.bandwidth.cdn_saved_bytes_query, at)["result"]:
        region = r["metric"].get("region", "")
        if region in prices:
            out[region] = pricing.bandwidth_hourly(float(r["value"][1]), prices[region])
    return out


def advise(settings, prom: Prometheus, groups: list[Group], types: dict[str, InstanceType],
           at: float | None = None) -> Advice:
    """Everything `opsstack cost report` says, read from Prometheus over report.window."""
    at = time.time() if at is None else at
    r = settings.report
    rules = Rules(r.idle_max_cpu, r.underused_p95_cpu, r.headroom)
    usages = [group_usage(prom, g, settings.usage, r, at) for g in groups]
    findings = [f for f in (classify(u.group, u.usage, types, rules) for u in usages) if f is not None]
    base = baseline(usages, at, r.window, {f.group: f.advised_type for f in findings if f.advised_type})
    res = pricing.reservations(base, groups, types)
    band = utilisation_band(usages, types, r.band_low, r.band_high)
    req = requests_per_day(prom, groups, settings.usage, at, r.window)
    bw, bw_src = bandwidth(prom, settings, at)
    per_1000 = {}
    for svc, pts in req.items():
        hourly = sum(g.hourly for g in groups if g.service == svc) + \
            sum(v for (s, _r), v in bw.items() if s == svc)
        per_1000[svc] = [(t, c) for t, rps in pts
                         if (c := pricing.cost_per_1000_requests(hourly, rps)) is not None]
    return Advice(at, r.window, settings.currency, settings.hours_per_month, groups, types, usages, findings,
                  base, res, band, per_1000, bw, bw_src)
