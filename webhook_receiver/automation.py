"""Automation around tickets: enrichment, remediation playbooks, ITSM forwarding.

`create_app(cfg)` calls ``init_app(app, cfg)``. It applies the automation migrations, registers
the ``automation`` blueprint and subscribes to the receiver's ticket hooks:

| hook            | enrichment      | remediation                          | ITSM               |
|-----------------|-----------------|--------------------------------------|--------------------|
| ticket_opened   | attach graph... | run the matching playbook            | create issue       |
| ticket_reopened | attach again    | run it again (new episode: cooldown) | reopen             |
| ticket_updated  |                 | alert_attached: for the new alerts   | comment            |
| ticket_resolved |                 | on_resolved actions (restore)        | resolve/transition |

Enrichment, remediation and restore are queued durably in ``automation_jobs`` (webhook_receiver/
jobs.py, on the shared outbox) INSIDE the transaction that changes the ticket (``stage_jobs``, a
hooks stager: one statement for all the jobs of a batch of payloads; the job commits with the
change or not at all, on the connection already in use: no pool of its own). The hooks themselves
fire in the request thread after commit (ITSM forwarding); the jobs are run by this process's
thread pools (created lazily, so after gunicorn forks) when it does background work;
the receiver's scheduler also runs them, retries failed ones with backoff and resumes them
after a restart. The subscriptions are the app's own (state(app).hooks): two apps in one
process never see each other's tickets.

Endpoints (blueprint ``automation``):
- GET  /api/v1/tickets/<id>/attachments            list (name, kind, content_type, size, url)
- GET  /api/v1/tickets/<id>/attachments/<name>     the content (PNG, JSON, text)
- GET  /api/v1/tickets/<id>/remediation            runs and attempts (the audit rows)
- GET  /api/v1/tickets/<id>/itsm                   JIRA/ServiceNow links and deliveries
- GET  /api/v1/remediation/runs?limit=N            latest runs with their attempts
- GET  /api/v1/remediation/playbooks               the loaded playbooks
- GET|PUT /api/v1/remediation/kill-switch          {"enabled": bool} (PUT needs the write scope)
- POST /api/v1/itsm/deliveries/<id>/retry          a failed delivery goes back to pending (write)
- GET  /metrics/automation                         automation metrics (also on the app's /metrics:
                                                   state(app).metrics_collectors)
Every GET needs a read credential (API token, receiver token, console session) unless
receiver.api.anonymous_read; writes need the write scope.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from core.config import view
from core.prom import base_url
from core.logs import first_line
from webhook_receiver import enrichment, itsm, jobs
from webhook_receiver.db import connect
from webhook_receiver.errors import ApiError, require
from webhook_receiver.errors import register as register_errors
from webhook_receiver.errors import ticket_id as _tid
from webhook_receiver.remediation import store
from webhook_receiver.remediation.metrics import AutomationCollector
from webhook_receiver.remediation.model import find as find_playbook
from webhook_receiver.remediation.model import load_playbooks
from webhook_receiver.remediation.runner import Runner
from webhook_receiver.state import AUTOMATION_EXT as EXT
from webhook_receiver.state import EXT as STATE_EXT
from webhook_receiver.state import State

log = logging.getLogger(__name__)

bp = Blueprint("automation", __name__)
register_errors(bp)


class Automation:
    """Per-app automation state: playbooks, runner, forwarder, thread pools (per process)."""

    def __init__(self, cfg: dict, st: State | None = None):
        # the whole dict is kept for the parts that still read plain dicts and need several
        # sections at once (stack host/ports/run_dir, platform, demo): the remediation Runner,
        # playbook loading, enrichment and AutomationCollector; the rest reads the typed views
        self.cfg = cfg
        self.receiver = st.receiver if st is not None else view(cfg, "receiver")
        self.remediation = view(cfg, "remediation")
        self.enrichment = view(cfg, "enrichment")
        self.itsm = view(cfg, "itsm")
        self.st = st  # the receiver app's state: its ticket context (hooks) for escalations
        self.db_url = view(cfg, "database").url
        self.playbooks = load_playbooks(cfg)
        self.prometheus_url = base_url(cfg, self.enrichment.prometheus_url)  # for enrichment queries
        self.loki_url = enrichment.loki_url_of(cfg)  # the log excerpt's Loki (None: no logs from Loki)
        self._runner = None
        self._forwarder = None
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.migrated = False
        # jobs live in automation_jobs (webhook_receiver/jobs.py); this process runs them at once
        # when it does background work (receiver.background 'workers', or the background process)
        self.run_jobs = self.receiver.background != "process"
        self._inflight: dict[str, int] = {}
        self._again: dict[str, bool] = {}

    # ------------------------------------------------------------------ lazily made parts
    def ensure_migrated(self) -> None:
        if not self.migrated:
            store.migrate_url(self.db_url)
            self.migrated = True

    @property
    def runner(self):
        with self._lock:
            if self._runner is None:
                self._runner = Runner(self.cfg, self.db_url, playbooks=self.playbooks,
                                      ctx=self.st.ctx if self.st is not None else None)
            return self._runner

    @property
    def forwarder(self):
        with self._lock:
            if self._forwarder is None:
                self._forwarder = itsm.Forwarder(self.itsm, self.db_url)
            return self._forwarder

    def pool(self, name: str, workers: int) -> ThreadPoolExecutor:
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's threads do not exist here
                self._pools, self._pid = {}, os.getpid()
                self._inflight, self._again = {}, {}
            if name not in self._pools:
                self._pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"automation-{name}")
            return self._pools[name]

    def shutdown(self) -> None:
        """Stop the forwarder and the pools; drop this app's hook subscriptions (a closed app
        must not take new work: its pools are gone)."""
        if self.st is not None:
            for event, fn in self.handlers():
                self.st.hooks.unsubscribe(event, fn)
            self.st.hooks.remove_stager(self.stage_jobs)
        if self._forwarder is not None:
            self._forwarder.stop()
        for p in self._pools.values():
            p.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ hook handlers
    # (after the commit: the jobs are in already, stage_jobs; these forward to ITSM)
    def handlers(self) -> tuple:
        return (("ticket_opened", self.on_opened), ("ticket_reopened", self.on_reopened),
                ("ticket_updated", self.on_updated), ("ticket_resolved", self.on_resolved))

    def on_opened(self, event: str, ticket_id: int, **payload) -> None:
        payload.pop("alert_labels", None)  # the incident's alerts' labels (for wanted_jobs): not forwarded
        self._forward(event, ticket_id, payload)

    def on_reopened(self, event: str, ticket_id: int, **payload) -> None:
        payload.pop("alert_labels", None)
        self._forward(event, ticket_id, payload)

    def on_updated(self, event: str, ticket_id: int, **payload) -> None:
        payload.pop("attached_labels", None)  # the new alerts' labels: not forwarded
        self._forward(event, ticket_id, payload)

    def on_resolved(self, event: str, ticket_id: int, **payload) -> None:
        self._forward(event, ticket_id, payload)

    # ------------------------------------------------------------------ durable jobs
    def job_kinds(self) -> set[str]:
        return jobs.wanted(self.enrichment, self.remediation, self.playbooks, self.prometheus_url, self.loki_url)

    def wanted_jobs(self, calls: list) -> list[tuple[int, str, str | None, bool, str | None]]:
        """The jobs these ticket changes queue (pure but for the config): (ticket_id, kind, extra,
        unless_pending, skipped) for jobs.enqueue_many; ``skipped``: why the job is recorded done
        without running (None: it runs).

        | change          | jobs                                                                  |
        |-----------------|-----------------------------------------------------------------------|
        | opened/reopened | enrichment, remediation (once per episode: the dedup key); remediation |
        |                 | is recorded skipped when no playbook matches any of its alerts         |
        | alert_attached  | remediation for the new alerts when a playbook matches one of them    |
        |                 | and no remediation job of the incident waits (it covers them already) |
        | resolved        | restore (on_resolved actions; enqueue_many records it skipped when    |
        |                 | the incident's remediation never ran: nothing to restore)             |

        In a storm of alerts no playbook knows (thousands of incidents), nothing then waits for a
        remediation worker: the skipped jobs are rows written done in the same statement, so the
        sweep (same dedup key) does not queue them again either."""
        kinds = self.job_kinds()
        out: list[tuple[int, str, str | None, bool, str | None]] = []
        for event, p in calls:
            tid = p.get("ticket_id")
            if tid is None:
                continue
            if event in ("ticket_opened", "ticket_reopened"):
                if "enrichment" in kinds:
                    out.append((tid, "enrichment", None, False, None))
                if "remediation" in kinds:
                    known = self._may_match(p.get("alert_labels"))
                    out.append((tid, "remediation", None, False, None if known else jobs.NO_PLAYBOOK))
            elif event == "ticket_resolved":
                if "restore" in kinds:
                    out.append((tid, "restore", None, False, None))
            elif (event == "ticket_updated" and p.get("change") == "alert_attached" and "remediation" in kinds
                  and p.get("status") != "resolved"):
                # alerts joined the incident and a playbook matches one of them: the playbook acts for
                # them too (their own targets); enrichment and paging stay once per incident. A
                # remediation job of the incident still pending (not running) covers them already: it
                # acts for every firing alert of the incident when it runs
                if self._may_match(p.get("attached_labels")):
                    out.append((tid, "remediation", f"a{p.get('event_id') or 0}", True, None))
        return out

    def _may_match(self, labels: list[dict] | None) -> bool:
        """A playbook matches one of these alerts' labels, or they are not known (None: the job runs)."""
        return labels is None or any(find_playbook(self.playbooks, lb) for lb in labels)

    def stage_jobs(self, conn, calls: list):
        """The hooks stager (tickets' Emits.stage): queue the jobs of these ticket changes on ``conn``,
        inside the transaction making them (one statement); returns what to run after the commit
        (this process's pools take the new jobs when it runs jobs)."""
        want = self.wanted_jobs(calls)
        if not want:
            return None
        self.ensure_migrated()
        rows = [r for r in jobs.enqueue_many(conn, want) if r["status"] == "pending"]  # not the skipped
        if not rows or not self.run_jobs:
            return None
        lanes = sorted({r["lane"] for r in rows})
        return lambda: [self.kick(lane) for lane in lanes]

    def kick(self, lane: str, now=None) -> None:
        """Have this process's ``lane`` pool run the due jobs of that lane (at most ``workers``
        drains at once; a kick while they are all busy makes one of them look again)."""
        workers = self.enrichment.workers if lane == "enrichment" else self.remediation.workers
        pool = self.pool(lane, workers)
        with self._lock:
            if self._inflight.get(lane, 0) >= workers:
                self._again[lane] = True
                return
            self._inflight[lane] = self._inflight.get(lane, 0) + 1
        try:
            pool.submit(self._drain, lane, now)
        except RuntimeError:  # shut down
            with self._lock:
                self._inflight[lane] -= 1

    def _drain(self, lane: str, now=None) -> None:
        while True:
            try:
                self.ensure_migrated()
                with connect(self.db_url, autocommit=True) as conn:
                    while jobs.run_due(conn, self.remediation, self._enrich, lambda: self.runner, lane=lane, now=now,
                                       batch=1, enrich_per_minute=self.enrichment.max_per_minute):
                        pass
            except Exception as exc:  # noqa: BLE001 - the database may be away: the scheduler kicks again
                log.warning("event=automation_jobs_error lane=%s error=%r", lane,
                            first_line(exc))
            with self._lock:
                if self._again.pop(lane, False):
                    continue
                self._inflight[lane] = max(0, self._inflight.get(lane, 1) - 1)
                return

    def _enrich(self, ticket_id: int) -> None:
        enrichment.enrich(self.cfg, self.db_url, ticket_id)

    def _forward(self, event: str, ticket_id: int, payload: dict) -> None:
        if itsm.systems(self.itsm):
            self.ensure_migrated()
            self.forwarder.enqueue(event, ticket_id, payload)
            self.forwarder.start()


def init_app(app, cfg: dict) -> Automation:
    """Wire enrichment, remediation and ITSM forwarding into the receiver app: the app's hooks,
    its scheduler's jobs (scheduler.automation_jobs) and its /metrics."""
    st = app.extensions.get(STATE_EXT)
    auto = Automation(cfg, st)
    app.extensions[EXT] = auto
    try:
        auto.ensure_migrated()
    except Exception as exc:  # noqa: BLE001 - the database may come later
        log.warning("event=automation_migrate_deferred error=%r", str(exc).splitlines()[0] if str(exc) else repr(exc))
    if "automation" not in app.blueprints:
        app.register_blueprint(bp)
    if st is not None:
        st.automation = auto
        for event, fn in auto.handlers():
            st.hooks.subscribe(event, fn)
        st.hooks.add_stager(auto.stage_jobs)

        def _automation_collector(db=None, _auto=auto):
            return AutomationCollector(_auto.remediation, _auto.itsm, _auto.db_url, _auto.playbooks)
        st.metrics_collectors.append(_automation_collector)
    if itsm.systems(auto.itsm) and auto.migrated:
        auto.forwarder.start()  # pending deliveries from before a restart
    log.info("event=automation_ready playbooks=%d remediation=%s dry_run=%s enrichment=%s itsm=%s",
             len(auto.playbooks), auto.remediation.enabled, auto.remediation.dry_run,
             auto.enrichment.enabled, ",".join(itsm.systems(auto.itsm)) or "none")
    return auto


# ====================================================================== HTTP API
def _auto() -> Automation:
    return current_app.extensions[EXT]


def _conn():
    auto = _auto()
    try:
        auto.ensure_migrated()
        return connect(auto.db_url, autocommit=True)
    except Exception:  # noqa: BLE001
        raise ApiError(503, "database_unavailable", "the ticket database is not reachable") from None


def _ticket_exists(conn, tid: int) -> None:
    if conn.execute("select 1 from tickets where id = %s", (tid,)).fetchone() is None:
        raise ApiError(404, "not_found", "no such ticket")


def _iso(row: dict) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


@bp.get("/api/v1/tickets/<tid>/attachments")
def attachments(tid):
    require("read")
    tid = _tid(tid)
    with _conn() as conn:
        _ticket_exists(conn, tid)
        rows = enrichment.list_attachments(conn, tid)
    for r in rows:
        r["url"] = f"/api/v1/tickets/{tid}/attachments/{r['name']}"
    return jsonify(ticket_id=tid, attachments=rows)


@bp.get("/api/v1/tickets/<tid>/attachments/<name>")
def attachment(tid, name):
    require("read")
    tid = _tid(tid)
    if "\x00" in name or len(name) > 255:  # PostgreSQL text holds no NUL: no such name can exist
        raise ApiError(404, "not_found", "no such attachment")
    with _conn() as conn:
        row = enrichment.get_attachment(conn, tid, name)
    if row is None:
        raise ApiError(404, "not_found", "no such attachment")
    return Response(bytes(row["body"]), mimetype=row["content_type"].split(";")[0],
                    headers={"Content-Type": row["content_type"], "Cache-Control": "no-store",
                             "X-Content-Type-Options": "nosniff"})


def _runs(conn, where: str, args: tuple, limit: int) -> list[dict]:
    runs = conn.execute(f"select * from remediation_runs where {where} order by id desc limit %s",
                        (*args, limit)).fetchall()
    ids = [r["id"] for r in runs]
    atts = conn.execute("select * from remediation_attempts where run_id = any(%s) order by run_id, phase, step",
                        (ids,)).fetchall() if ids else []
    by: dict[int, list] = {}
    for a in atts:
        by.setdefault(a["run_id"], []).append(_iso(a))
    return [{**_iso(r), "attempts": by.get(r["id"], [])} for r in runs]


@bp.get("/api/v1/tickets/<tid>/remediation")
def ticket_remediation(tid):
    require("read")
    tid = _tid(tid)
    with _conn() as conn:
        _ticket_exists(conn, tid)
        return jsonify(ticket_id=tid, runs=_runs(conn, "ticket_id = %s", (tid,), 100))


@bp.get("/api/v1/remediation/runs")
def remediation_runs():
    require("read")
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be a whole number") from None
    if not 1 <= limit <= 500:
        raise ApiError(400, "bad_request", "limit must be between 1 and 500")
    with _conn() as conn:
        return jsonify(runs=_runs(conn, "true", (), limit))


@bp.get("/api/v1/remediation/playbooks")
def playbooks():
    require("read")
    out = [{"name": p.name, "description": p.description, "source": p.source, "match": p.match,
            "target": p.target, "cooldown": p.cooldown, "max_attempts": p.max_attempts,
            "attempt_window": p.attempt_window, "dry_run": p.dry_run or _auto().remediation.dry_run,
            "actions": [{"name": a.name, "backend": a.backend, "operation": a.operation} for a in p.actions],
            "on_resolved": [{"name": a.name, "backend": a.backend, "operation": a.operation} for a in p.on_resolved]}
           for p in _auto().playbooks]
    return jsonify(playbooks=out)


@bp.route("/api/v1/remediation/kill-switch", methods=["GET", "PUT"])
def kill_switch():
    cfg_on = bool(_auto().remediation.kill_switch)
    if request.method == "GET":
        require("read")
        with _conn() as conn:
            ks = store.kill_switch(conn)
    else:
        actor = require("write")
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or not isinstance(data.get("enabled"), bool):
            raise ApiError(400, "bad_request", 'send {"enabled": true} or {"enabled": false}')
        with _conn() as conn:
            store.set_setting(conn, "kill_switch", data["enabled"], actor)
            ks = store.kill_switch(conn)
        log.warning("event=kill_switch_set enabled=%s actor=%s", data["enabled"], actor)
    return jsonify(enabled=bool(ks["enabled"]) or cfg_on, runtime=bool(ks["enabled"]), config=cfg_on,
                   updated_by=ks["updated_by"],
                   updated_at=ks["updated_at"].isoformat() if ks["updated_at"] else None)


@bp.get("/api/v1/tickets/<tid>/itsm")
def ticket_itsm(tid):
    require("read")
    tid = _tid(tid)
    with _conn() as conn:
        _ticket_exists(conn, tid)
        return jsonify(ticket_id=tid, **itsm.status(conn, tid))


@bp.post("/api/v1/itsm/deliveries/<did>/retry")
def itsm_retry(did):
    require("write")
    try:
        did = int(did)
    except ValueError:
        raise ApiError(404, "not_found", "no such delivery") from None
    with _conn() as conn:
        row = conn.execute("""update ticket_itsm_outbox set status = 'pending', next_attempt_at = now(), attempts = 0
                              where id = %s and status = 'failed' returning id""", (did,)).fetchone()
    if row is None:
        raise ApiError(404, "not_found", "no failed delivery with this id")
    auto = _auto()
    auto.forwarder.start()
    auto.forwarder._wake.set()
    return jsonify(id=did, status="pending")


@bp.get("/metrics/automation")
def automation_metrics():
    require("read")
    auto = _auto()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(AutomationCollector(auto.remediation, auto.itsm, auto.db_url, auto.playbooks))
    return Response(generate_latest(reg), mimetype=CONTENT_TYPE_LATEST)


def openapi_paths(people: list[str] | None = None) -> dict:
    """OpenAPI 3.0 path items of this blueprint, for the receiver's /api/v1/openapi.json
    (openapi.for_app reads them from the registered blueprint: bp.openapi_paths)."""
    err = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}}}}
    tid = {"name": "tid", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    obj = {"type": "object", "additionalProperties": True}

    def ok(schema, ctype="application/json"):
        return {"description": "ok", "content": {ctype: {"schema": schema}}}
    attachment = {"type": "object", "properties": {
        "id": {"type": "integer"}, "kind": {"type": "string", "enum": ["graph", "values", "related", "logs", "error"]},
        "name": {"type": "string"}, "content_type": {"type": "string"}, "size": {"type": "integer"},
        "meta": obj, "created_at": {"type": "string", "format": "date-time"}, "url": {"type": "string"}}}
    run = {"type": "object", "properties": {
        "id": {"type": "integer"}, "ticket_id": {"type": "integer", "nullable": True}, "playbook": {"type": "string"},
        "target": {"type": "string"}, "status": {"type": "string", "enum": [
            "pending", "running", "recovered", "exhausted", "skipped", "dry_run", "failed", "refused",
            "scheduled", "cancelled"]},
        "reason": {"type": "string"}, "dry_run": {"type": "boolean"}, "escalated": {"type": "boolean"},
        "attempts": {"type": "array", "items": obj}}, "additionalProperties": True}
    switch = {"type": "object", "properties": {
        "enabled": {"type": "boolean"}, "runtime": {"type": "boolean"}, "config": {"type": "boolean"},
        "updated_by": {"type": "string", "nullable": True},
        "updated_at": {"type": "string", "format": "date-time", "nullable": True}}}
    return {
        "/api/v1/tickets/{tid}/attachments": {"get": {
            "summary": "Enrichment attachments of a ticket", "tags": ["automation"], "parameters": [tid],
            "responses": {"200": ok({"type": "object", "properties": {
                "ticket_id": {"type": "integer"}, "attachments": {"type": "array", "items": attachment}}}),
                "404": err}}},
        "/api/v1/tickets/{tid}/attachments/{name}": {"get": {
            "summary": "One attachment's content (PNG, JSON or text)", "tags": ["automation"],
            "parameters": [tid, {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the content", "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": obj}, "text/plain": {"schema": {"type": "string"}}}},
                "404": err}}},
        "/api/v1/tickets/{tid}/remediation": {"get": {
            "summary": "Remediation runs of a ticket with their attempts (the audit rows)", "tags": ["automation"],
            "parameters": [tid], "responses": {"200": ok({"type": "object", "properties": {
                "ticket_id": {"type": "integer"}, "runs": {"type": "array", "items": run}}}), "404": err}}},
        "/api/v1/tickets/{tid}/itsm": {"get": {
            "summary": "JIRA / ServiceNow links and deliveries of a ticket", "tags": ["automation"],
            "parameters": [tid], "responses": {"200": ok(obj), "404": err}}},
        "/api/v1/remediation/runs": {"get": {
            "summary": "Latest remediation runs", "tags": ["automation"],
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
            "responses": {"200": ok({"type": "object", "properties": {"runs": {"type": "array", "items": run}}}),
                          "400": err}}},
        "/api/v1/remediation/playbooks": {"get": {
            "summary": "The loaded playbooks", "tags": ["automation"],
            "responses": {"200": ok({"type": "object", "properties": {"playbooks": {"type": "array", "items": obj}}})}}},
        "/api/v1/remediation/kill-switch": {
            "get": {"summary": "Whether automatic actions are switched off", "tags": ["automation"],
                    "responses": {"200": ok(switch)}},
            "put": {"summary": "Switch automatic actions off (true) or on (false)", "tags": ["automation"],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["enabled"], "properties": {"enabled": {"type": "boolean"}}}}}},
                    "responses": {"200": ok(switch), "400": err, "401": err, "403": err}}},
        "/api/v1/itsm/deliveries/{did}/retry": {"post": {
            "summary": "Put a failed ITSM delivery back in the queue", "tags": ["automation"],
            "parameters": [{"name": "did", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}],
            "responses": {"200": ok({"type": "object", "properties": {"id": {"type": "integer"},
                                                                     "status": {"type": "string"}}}),
                          "401": err, "403": err, "404": err}}},
    }


bp.openapi_paths = openapi_paths
