"""Pure cost maths: instance groups, their hourly and monthly cost, reserved coverage and
utilisation, the reserved-capacity recommendation. No I/O (docs/cost.md)."""
from __future__ import annotations

from dataclasses import dataclass, replace

RESERVED = ("reserved", "savings_plan")


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpu: float
    memory_bytes: int
    hourly_price: float                 # on demand, one instance
    reserved_hourly_price: float | None  # effective reserved rate, None = not offered

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class Group:
    """``count`` identical instances of one type in one region, serving one service."""

    name: str
    service: str
    region: str
    type: str
    count: int
    purchase: str              # on_demand | reserved | savings_plan | spot
    hourly_price: float        # of ONE instance, at its purchase option
    on_demand_price: float     # of ONE instance on demand (for coverage savings)
    source: str = "config"     # config | aws | opencost

    @property
    def hourly(self) -> float:
        return self.hourly_price * self.count

    @property
    def reserved(self) -> bool:
        return self.purchase in RESERVED


def monthly(hourly: float, hours_per_month: float) -> float:
    return hourly * hours_per_month


def price_group(name: str, service: str, region: str, type_: str, count: int, purchase: str,
                types: dict[str, InstanceType], hourly_price: float | None = None,
                source: str = "config") -> Group | None:
    """A Group with its prices: ``hourly_price`` when given, else the type's rate for the purchase
    option; None when neither is known."""
    t = types.get(type_)
    od = t.hourly_price if t else hourly_price
    if hourly_price is None:
        if t is None:
            return None
        hourly_price = t.reserved_hourly_price if purchase in RESERVED and t.reserved_hourly_price is not None \
            else t.hourly_price
    return Group(name, service, region, type_, count, purchase, float(hourly_price),
                 float(od if od is not None else hourly_price), source)


def totals(groups: list[Group], key) -> dict:
    """Sum of the hourly cost of the groups by ``key(group)``."""
    out: dict = {}
    for g in groups:
        k = key(g)
        out[k] = out.get(k, 0.0) + g.hourly
    return out


def coverage(groups: list[Group]) -> float | None:
    """Share of the instance-hours bought reserved (RI or Savings Plan); None without instances."""
    n = sum(g.count for g in groups if g.purchase != "spot")
    if n == 0:
        return None
    return sum(g.count for g in groups if g.reserved) / n


def on_demand_share(groups: list[Group]) -> float | None:
    """Share of the spend that is on demand; None when nothing is spent."""
    total = sum(g.hourly for g in groups)
    if total <= 0:
        return None
    return sum(g.hourly for g in groups if g.purchase == "on_demand") / total


def ri_utilisation(reserved_count: int, running_count: int) -> float | None:
    """Share of the reserved instances that a running instance uses (AWS applies an RI to a
    matching running instance); None when nothing is reserved."""
    if reserved_count <= 0:
        return None
    return min(running_count, reserved_count) / reserved_count


@dataclass(frozen=True)
class Reservation:
    """Reserve ``count`` more instances of ``type`` in ``region``."""

    type: str
    region: str
    baseline: int            # the fewest instances running in any hour of the window
    reserved_now: int
    count: int               # to reserve: baseline - reserved_now (>= 0)
    on_demand_price: float
    reserved_price: float
    hourly_saving: float

    def yearly_saving(self, hours_per_year: float = 8760.0) -> float:
        return self.hourly_saving * hours_per_year


def reservations(baseline: dict[tuple[str, str], int], groups: list[Group],
                 types: dict[str, InstanceType]) -> list[Reservation]:
    """Per (type, region): the steady baseline (the minimum number of instances running in any
    hour of the window) not yet reserved, times (on-demand - effective reserved rate).
    Types without a reserved rate, or where reserving saves nothing, give no recommendation."""
    out = []
    for (type_, region), base in sorted(baseline.items()):
        t = types.get(type_)
        if t is None or t.reserved_hourly_price is None:
            continue
        reserved_now = sum(g.count for g in groups if g.type == type_ and g.region == region and g.reserved)
        todo = max(0, int(base) - reserved_now)
        diff = t.hourly_price - t.reserved_hourly_price
        if todo <= 0 or diff <= 0:
            continue
        out.append(Reservation(type_, region, int(base), reserved_now, todo, t.hourly_price,
                               t.reserved_hourly_price, todo * diff))
    return out


def with_type(g: Group, t: InstanceType) -> Group:
    """``g`` moved to type ``t`` (same purchase option, t's rate)."""
    price = t.reserved_hourly_price if g.reserved and t.reserved_hourly_price is not None else t.hourly_price
    return replace(g, type=t.name, hourly_price=price, on_demand_price=t.hourly_price)


def bandwidth_hourly(bytes_per_second: float, price_per_gb: float) -> float:
    """Cost per hour of serving ``bytes_per_second`` at ``price_per_gb`` (GB = 10^9 bytes)."""
    return bytes_per_second * 3600.0 / 1e9 * price_per_gb


def cost_per_1000_requests(hourly_cost: float, requests_per_second: float) -> float | None:
    if requests_per_second <= 0:
        return None
    return hourly_cost / (requests_per_second * 3600.0 / 1000.0)
