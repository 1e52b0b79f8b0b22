"""Scaling alerts (docs/scaling.md): reactive scale-out and scale-in, and the predictive one.

Sources: each region instance's replica knob on the service's own /metrics
(``alerts.selectors.platform``): ``opsstack_demo_replica_cpu_seconds_total{region}`` (busy
worker seconds = replica CPU), ``opsstack_demo_replica_cpu_cores{region}`` (replicas x workers),
``opsstack_demo_replicas{region}``, ``opsstack_demo_replicas_min``; the forecaster's
``opsstack_scaling_recommended_replicas{service,region}`` and the request-rate target's
``opsstack_forecast_next_peak_timestamp_seconds{edge="start"}``.

- ScalingCpuHigh: replica CPU over ``alerts.scaling.cpu_ratio`` (80%, the band's top) for
  ``cpu_for`` -> the scale-out playbook adds replicas.
- ScalingTrafficFalling: replica CPU under ``scale_in_below`` while the last 15 minutes of
  traffic are below the last hour's, above the knob's minimum, for ``scale_in_for`` -> scale in by one.
- ScalingBelowForecast: fewer replicas than the forecaster recommends for the next peak, within
  ``predictive_lead`` of its start -> the scale-ahead playbook adds them before the ramp.

All three are warnings: Alertmanager routes `info` nowhere (stack/alertmanager_config.py), and the
receiver runs a playbook only for a ticket; the ticket closes itself when the action worked.
"""
from __future__ import annotations

from alert_rules.common import alert, fmt, group, selector, team_scopes
from core.config import format_duration

BY = "service, region"


def utilisation(sel: str, window: str) -> str:
    return (f"sum by ({BY}) (rate(opsstack_demo_replica_cpu_seconds_total{sel}[{window}]))\n"
            f"/ on ({BY})\n"
            f"max by ({BY}) (opsstack_demo_replica_cpu_cores{sel})")


def groups(cfg: dict) -> list[dict]:
    a = cfg["alerts"]
    sc = a["scaling"]
    p = a["selectors"]["platform"]
    w = format_duration(a["rate_window"])
    peak_target = cfg["forecast"]["scaling"]["peak_target"]
    lead = int(round(sc["predictive_lead"]))
    svc = "{{ $labels.service }}"
    rules = []
    for team, scope in team_scopes(cfg):
        sel = selector(p, scope)
        rules += [
            alert(cfg, "ScalingCpuHigh",
                  f"{utilisation(sel, w)}\n> {fmt(sc['cpu_ratio'])}",
                  for_seconds=sc["cpu_for"], severity="warning", tier=1, service=svc, team=team,
                  summary="A service region's replicas are busier than the utilisation band.",
                  description=f"The replicas of {svc} in {{{{ $labels.region }}}} are "
                              f"{{{{ $value | humanizePercentage }}}} busy (band top {sc['cpu_ratio']:.0%}); "
                              f"the scale-out playbook adds replicas."),
            alert(cfg, "ScalingTrafficFalling",
                  f"(\n{utilisation(sel, w)}\n< {fmt(sc['scale_in_below'])}\n)\n"
                  f"and on ({BY})\n"
                  f"(\n  sum by ({BY}) (rate(opsstack_http_requests_total{sel}[15m]))\n"
                  f"  < on ({BY})\n  sum by ({BY}) (rate(opsstack_http_requests_total{sel}[1h]))\n)\n"
                  f"and on ({BY})\n"
                  f"(\n  max by ({BY}) (opsstack_demo_replicas{sel})\n"
                  f"  > on (service) group_left\n  max by (service) (opsstack_demo_replicas_min{sel})\n)",
                  for_seconds=sc["scale_in_for"], severity="warning", tier=1, service=svc, team=team,
                  summary="Traffic falls and a service region has more replicas than it needs.",
                  description=f"The replicas of {svc} in {{{{ $labels.region }}}} are only "
                              f"{{{{ $value | humanizePercentage }}}} busy while traffic falls; the scale-in "
                              f"playbook removes one replica."),
            alert(cfg, "ScalingBelowForecast",
                  f"max by ({BY}) (opsstack_scaling_recommended_replicas{selector(scope)})\n"
                  f"> on ({BY})\n"
                  f"max by ({BY}) (opsstack_demo_replicas{sel})\n"
                  f"and on ()\n"
                  f"(\n  min(opsstack_forecast_next_peak_timestamp_seconds{{target=\"{peak_target}\",edge=\"start\"}})"
                  f" - time() < {lead}\n)",
                  for_seconds=300, severity="warning", tier=1, service=svc, team=team,
                  summary="A service region runs fewer replicas than the next peak needs.",
                  description=f"{svc} in {{{{ $labels.region }}}} needs {{{{ $value }}}} replicas at the next "
                              f"peak (starting within {format_duration(sc['predictive_lead'])}) to stay in the "
                              f"utilisation band; the scale-ahead playbook adds them."),
        ]
    return [group("opsstack-scaling", rules)]
