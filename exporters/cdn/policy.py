"""Cache policy per content class: hit ratio against the class's target, and what to change
when a class misses it. Pure functions (no I/O), used by the collector and `opsstack cdn report`.

A class (exporters.cdn.classes: static 7 d, api 5 min, dynamic 1 min by default) is judged on a
window's requests of that class; below ``min_requests`` it is not judged (too little traffic to
tell). When its cached share is below its target (the class's ``hit_target``, else the overall
``hit_target``, 0.9) the reason is the dominant kind of non-cached answer:

- ``ttl_too_short``: most misses are expired objects (cacheStatus expired): the TTL ends before
  the object is asked again;
- ``uncacheable``: most are answers the cache may not keep (bypass, dynamic): Cache-Control
  private/no-store, Set-Cookie, or the class is not marked cacheable at the edge;
- ``cold_misses``: most are first requests (miss): too many distinct URLs (query strings,
  cache-busting) or purges too wide;
- ``origin_errors``: 5xx answers are more than a tenth of the class's requests.
"""
from __future__ import annotations

from dataclasses import dataclass

REASONS = ("ttl_too_short", "uncacheable", "cold_misses", "origin_errors")
UNCACHEABLE = frozenset({"bypass", "dynamic", "none", "unknown", "ignored"})


@dataclass(frozen=True)
class ClassPolicy:
    name: str
    ttl: float
    hit_target: float
    content_types: frozenset


@dataclass(frozen=True)
class Verdict:
    cls: str
    requests: float
    hit_ratio: float | None     # None: no requests
    target: float
    judged: bool                # enough requests to judge
    below: bool
    reason: str | None
    text: str


def policies(classes, overall_target: float) -> list[ClassPolicy]:
    """ClassPolicy per configured class (the config view's items: name, ttl, hit_target, content_types)."""
    return [ClassPolicy(c.name, float(c.ttl), float(c.hit_target if c.hit_target is not None else overall_target),
                        frozenset(t.lower() for t in c.content_types)) for c in classes]


def _duration(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"


def judge(p: ClassPolicy, requests: float, cached: float, statuses: dict[str, float], status_5xx: float,
          min_requests: float) -> Verdict:
    ratio = cached / requests if requests > 0 else None
    if requests < min_requests or ratio is None:
        return Verdict(p.name, requests, ratio, p.hit_target, False, False, None,
                       f"{p.name}: {requests:.0f} requests in the window, fewer than {min_requests:.0f}: not judged")
    if ratio >= p.hit_target:
        return Verdict(p.name, requests, ratio, p.hit_target, True, False, None,
                       f"{p.name}: {ratio:.1%} cached, target {p.hit_target:.0%}: ok")
    head = f"{p.name}: {ratio:.1%} cached, below its target {p.hit_target:.0%} (TTL {_duration(p.ttl)})"
    if status_5xx > 0.1 * requests:
        return Verdict(p.name, requests, ratio, p.hit_target, True, True, "origin_errors",
                       f"{head}; {status_5xx / requests:.0%} of its answers are 5xx: the origin fails, fix it "
                       "first or serve stale objects while it does (grace / stale-if-error)")
    expired = statuses.get("expired", 0.0)
    uncacheable = sum(v for k, v in statuses.items() if k in UNCACHEABLE)
    miss = statuses.get("miss", 0.0)
    top = max((expired, "ttl_too_short"), (uncacheable, "uncacheable"), (miss, "cold_misses"))
    reason = top[1]
    advice = {
        "ttl_too_short": f"most misses are expired objects: raise the TTL above {_duration(p.ttl)} (and purge by "
                         "tag when the content changes), or serve stale while revalidating",
        "uncacheable": "most misses are answers the cache may not keep (bypass/dynamic): check Cache-Control "
                       "(private, no-store), Set-Cookie and Vary on this class's responses",
        "cold_misses": "most misses are first requests for an object: normalize the cache key (query strings, "
                       "cache-busting parameters) and purge by tag instead of by prefix or everything",
    }[reason]
    return Verdict(p.name, requests, ratio, p.hit_target, True, True, reason, f"{head}; {advice}")


def overall(verdicts: list[Verdict], cached_total: float, requests_total: float, target: float,
            min_requests: float) -> Verdict:
    p = ClassPolicy("all", 0.0, target, frozenset())
    ratio = cached_total / requests_total if requests_total > 0 else None
    if requests_total < min_requests or ratio is None:
        return Verdict("all", requests_total, ratio, target, False, False, None,
                       f"all classes: {requests_total:.0f} requests, not judged")
    below = ratio < target
    worst = [v.cls for v in verdicts if v.below]
    text = (f"all classes: {ratio:.1%} cached, target {target:.0%}"
            + (f": below; classes below their targets: {', '.join(worst) or 'none (the mix of classes)'}"
               if below else ": ok"))
    return Verdict(p.name, requests_total, ratio, target, True, below, None, text)
