"""Apache Airflow's stable REST API: v2 (Airflow 3) and v1 (Airflow 2).

- v2: ``POST /auth/token`` with ``{"username", "password"}`` answers ``{"access_token": ...}``;
  every call under ``/api/v2`` carries ``Authorization: Bearer <token>``. A 401 (the token
  expired) gets one new token and one retry; a second 401 is an error.
- v1: ``/api/v1`` with HTTP basic auth (the basic_auth API backend).
- ``api_version: auto``: the public health endpoint says which one answers
  (``GET /api/v2/monitor/health``, else ``GET /api/v1/health``); the answer is kept.

Listings follow every page: ``limit``/``offset`` until ``total_entries`` (offset advances by what
a page held, since Airflow caps ``limit`` at its ``maximum_page_limit``), bounded by a cap.
What is read (the documented response shapes):
- ``GET /dags?order_by=dag_id`` -> ``{"dags": [{dag_id, is_paused, ...}], "total_entries"}``
- ``GET /dags/{dag_id|~}/dagRuns?order_by=id&start_date_gte=..`` and ``...&state=queued&state=running``
  -> ``{"dag_runs": [{dag_id, dag_run_id, state, queued_at, start_date, end_date}], "total_entries"}``
- ``GET /dags/~/dagRuns/~/taskInstances?state=failed&end_date_gte=..``
  -> ``{"task_instances": [{dag_id, dag_run_id, task_id, map_index, state}], "total_entries"}``
- health (v2 ``/api/v2/monitor/health``, v1 ``/api/v1/health``): ``{"metadatabase": {status},
  "scheduler": {status, latest_scheduler_heartbeat}, "dag_processor": {status,
  latest_dag_processor_heartbeat}, ...}`` (dag_processor null or absent when it is not separate).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import quote

import requests

from exporters.automation.http import SourceError, iso, parse_time, request_json

log = logging.getLogger("opsstack.exporter.automation")

RUN_STATES = ("queued", "running", "success", "failed")
MAX_TOKEN = 16384


class AirflowError(SourceError):
    pass


@dataclass(frozen=True)
class Dag:
    dag_id: str
    paused: bool


@dataclass(frozen=True)
class Run:
    dag_id: str
    run_id: str
    state: str
    queued_at: float | None
    start: float | None
    end: float | None


@dataclass(frozen=True)
class TaskFailure:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int


@dataclass(frozen=True)
class Health:
    scheduler: str | None           # "healthy", "unhealthy", or None (unknown)
    scheduler_heartbeat: float | None
    dag_processor: str | None
    dag_processor_heartbeat: float | None
    has_dag_processor: bool


def _str(v, limit: int = 1000) -> str | None:
    return v if isinstance(v, str) and 0 < len(v) <= limit else None


def parse_dag(d) -> Dag | None:
    if not isinstance(d, dict) or _str(d.get("dag_id")) is None:
        return None
    return Dag(d["dag_id"], d.get("is_paused") is True)


def parse_run(d, dag_id: str | None = None) -> Run | None:
    if not isinstance(d, dict):
        return None
    dag, run = _str(d.get("dag_id")) or dag_id, _str(d.get("dag_run_id")) or _str(d.get("run_id"))
    state = d.get("state")
    if dag is None or run is None or not isinstance(state, str):
        return None
    return Run(dag, run, state, parse_time(d.get("queued_at")), parse_time(d.get("start_date")),
               parse_time(d.get("end_date")))


def parse_task_failure(d) -> TaskFailure | None:
    if not isinstance(d, dict):
        return None
    dag, run, task = _str(d.get("dag_id")), _str(d.get("dag_run_id")) or _str(d.get("run_id")), _str(d.get("task_id"))
    if dag is None or task is None or d.get("state") not in (None, "failed"):
        return None
    mi = d.get("map_index")
    return TaskFailure(dag, run or "", task, mi if isinstance(mi, int) and not isinstance(mi, bool) else -1)


def parse_health(body) -> Health:
    if not isinstance(body, dict):
        raise AirflowError("health: not a JSON object")

    def part(name, beat):
        p = body.get(name)
        if not isinstance(p, dict):
            return None, None
        st = p.get("status")
        return (st if isinstance(st, str) else None), parse_time(p.get(beat))

    s, sb = part("scheduler", "latest_scheduler_heartbeat")
    d, db = part("dag_processor", "latest_dag_processor_heartbeat")
    return Health(s, sb, d, db, isinstance(body.get("dag_processor"), dict))


class AirflowClient:
    """One Airflow API server; ``settings``: the view of exporters.automation (its ``airflow``
    part, page_limit, timeout, max_response_bytes); ``url``: the resolved API URL."""

    def __init__(self, settings, url: str, session: requests.Session | None = None,
                 password_file: str | None = None):
        """``password_file``: where the password is when ``airflow.password`` is null (read at
        each use: the demo's Airflow writes it when it first starts)."""
        self.s = settings
        self.a = settings.airflow
        self.url = url.rstrip("/")
        self.http = session or requests.Session()
        self.version: str | None = None if self.a.api_version == "auto" else self.a.api_version
        self.token: str | None = None
        self.password_file = password_file

    def password(self) -> str | None:
        """airflow.password, else the password file's (plain text, or JSON {user: password})."""
        if self.a.password is not None or not self.password_file:
            return self.a.password
        try:
            with open(self.password_file, encoding="utf-8") as f:
                text = f.read(65536).strip()
        except OSError:
            return None
        if text.startswith("{"):
            try:
                doc = json.loads(text)
            except ValueError:
                return None
            pw = doc.get(self.a.username) if isinstance(doc, dict) else None
            return pw if isinstance(pw, str) and pw else None
        return text or None

    # ------------------------------------------------------------------ transport
    def _call(self, method: str, path: str, **kw) -> tuple[int, object]:
        return request_json(self.http, method, self.url + path, timeout=self.s.timeout,
                            max_bytes=self.s.max_response_bytes, **kw)

    def detect(self) -> str:
        """The API version (auto: the health endpoint that answers 200)."""
        if self.version is None:
            for version, path in (("v2", "/api/v2/monitor/health"), ("v1", "/api/v1/health")):
                status, _ = self._call("GET", path)
                if status == 200:
                    self.version = version
                    log.info("event=airflow_api version=%s", version)
                    break
            else:
                raise AirflowError("no Airflow API: neither /api/v2/monitor/health nor /api/v1/health answered 200")
        return self.version

    def _new_token(self, password: str) -> str:
        status, body = self._call("POST", "/auth/token", json={"username": self.a.username, "password": password})
        if status not in (200, 201):
            raise AirflowError(f"POST /auth/token answered {status}")
        tok = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(tok, str) or not tok or len(tok) > MAX_TOKEN or any(c in tok for c in "\r\n\x00"):
            raise AirflowError("POST /auth/token: no usable access_token in the answer")
        return tok

    def get(self, path: str, params=None) -> dict:
        """GET ``/api/<version><path>`` with the version's auth; the parsed JSON object."""
        version = self.detect()
        full = f"/api/{version}{path}"
        kw: dict = {"params": params or {}}
        password = self.password()
        for attempt in (0, 1):
            headers = {"Accept": "application/json"}
            if password is not None:
                if version == "v1":
                    kw["auth"] = (self.a.username, password)
                else:
                    if self.token is None:
                        self.token = self._new_token(password)
                    headers["Authorization"] = f"Bearer {self.token}"
            status, body = self._call("GET", full, headers=headers, **kw)
            if status == 401 and version == "v2" and password is not None and attempt == 0:
                log.info("event=airflow_token_refresh reason=401")
                self.token = None  # expired or revoked: one new token, one retry
                continue
            if status != 200:
                raise AirflowError(f"GET {full} answered {status}")
            if not isinstance(body, dict):
                raise AirflowError(f"GET {full}: not a JSON object")
            return body
        raise AirflowError(f"GET {full} answered 401 after a new token")  # pragma: no cover - loop returns

    def pages(self, path: str, key: str, params: dict, cap: int) -> tuple[list, bool]:
        """Every item of a paginated listing (at most ``cap``); (items, complete)."""
        out: list = []
        offset = 0
        while True:
            limit = min(self.s.page_limit, cap - len(out))
            body = self.get(path, {**params, "limit": limit, "offset": offset})
            items, total = body.get(key), body.get("total_entries")
            if not isinstance(items, list) or isinstance(total, bool) or not isinstance(total, int):
                raise AirflowError(f"{path}: no {key!r} list or total_entries in the answer")
            out.extend(items[:limit])
            offset += len(items)
            if not items or offset >= total:
                return out, True
            if len(out) >= cap:
                return out, False

    # ------------------------------------------------------------------ reads
    def health(self) -> Health:
        version = self.detect()
        status, body = self._call("GET", "/api/v2/monitor/health" if version == "v2" else "/api/v1/health")
        if status != 200:
            raise AirflowError(f"health answered {status}")
        return parse_health(body)

    def dags(self) -> list[Dag]:
        items, complete = self.pages("/dags", "dags", {"order_by": "dag_id"}, cap=100000)
        if not complete:
            log.warning("event=airflow_dags_capped read=%d", len(items))
        return [d for d in map(parse_dag, items) if d is not None]

    def runs(self, since: float, dag_ids: list[str] | None, cap: int) -> tuple[list[Run], bool]:
        """The runs started since ``since`` plus every queued or running run: one listing for all
        DAGs (``dag_ids`` None: ``~``) or one per DAG. (runs, complete)."""
        targets = ["~"] if dag_ids is None else list(dag_ids)
        seen: dict[tuple[str, str], Run] = {}
        complete = True
        for dag in targets:
            path = f"/dags/{quote(dag, safe='')}/dagRuns"
            for params in ({"order_by": "id", "start_date_gte": iso(since)},
                           {"order_by": "id", "state": ["queued", "running"]}):
                items, done = self.pages(path, "dag_runs", params, cap=max(1, cap - len(seen)))
                complete = complete and done
                for it in items:
                    r = parse_run(it, None if dag == "~" else dag)
                    if r is not None:
                        seen[(r.dag_id, r.run_id)] = r
                if len(seen) >= cap:
                    return list(seen.values()), False
        return list(seen.values()), complete

    def task_failures(self, since: float, cap: int) -> list[TaskFailure]:
        items, done = self.pages("/dags/~/dagRuns/~/taskInstances", "task_instances",
                                 {"state": ["failed"], "end_date_gte": iso(since)}, cap=cap)
        if not done:
            log.warning("event=airflow_task_failures_capped read=%d", len(items))
        out = {}
        for it in items:
            t = parse_task_failure(it)
            if t is not None:
                out[(t.dag_id, t.run_id, t.task_id, t.map_index)] = t
        return list(out.values())
