"""The one Prometheus HTTP API client of the project (query, query_range, rules, alerts).

    prom = Prometheus("http://127.0.0.1:9090", timeout=5)
    prom.query("up")                          # data of /api/v1/query: {"resultType", "result"}
    prom.query_range("up", start, end, step)  # data of /api/v1/query_range
    prom.rules(type="alert"), prom.alerts()

Every failure (unreachable, not JSON, status error) is a PrometheusError with one line that
says what happened; callers decide whether that is "source down" or a bad query.
"""
from __future__ import annotations

import requests


class PrometheusError(RuntimeError):
    pass


class PrometheusUnreachable(PrometheusError):
    """No answer at all (connection refused, timeout): the source is down, not the query bad."""


def base_url(cfg: dict, explicit: str | None = None) -> str | None:
    """``explicit`` when set, else the stack's own Prometheus (stack.host, stack.ports.prometheus);
    None when that port is still 'auto' (not resolved by `opsstack up`)."""
    if explicit:
        return explicit.rstrip("/")
    port = cfg["stack"]["ports"].get("prometheus")
    if port in (None, "auto"):
        return None
    return f"http://{cfg['stack']['host']}:{port}"


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = session or requests

    def get(self, path: str, params: dict | None = None) -> dict:
        """``data`` of a GET on the HTTP API (``path`` like /api/v1/query)."""
        try:
            r = self._http.get(self.url + path, params=params or {}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise PrometheusUnreachable(f"prometheus unreachable: {exc}") from None
        try:
            body = r.json()
        except ValueError:
            raise PrometheusError(f"prometheus answered {r.status_code} without JSON") from None
        if body.get("status") != "success":
            raise PrometheusError(f"prometheus {body.get('errorType', r.status_code)}: {body.get('error', '')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> dict:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.get("/api/v1/query", params)

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict:
        return self.get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                "step": f"{max(step, 0.001):g}"})

    def rules(self, type: str | None = None) -> list[dict]:  # noqa: A002 - the API's parameter name
        return self.get("/api/v1/rules", {"type": type} if type else {}).get("groups", [])

    def alerts(self) -> list[dict]:
        return self.get("/api/v1/alerts").get("alerts", [])
