"""Did the alert's condition clear? Asked of Prometheus.

The expression is the action's ``verify`` query, else the playbook's, else the alert's own
expression taken from its generatorURL (``g0.expr``). A series of the instant query result
belongs to the alert when each of its labels has the same value on the alert (the rule only
adds labels). The condition counts as cleared when no series belongs to the alert
(``recovered_when`` "absent", the default: the query says "still broken"), or, for a verify
block with ``recovered_when: present`` (the query says "healthy again"), when one does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from core.prom import Prometheus, PrometheusError

log = logging.getLogger(__name__)


def expr_from_generator_url(url: str | None) -> str | None:
    """The PromQL expression Prometheus put in an alert's generatorURL (g0.expr)."""
    if not url:
        return None
    q = parse_qs(urlsplit(url).query)
    vals = q.get("g0.expr")
    return vals[0] if vals and vals[0].strip() else None


@dataclass
class Check:
    cleared: bool
    detail: str


def belongs(series_labels: dict, alert_labels: dict) -> bool:
    return all(alert_labels.get(k) == v for k, v in series_labels.items() if k != "__name__")


def check(prom: Prometheus, expr: str, alert_labels: dict, recovered_when: str = "absent") -> Check:
    present = recovered_when == "present"
    data = prom.query(expr)
    rtype = data.get("resultType")
    result = data.get("result")
    if rtype == "scalar":
        v = float(result[1])
        return Check((v != 0) if present else (v == 0), f"scalar {v:g}")
    if rtype != "vector":
        raise PrometheusError(f"verify expression must return an instant vector, got {rtype}")
    mine = [s for s in result if belongs(s.get("metric", {}), alert_labels)]
    if not mine:
        return Check(not present, f"no series of the alert ({len(result)} other)")
    shown = ", ".join(f"{_fmt(s['metric'])}={s['value'][1]}" for s in mine[:3])
    if present:
        return Check(True, f"{len(mine)} series show recovery: {shown}")
    return Check(False, f"{len(mine)} series still match: {shown}")


def any_series(prom: Prometheus, expr: str) -> tuple[bool, str]:
    """(the expression returns at least one series / a non-zero scalar, detail)."""
    data = prom.query(expr)
    if data.get("resultType") == "scalar":
        v = float(data["result"][1])
        return v != 0, f"scalar {v:g}"
    res = data.get("result") or []
    if not res:
        return False, "no series"
    return True, ", ".join(f"{_fmt(s['metric'])}={s['value'][1]}" for s in res[:3])


def _fmt(labels: dict) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"
