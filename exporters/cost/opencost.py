"""The OpenCost source: GET <url>/allocation?window=..&aggregate=..&accumulate=true (the
documented allocation API: ``{"code": 200, "data": [{name: {"totalCost": .., "window":
{"start", "end"}, ...}}]}``) gives the cost of each namespace/deployment over the window, turned
into an hourly rate; OpenCost's node_total_hourly_cost metric (from Prometheus) the nodes'."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import requests

from core.config import format_duration
from exporters.cost.pricing import Group

_LABEL = re.compile(r"[^a-zA-Z0-9_.:/-]")


class OpenCostError(RuntimeError):
    pass


@dataclass(frozen=True)
class Allocation:
    name: str
    hourly: float
    cpu_hourly: float
    ram_hourly: float


def _hours(window: dict, default: float) -> float:
    try:
        a = datetime.fromisoformat(str(window["start"]).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(window["end"]).replace("Z", "+00:00"))
        h = (b - a).total_seconds() / 3600.0
        return h if h > 0 else default
    except (KeyError, TypeError, ValueError):
        return default


def parse_allocations(body: dict, window_seconds: float) -> list[Allocation]:
    if not isinstance(body, dict) or body.get("code") != 200 or not isinstance(body.get("data"), list):
        code = body.get("code") if isinstance(body, dict) else "?"
        raise OpenCostError(f"unexpected /allocation answer: code {code}")
    out: dict[str, Allocation] = {}
    for step in body["data"]:
        if not isinstance(step, dict):
            continue
        for name, a in step.items():
            if not isinstance(a, dict) or name in ("__idle__", "__unallocated__"):
                continue
            hours = _hours(a.get("window") or {}, window_seconds / 3600.0)
            label = _LABEL.sub("_", str(name))[:64]
            try:
                total, cpu, ram = (float(a.get(k) or 0.0) for k in ("totalCost", "cpuCost", "ramCost"))
            except (TypeError, ValueError):
                continue
            prev = out.get(label)
            al = Allocation(label, total / hours, cpu / hours, ram / hours)
            if prev:
                al = Allocation(label, prev.hourly + al.hourly, prev.cpu_hourly + al.cpu_hourly,
                                prev.ram_hourly + al.ram_hourly)
            out[label] = al
    return sorted(out.values(), key=lambda a: a.name)


NODE_QUERY = "sum by (instance_type, region) (node_total_hourly_cost)"
NODE_COUNT = "count by (instance_type, region) (node_total_hourly_cost)"


def node_groups(prom, at: float | None = None) -> list[Group]:
    """Kubernetes nodes priced by OpenCost (node_total_hourly_cost, from Prometheus): one group per
    (instance type, region), service "kubernetes", priced on demand (OpenCost's own rate)."""
    cost = {(r["metric"].get("instance_type", ""), r["metric"].get("region", "")): float(r["value"][1])
            for r in prom.query(NODE_QUERY, at)["result"]}
    count = {(r["metric"].get("instance_type", ""), r["metric"].get("region", "")): int(float(r["value"][1]))
             for r in prom.query(NODE_COUNT, at)["result"]}
    out = []
    for (itype, region), total in sorted(cost.items()):
        n = count.get((itype, region), 0)
        if n <= 0:
            continue
        itype, region = _LABEL.sub("_", itype or "unknown")[:64], _LABEL.sub("_", region or "unknown")[:64]
        out.append(Group(f"nodes-{itype}-{region}", "kubernetes", region, itype, n, "on_demand", total / n, total / n,
                         "opencost"))
    return out


class OpenCostSource:
    def __init__(self, settings, session: requests.Session | None = None):
        """``settings``: the view of exporters.cost.opencost."""
        self.s = settings
        self.http = session or requests.Session()

    def allocations(self) -> list[Allocation]:
        params = {"window": format_duration(self.s.window), "aggregate": self.s.aggregate, "accumulate": "true"}
        try:
            r = self.http.get(self.s.url.rstrip("/") + "/allocation", params=params, timeout=self.s.timeout)
        except requests.RequestException as exc:
            raise OpenCostError(f"opencost unreachable: {exc}") from None
        if r.status_code != 200:
            raise OpenCostError(f"opencost /allocation answered {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise OpenCostError("opencost /allocation answered without JSON") from None
        return parse_allocations(body, self.s.window)
