"""A fake Apache Airflow REST API (v2 of Airflow 3, v1 of Airflow 2) that CHECKS request shapes.

``FakeAirflow(version="v2"|"v1", dags=[...], runs=[...], task_instances=[...])`` is one FakeHTTP:

- v2: ``POST /auth/token`` (JSON ``{"username", "password"}``; 201 ``{"access_token"}``, 401 on a
  wrong password, 415/422 on a body that is not that JSON object); every ``/api/v2/...`` call needs
  ``Authorization: Bearer <a token it issued>`` (``expire_tokens()`` makes the issued ones stale:
  401 ``{"detail": ...}``). Health ``GET /api/v2/monitor/health`` is public.
- v1: no ``/auth/token`` (404); every ``/api/v1/...`` call needs HTTP basic auth; health
  ``GET /api/v1/health`` is public. Runs carry no ``queued_at`` (Airflow 2's shape) and
  ``execution_date`` beside ``logical_date``.

Listings check their query: ``limit`` (an integer >= 1, capped at ``max_page_limit`` like Airflow's
``maximum_page_limit``), ``offset`` (>= 0), ``order_by`` (``dag_id`` for DAGs, ``id`` for runs),
the filters each endpoint documents (dagRuns: ``start_date_gte`` ISO 8601, ``state`` repeated with
run states; taskInstances: ``state``, ``end_date_gte``), and refuse anything else with 400
(recorded in ``shape_errors``, which a test asserts empty). Answers: ``{"dags"|"dag_runs"|
"task_instances": [...], "total_entries": n}``. Faults: FakeHTTP's ``fail``/``drop``/``hang``, or
``add_route`` for a malformed or huge answer.

``demo_data(n_dags, n_runs, now, seed)`` makes a deterministic fleet of DAGs and runs.
"""
from __future__ import annotations

import base64
import random
import secrets
from datetime import datetime, timezone
from urllib.parse import unquote

from tests.support.fakehttp import FakeHTTP, Request

RUN_STATES = ("queued", "running", "success", "failed")
TI_STATES = ("failed", "success", "running", "queued", "up_for_retry", "upstream_failed", "skipped")


def ts(t: float | None, z: bool = True) -> str | None:
    if t is None:
        return None
    s = datetime.fromtimestamp(t, timezone.utc).isoformat()
    return s.replace("+00:00", "Z") if z else s


def _parse_iso(v: str) -> float:
    return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()


class ShapeError(Exception):
    pass


class FakeAirflow(FakeHTTP):
    def __init__(self, version: str = "v2", *, username: str = "admin", password: str = "s3cret",
                 dags: list[dict] | None = None, runs: list[dict] | None = None,
                 task_instances: list[dict] | None = None, health: dict | None = None,
                 max_page_limit: int = 100, **kw):
        """dags: [{dag_id, is_paused}]; runs: [{dag_id, dag_run_id, state, queued_at, start_date,
        end_date}] with times as Unix seconds (None: unset); task_instances: [{dag_id, dag_run_id,
        task_id, state, end_date}]."""
        assert version in ("v1", "v2")
        self.version, self.username, self.password = version, username, password
        self.dags = list(dags or [])
        self.runs = list(runs or [])
        self.task_instances = list(task_instances or [])
        now = datetime.now(timezone.utc).timestamp()
        self.health = health if health is not None else {
            "metadatabase": {"status": "healthy"},
            "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": ts(now - 3, version == "v2")},
            "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": ts(now - 4, version == "v2")},
            "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": ts(now - 5, version == "v2")},
        }
        self.max_page_limit = max_page_limit
        self.tokens: set[str] = set()
        self.issued = 0
        self.shape_errors: list[str] = []
        self._memo: dict = {}
        v = version
        routes = {
            "POST /auth/token": self._token,
            f"GET /api/{v}/{'monitor/health' if v == 'v2' else 'health'}": lambda req: (200, self.health),
            f"GET /api/{v}/dags": self._dags,
            f"GET /api/{v}/dags/~/dagRuns/~/taskInstances": self._task_instances,
            f"GET /api/{v}/dags/*/dagRuns": self._dag_runs,
        }
        super().__init__(routes, guard=self._guard, **kw)

    def start(self) -> "FakeAirflow":
        super().start()
        # TCP_NODELAY on its connections, as an ASGI server has: headers and body go in two writes,
        # and Nagle + delayed ACK would add ~40 ms to every page of a keep-alive client
        self._server.RequestHandlerClass.disable_nagle_algorithm = True
        return self

    # ------------------------------------------------------------------ auth
    def expire_tokens(self) -> None:
        """Every token issued so far is stale from now on (401)."""
        self.tokens.clear()

    def _public(self, req: Request) -> bool:
        return req.path in ("/auth/token", "/api/v2/monitor/health", "/api/v1/health")

    def _guard(self, req: Request):
        if self._public(req) or not req.path.startswith(f"/api/{self.version}/"):
            return None
        auth = req.headers.get("Authorization") or ""
        if self.version == "v2":
            if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                return 401, {"detail": "Invalid JWT token" if auth.startswith("Bearer ") else "Not authenticated"}
            return None
        want = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if auth != want:
            return 401, {"title": "Unauthorized", "status": 401, "type": "about:blank",
                         "detail": "No credentials passed"}, {"WWW-Authenticate": "Basic"}
        return None

    def _token(self, req: Request):
        if self.version != "v2":
            return 404, {"detail": "Not Found"}
        if req.content_type != "application/json":
            self.shape_errors.append(f"/auth/token content type {req.content_type!r}")
            return 415, {"detail": "expected application/json"}
        try:
            body = req.json
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) != {"username", "password"} \
                or not all(isinstance(body[k], str) for k in body):
            self.shape_errors.append(f"/auth/token body {req.text[:100]!r}")
            return 422, {"detail": "username and password are required"}
        if body["username"] != self.username or body["password"] != self.password:
            return 401, {"detail": "Invalid credentials"}
        tok = secrets.token_urlsafe(24)
        self.tokens.add(tok)
        self.issued += 1
        return 201, {"access_token": tok}

    # ------------------------------------------------------------------ listings
    def _check(self, req: Request, allowed: dict) -> dict:
        """The query, checked: allowed = {param: check(values) -> problem or None}."""
        q = req.query_all
        for k, vals in q.items():
            if k not in allowed:
                raise ShapeError(f"{req.path}: unknown query parameter {k!r}")
            problem = allowed[k](vals)
            if problem:
                raise ShapeError(f"{req.path}: {k}={vals!r}: {problem}")
        for k in ("limit", "offset"):
            if k not in q:
                raise ShapeError(f"{req.path}: no {k} (the exporter pages explicitly)")
        return q

    def _page(self, items: list, q: dict, key: str, doc=None):
        """One page of ``items`` (``doc`` turns the page's items into their JSON documents)."""
        limit = min(int(q["limit"][0]), self.max_page_limit)
        offset = int(q["offset"][0])
        page = items[offset:offset + limit]
        return 200, {key: [doc(x) for x in page] if doc else page, "total_entries": len(items)}

    def _answer_checked(self, req: Request, fn):
        try:
            return fn()
        except ShapeError as exc:
            self.shape_errors.append(str(exc))
            return 400, {"detail": str(exc)}

    @staticmethod
    def _int(lo: int):
        def check(vals):
            if len(vals) != 1 or not vals[0].isdigit() or int(vals[0]) < lo:
                return f"must be one integer >= {lo}"
            return None
        return check

    @staticmethod
    def _one_of(*choices):
        def check(vals):
            return None if len(vals) == 1 and vals[0] in choices else f"must be one of {choices}"
        return check

    @staticmethod
    def _iso(vals):
        if len(vals) != 1:
            return "must be given once"
        try:
            dt = datetime.fromisoformat(vals[0].replace("Z", "+00:00"))
        except ValueError:
            return "not an ISO 8601 date-time"
        return None if dt.tzinfo is not None else "has no time zone"

    @staticmethod
    def _states(allowed):
        def check(vals):
            return None if vals and all(v in allowed for v in vals) else f"states must be in {allowed}"
        return check

    def _dags(self, req: Request):
        def go():
            q = self._check(req, {"limit": self._int(1), "offset": self._int(0), "order_by": self._one_of("dag_id")})
            dags = sorted(self.dags, key=lambda d: d["dag_id"])
            out = []
            for d in dags:
                doc = {"dag_id": d["dag_id"], "dag_display_name": d["dag_id"], "is_paused": d.get("is_paused", False),
                       "fileloc": f"/dags/{d['dag_id']}.py", "tags": [], "owners": ["airflow"]}
                doc.update({"is_stale": False} if self.version == "v2" else {"is_active": True})
                out.append(doc)
            return self._page(out, q, "dags")
        return self._answer_checked(req, go)

    def _run_doc(self, r: dict) -> dict:
        z = self.version == "v2"
        doc = {"dag_run_id": r["dag_run_id"], "dag_id": r["dag_id"], "state": r["state"],
               "logical_date": ts(r.get("start_date") or r.get("queued_at"), z),
               "start_date": ts(r.get("start_date"), z), "end_date": ts(r.get("end_date"), z),
               "run_type": "manual", "conf": {}}
        if self.version == "v2":
            doc["queued_at"] = ts(r.get("queued_at"))
            doc["run_after"] = doc["logical_date"]
        else:
            doc["execution_date"] = doc["logical_date"]
            doc["external_trigger"] = True
        return doc

    def _dag_runs(self, req: Request):
        def go():
            dag_id = unquote(req.path.split("/")[4])
            q = self._check(req, {"limit": self._int(1), "offset": self._int(0), "order_by": self._one_of("id"),
                                  "start_date_gte": self._iso, "state": self._states(RUN_STATES)})
            if dag_id != "~" and not any(d["dag_id"] == dag_id for d in self.dags):
                return 404, {"detail": f"The Dag with ID: `{dag_id}` was not found"}
            # the filtered listing is kept for the next pages of the same query (a bench pages
            # through 10,000 runs: the fake must not be what it measures)
            key = (dag_id, tuple(q.get("start_date_gte", ())), tuple(q.get("state", ())), id(self.runs),
                   len(self.runs))
            runs = self._memo.get(key)
            if runs is None:
                runs = [r for r in self.runs if dag_id == "~" or r["dag_id"] == dag_id]
                if "start_date_gte" in q:
                    since = _parse_iso(q["start_date_gte"][0])
                    runs = [r for r in runs if r.get("start_date") is not None and r["start_date"] >= since]
                if "state" in q:
                    runs = [r for r in runs if r["state"] in q["state"]]
                self._memo = {key: runs}
            return self._page(runs, q, "dag_runs", self._run_doc)  # in id order
        return self._answer_checked(req, go)

    def _task_instances(self, req: Request):
        def go():
            q = self._check(req, {"limit": self._int(1), "offset": self._int(0), "state": self._states(TI_STATES),
                                  "end_date_gte": self._iso})
            tis = list(self.task_instances)
            if "state" in q:
                tis = [t for t in tis if t["state"] in q["state"]]
            if "end_date_gte" in q:
                since = _parse_iso(q["end_date_gte"][0])
                tis = [t for t in tis if t.get("end_date") is not None and t["end_date"] >= since]
            def doc(t):
                return {"task_id": t["task_id"], "dag_id": t["dag_id"], "dag_run_id": t["dag_run_id"],
                        "map_index": t.get("map_index", -1), "state": t["state"], "try_number": 1,
                        "end_date": ts(t.get("end_date"), self.version == "v2")}
            return self._page(tis, q, "task_instances", doc)
        return self._answer_checked(req, go)


def demo_data(n_dags: int, n_runs: int, now: float, seed: int = 7, window: float = 86400.0):
    """(dags, runs, task_instances): ``n_runs`` runs spread over the DAGs and the window (about
    90% success, 5% failed, the rest running or queued), one failed task per failed run."""
    rnd = random.Random(seed)
    dags = [{"dag_id": f"dag_{i:03d}", "is_paused": i % 10 == 9} for i in range(n_dags)]
    runs, tis = [], []
    for i in range(n_runs):
        dag = dags[i % n_dags]["dag_id"]
        p = rnd.random()
        state = "success" if p < 0.9 else "failed" if p < 0.95 else "running" if p < 0.98 else "queued"
        queued = now - rnd.uniform(60, window - 600)
        start = None if state == "queued" else queued + rnd.uniform(1, 30)
        end = start + rnd.uniform(30, 900) if state in ("success", "failed") else None
        run_id = f"manual__{i:06d}"
        runs.append({"dag_id": dag, "dag_run_id": run_id, "state": state, "queued_at": queued,
                     "start_date": start, "end_date": end})
        if state == "failed":
            tis.append({"dag_id": dag, "dag_run_id": run_id, "task_id": f"step_{i % 3}", "state": "failed",
                        "end_date": end})
    return dags, runs, tis
