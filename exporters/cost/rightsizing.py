"""Pure rightsizing rules over one instance group's usage in the window (docs/cost.md).

Per instance (a group's usage divided by its count), CPU as a share of the type's vCPUs:
- idle: max CPU <= idle_max_cpu (1%): the smallest type of the family that holds the memory
  peak (and consider stopping it);
- under-used: P95 CPU < underused_p95_cpu (30%): the next smaller type of the family;
- over-provisioned: P99.5 x (1 + headroom) fits a smaller type of the family: the smallest
  such type.
First matching rule wins. The memory guard: a type whose memory is below the observed peak
is never advised; when the guard leaves no type, the finding says so (``blocked``).
"""
from __future__ import annotations

from dataclasses import dataclass

from exporters.cost.pricing import Group, InstanceType, with_type


@dataclass(frozen=True)
class Usage:
    """One INSTANCE's usage over the window (cores and bytes), None = not measured."""

    cpu_max: float | None
    cpu_p95: float | None
    cpu_p995: float | None
    memory_peak: float | None


@dataclass(frozen=True)
class Rules:
    idle_max_cpu: float = 0.01
    underused_p95_cpu: float = 0.30
    headroom: float = 0.20


@dataclass(frozen=True)
class Finding:
    group: str
    service: str
    region: str
    kind: str                 # idle | underused | overprovisioned
    current_type: str
    count: int
    cpu_p95_ratio: float | None
    cpu_max_ratio: float | None
    memory_peak_bytes: float | None
    advised_type: str | None  # None when the memory guard leaves nothing (blocked)
    current_hourly: float     # of the group
    advised_hourly: float | None
    reason: str

    @property
    def blocked(self) -> bool:
        return self.advised_type is None

    def monthly_saving(self, hours_per_month: float) -> float:
        if self.advised_hourly is None:
            return 0.0
        return max(0.0, self.current_hourly - self.advised_hourly) * hours_per_month


def family(types: dict[str, InstanceType], t: InstanceType) -> list[InstanceType]:
    """The types of ``t``'s family, smallest first (vCPUs, then memory, then price)."""
    return sorted((x for x in types.values() if x.family == t.family),
                  key=lambda x: (x.vcpu, x.memory_bytes, x.hourly_price))


def holds(t: InstanceType, memory_peak: float | None) -> bool:
    """The memory guard: an unknown peak holds nowhere smaller (never advise blind)."""
    return memory_peak is not None and t.memory_bytes >= memory_peak


def _smaller(types, t):
    return [x for x in family(types, t) if x.vcpu < t.vcpu and x.hourly_price < t.hourly_price]


def classify(g: Group, u: Usage, types: dict[str, InstanceType], rules: Rules = Rules()) -> Finding | None:
    """The finding for group ``g`` (None when it is fine or its usage is unknown)."""
    t = types.get(g.type)
    if t is None or u.cpu_p95 is None or u.cpu_max is None:
        return None
    p95, mx = u.cpu_p95 / t.vcpu, u.cpu_max / t.vcpu
    smaller = _smaller(types, t)
    kind, cands, why = None, [], ""
    if mx <= rules.idle_max_cpu:
        kind, why = "idle", f"max CPU {mx:.1%} <= {rules.idle_max_cpu:.0%}"
        cands = [x for x in smaller if holds(x, u.memory_peak)][:1]
    elif p95 < rules.underused_p95_cpu:
        kind, why = "underused", f"P95 CPU {p95:.1%} < {rules.underused_p95_cpu:.0%}"
        nxt = smaller[-1:]  # the next smaller type
        cands = [x for x in nxt if holds(x, u.memory_peak)]
    elif u.cpu_p995 is not None:
        need = u.cpu_p995 * (1.0 + rules.headroom)
        fits = [x for x in smaller if x.vcpu >= need]
        if fits:
            kind = "overprovisioned"
            why = f"P99.5 CPU {u.cpu_p995:.2f} cores + {rules.headroom:.0%} fits {fits[0].vcpu:g} vCPUs"
            cands = [x for x in fits if holds(x, u.memory_peak)][:1]
    if kind is None:
        return None
    if not smaller:
        return None  # already the smallest of its family: nothing to advise
    adv = cands[0] if cands else None
    if adv is None:
        peak = "unknown" if u.memory_peak is None else f"{u.memory_peak / 1024 ** 3:.1f} GiB"
        why += f"; no smaller type holds the memory peak ({peak})"
    return Finding(g.name, g.service, g.region, kind, g.type, g.count, p95, mx, u.memory_peak,
                   adv.name if adv else None, g.hourly, with_type(g, adv).hourly if adv else None, why)
