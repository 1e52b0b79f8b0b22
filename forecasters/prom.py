"""Prometheus HTTP API: the range query the forecaster reads its history with."""
from __future__ import annotations

import numpy as np
import requests


class QueryError(RuntimeError):
    pass


def prometheus_url(cfg: dict) -> str:
    f = cfg["forecast"]
    if f.get("prometheus_url"):
        return f["prometheus_url"].rstrip("/")
    port = cfg["stack"]["ports"]["prometheus"]
    if port == "auto":
        raise QueryError("stack.ports.prometheus is 'auto': run through `opsstack up` or set forecast.prometheus_url")
    return f"http://{cfg['stack']['host']}:{port}"


def query_range(base_url: str, query: str, start: float, end: float, step: float,
                timeout: float = 30.0, session: requests.Session | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(unix seconds, values) of the ONE series `query` returns over [start, end]."""
    s = session or requests
    try:
        r = s.get(f"{base_url}/api/v1/query_range",
                  params={"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
                  timeout=timeout)
    except requests.RequestException as exc:
        raise QueryError(f"Prometheus unreachable: {exc}") from None
    try:
        body = r.json()
    except ValueError:
        raise QueryError(f"Prometheus answered {r.status_code} with non-JSON") from None
    if body.get("status") != "success":
        raise QueryError(f"{body.get('errorType', r.status_code)}: {body.get('error', 'query failed')}")
    result = body["data"]["result"]
    if not result:
        raise QueryError("the query returned no series")
    if len(result) > 1:
        raise QueryError(f"the query returned {len(result)} series; aggregate it to one (sum/max by ())")
    vals = result[0]["values"]
    t = np.array([float(v[0]) for v in vals])
    y = np.array([float(v[1]) for v in vals])
    return t, y
