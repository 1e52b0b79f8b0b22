"""The range query the forecaster reads its history with, over the one Prometheus client
(core.prom): one series -> (unix seconds, values) as numpy arrays."""
from __future__ import annotations

import numpy as np
import requests

from core.prom import Prometheus, PrometheusError, PrometheusUnreachable, base_url


class QueryError(RuntimeError):
    """A target's history could not be read; ``unreachable`` when Prometheus did not answer,
    ``empty`` when the query matched no series (a fresh stack, before the first scrapes)."""

    def __init__(self, message: str, unreachable: bool = False, empty: bool = False):
        super().__init__(message)
        self.unreachable = unreachable
        self.empty = empty


def prometheus_url(forecast, cfg: dict) -> str:
    """forecast.prometheus_url (``forecast``: the section's view), else the stack's own Prometheus
    (stack.host, stack.ports.prometheus)."""
    url = base_url(cfg, forecast.prometheus_url)
    if url is None:
        raise QueryError("stack.ports.prometheus is 'auto': run through `opsstack up` or set forecast.prometheus_url")
    return url


def query_range(base: str, query: str, start: float, end: float, step: float,
                timeout: float = 30.0, session: requests.Session | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(unix seconds, values) of the ONE series `query` returns over [start, end]."""
    try:
        data = Prometheus(base, timeout=timeout, session=session).query_range(query, start, end, step)
    except PrometheusUnreachable as exc:
        raise QueryError(str(exc), unreachable=True) from None
    except PrometheusError as exc:
        raise QueryError(str(exc)) from None
    result = data["result"]
    if not result:
        raise QueryError("the query returned no series", empty=True)
    if len(result) > 1:
        raise QueryError(f"the query returned {len(result)} series; aggregate it to one (sum/max by ())")
    vals = result[0]["values"]
    t = np.array([float(v[0]) for v in vals])
    y = np.array([float(v[1]) for v in vals])
    return t, y
