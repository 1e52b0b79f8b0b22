"""A small client of Airflow 3's REST API v2 for what the demo needs: trigger the event-creation
DAG for a request and read its runs (docs/automation.md "Airflow"). Standard library only.

    af = AirflowClient.from_access(launcher.access(resolved))
    run_id = af.trigger_event_creation(request_id, api_url)
    af.run(DAG_ID, run_id)["state"]

Auth: a JWT from ``POST /auth/token`` (``{"username", "password"}`` -> ``{"access_token"}``),
sent as a bearer token; a 401 gets one new token and one retry. Answers are read up to
``MAX_BODY`` bytes; errors are ``AirflowError`` with the status and Airflow's ``detail``.
"""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request

DAG_ID = "event_creation"
MAX_BODY = 4 * 1024 * 1024


class AirflowError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class AirflowClient:
    def __init__(self, url: str, username: str, password: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.username, self.password, self.timeout = username, password, timeout
        self._token: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_access(cls, access: dict, timeout: float = 10.0) -> "AirflowClient":
        """From ``demo.airflow.launcher.access(resolved)``."""
        return cls(access["url"], access["username"], access["password"], timeout)

    def __repr__(self) -> str:
        return f"AirflowClient({self.url!r}, {self.username!r}, password=***)"

    # -------------------------------------------------------------- transport
    def _send(self, method: str, path: str, body: dict | None, token: str | None) -> tuple[int, dict]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (configured URL)
                status, raw = resp.status, resp.read(MAX_BODY + 1)
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read(MAX_BODY + 1)
        except OSError as e:
            raise AirflowError(0, f"{method} {path}: {e}") from None
        if len(raw) > MAX_BODY:
            raise AirflowError(status, f"{method} {path}: answer over {MAX_BODY} bytes")
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            doc = {}
        return status, doc if isinstance(doc, dict) else {}

    def token(self, renew: bool = False) -> str:
        with self._lock:
            if self._token is None or renew:
                status, doc = self._send("POST", "/auth/token",
                                         {"username": self.username, "password": self.password}, None)
                tok = doc.get("access_token")
                if status not in (200, 201) or not isinstance(tok, str):
                    raise AirflowError(status, f"POST /auth/token: {_detail(doc)}")
                self._token = tok
            return self._token

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """``/api/v2`` + path with the token (renewed once on a 401); the body of a 2xx."""
        status, doc = self._send(method, "/api/v2" + path, body, self.token())
        if status == 401:
            status, doc = self._send(method, "/api/v2" + path, body, self.token(renew=True))
        if not 200 <= status < 300:
            raise AirflowError(status, f"{method} /api/v2{path}: {_detail(doc)}")
        return doc

    # -------------------------------------------------------------- what the demo does
    def trigger(self, dag_id: str, conf: dict, run_id: str | None = None) -> str:
        """A new run of ``dag_id``; ``run_id`` names it (Airflow refuses a second run of the same
        name with 409: a caller that retries cannot start the pipeline twice)."""
        body: dict = {"logical_date": None, "conf": conf}
        if run_id is not None:
            body["dag_run_id"] = run_id
        doc = self.request("POST", f"/dags/{_q(dag_id)}/dagRuns", body)
        return doc["dag_run_id"]

    def trigger_event_creation(self, request_id: int, api: str | None = None, once: bool = False) -> str:
        """One run of the pipeline for an event request the API took in (``api``: its base URL;
        None: the DAG's Variable opsstack_eventreq_api). ``once``: name the run after the request
        (``event-request-<id>``), so that a second trigger of the same request is refused (409)."""
        conf: dict = {"request_id": int(request_id)}
        if api:
            conf["api"] = api
        return self.trigger(DAG_ID, conf, run_id=f"event-request-{int(request_id)}" if once else None)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        doc = self.request("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances")
        return {t["task_id"]: t["state"] for t in doc.get("task_instances", [])}

    def import_errors(self) -> list[dict]:
        return self.request("GET", "/importErrors").get("import_errors", [])


def _q(s: str) -> str:
    return urllib.parse.quote(str(s), safe="")


def _detail(doc: dict) -> str:
    d = doc.get("detail") if isinstance(doc, dict) else None
    return str(d)[:300] if d is not None else "no detail"
