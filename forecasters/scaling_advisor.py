"""Replicas each service region needs at the next daily peak, from the forecaster's traffic forecast.

After every forecaster pass (and for `opsstack capacity scaling`):

    peak busy cores(service, region) = next peak of the platform request rate (the `requests`
        target's daily profile, forecasters/peak.py: the 14-16 h peak, re-levelled to the last day)
      x replica CPU seconds that service region spends per platform request now
        (rate(opsstack_demo_replica_cpu_seconds_total[window]) / rate(all requests[window]))

then the fewest replicas that keep that at or under the band's top (forecasters/scaling.py).
Current replicas and cores per replica come from the demo's knob gauges
(`opsstack_demo_replicas`, `opsstack_demo_replica_cpu_cores`). A service region without
those series (nothing measured) gets no recommendation: the gauges are absent, never 0.
"""
from __future__ import annotations

import logging
import math
import time

from core.prom import Prometheus, PrometheusError
from core.spec import format_duration
from prometheus_client.core import GaugeMetricFamily

from forecasters import scaling

log = logging.getLogger("opsstack.forecaster.scaling")

SEL = 'job="platform"'


def _by_sr(data: dict) -> dict[tuple[str, str], float]:
    out = {}
    for r in data.get("result", []):
        m = r.get("metric", {})
        if "service" in m and "region" in m:
            v = float(r["value"][1])
            if math.isfinite(v):
                out[(m["service"], m["region"])] = v
    return out


def queries(window: str) -> dict[str, str]:
    return {
        "busy": f"sum by (service, region) (rate(opsstack_demo_replica_cpu_seconds_total{{{SEL}}}[{window}]))",
        "requests": f"sum(rate(opsstack_http_requests_total{{{SEL}}}[{window}]))",
        "replicas": f"max by (service, region) (opsstack_demo_replicas{{{SEL}}})",
        "cores": f"max by (service, region) (opsstack_demo_replica_cpu_cores{{{SEL}}})",
        "util": f"sum by (service, region) (rate(opsstack_demo_replica_cpu_seconds_total{{{SEL}}}[5m])) "
                f"/ max by (service, region) (opsstack_demo_replica_cpu_cores{{{SEL}}})",
    }


def recommend_all(prom: Prometheus, peak_requests: float, peak_at: float | None, settings,
                  window: str = "1h") -> list[scaling.Recommendation]:
    """Recommendations for every service region the demo's knob gauges name. ``settings``: the
    view of forecast.scaling (band_high, min_replicas, max_replicas)."""
    q = queries(window)
    busy = _by_sr(prom.query(q["busy"]))
    total = prom.query(q["requests"]).get("result", [])
    reqs = float(total[0]["value"][1]) if total else 0.0
    replicas = _by_sr(prom.query(q["replicas"]))
    cores = _by_sr(prom.query(q["cores"]))
    util = _by_sr(prom.query(q["util"]))
    out = []
    if reqs <= 0 or not math.isfinite(reqs):
        return out
    for key in sorted(replicas):
        if key not in cores or key not in busy or replicas[key] <= 0:
            continue
        cap = cores[key] / replicas[key]
        out.append(scaling.recommend(
            key[0], key[1], peak_requests=peak_requests, share=1.0, cpu_per_request=busy[key] / reqs,
            capacity=cap, current=int(replicas[key]), peak_at=peak_at, utilisation_now=util.get(key),
            high=settings.band_high, min_replicas=settings.min_replicas, max_replicas=settings.max_replicas))
    return out


class ScalingAdvisor:
    """Holds the latest recommendations; ``refresh`` after each forecaster pass."""

    def __init__(self, settings, prometheus: str, peak_target: str = "requests"):
        self.settings = settings            # view of forecast.scaling
        self.prometheus = prometheus
        self.peak_target = peak_target
        self.recommendations: list[scaling.Recommendation] = []
        self.updated: float | None = None

    def refresh(self, state, now: float | None = None) -> None:
        now = time.time() if now is None else now
        st = next((s for s in state.snapshot() if s.target.name == self.peak_target), None)
        if st is None or st.peak is None:   # no whole day of traffic yet: nothing to say
            self.recommendations = []
            return
        _, at, _ = st.peak.next_after(now)
        try:
            self.recommendations = recommend_all(Prometheus(self.prometheus, timeout=15), st.peak.value, at,
                                                 self.settings, format_duration(self.settings.window))
            self.updated = now
        except (PrometheusError, OSError, KeyError, ValueError) as exc:
            log.warning("event=scaling_refresh_failed error=%r", str(exc))
            return
        for r in self.recommendations:
            log.info("event=scaling_recommendation service=%s region=%s current=%s recommended=%d "
                     "peak_cores=%.3f", r.service, r.region, r.current, r.recommended, r.peak_load)


class ScalingCollector:
    """opsstack_scaling_* gauges from the latest recommendations (absent before the first)."""

    def __init__(self, advisor: ScalingAdvisor):
        self.advisor = advisor

    def describe(self):
        return []

    def collect(self):
        rec = GaugeMetricFamily("opsstack_scaling_recommended_replicas",
                                "Replicas the service region needs at the next daily peak to stay at or under "
                                "the top of the utilisation band (forecast.scaling).", labels=["service", "region"])
        cur = GaugeMetricFamily("opsstack_scaling_current_replicas",
                                "Replicas the service region runs now (as the recommendation saw them).",
                                labels=["service", "region"])
        util = GaugeMetricFamily("opsstack_scaling_peak_utilisation_ratio",
                                 "Expected replica utilisation at the next peak with the current or the "
                                 "recommended replicas.", labels=["service", "region", "replicas"])
        peak = GaugeMetricFamily("opsstack_scaling_peak_load_cores",
                                 "Expected busy replica cores of the service region at the next peak.",
                                 labels=["service", "region"])
        for r in list(self.advisor.recommendations):
            lv = [r.service, r.region]
            rec.add_metric(lv, r.recommended)
            peak.add_metric(lv, r.peak_load)
            util.add_metric(lv + ["recommended"], r.peak_utilisation)
            if r.current is not None:
                cur.add_metric(lv, r.current)
                u = scaling.utilisation(r.peak_load, r.current, r.capacity)
                if math.isfinite(u):
                    util.add_metric(lv + ["current"], u)
        yield from (rec, cur, util, peak)


def to_markdown(recs: list[scaling.Recommendation], now: float, low: float, high: float) -> str:
    lines = [f"# Scaling ahead of the next peak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(now))})", "",
             f"Band: {low:.0%}-{high:.0%} replica utilisation at the forecast peak.", ""]
    if not recs:
        lines.append("No recommendation: the request-rate target has no daily peak yet (a day of history), "
                     "or no service exports the replica gauges.")
        return "\n".join(lines) + "\n"
    lines += ["| service | region | replicas now | recommended | change | peak at | peak load (cores) | "
              "peak utilisation now -> recommended | band |", "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        d = r.as_dict(low, high)
        when = time.strftime("%m-%d %H:%M UTC", time.gmtime(r.peak_at)) if r.peak_at else "-"
        cur_u = "-" if d["peak_utilisation_current"] is None else f"{d['peak_utilisation_current']:.0%}"
        ch = "-" if r.change is None else f"{r.change:+d}"
        lines.append(f"| {r.service} | {r.region} | {r.current if r.current is not None else '-'} | "
                     f"{r.recommended} | {ch} | {when} | {r.peak_load:.2f} | {cur_u} -> "
                     f"{r.peak_utilisation:.0%} | {d['band']} |")
    lines += ["", "'under' = whole replicas: one fewer would put the peak over the band's top. Apply with the "
              "`scale` remediation action (docs/scaling.md)."]
    return "\n".join(lines) + "\n"
