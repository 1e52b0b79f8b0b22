"""REST API under /api/v1 (described by /api/v1/openapi.json).

Every read and write needs a credential: ``Authorization: Bearer <token>`` with a token from
receiver.api.tokens (scope read / write), or the receiver's own token (receiver.token, the one
Alertmanager sends) while receiver.api.accept_receiver_token (read and write, actor "api:stack").
A console session (logged-in user) may read as well. Anonymous reads only when
receiver.api.anonymous_read is set (off by default). /api/v1/openapi.json is public (it names
the people reassign accepts only to a caller who may read).
"""
from __future__ import annotations

import psycopg
from flask import Blueprint, current_app, jsonify, request
from psycopg_pool import PoolTimeout

from core.clock import utcnow
from webhook_receiver import escalation, notify, oncall, ticket_store, tickets
from webhook_receiver.errors import ApiError, require
from webhook_receiver.errors import register as register_errors
from webhook_receiver.errors import ticket_id as _ticket_id
from webhook_receiver.openapi import for_app, ticket_paths
from webhook_receiver.state import state

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_TEXT = 4000
SEVERITIES = ("critical", "warning", "info")


register_errors(bp)


@bp.errorhandler(psycopg.DataError)
def _db_data_error(exc):
    # a value from the request PostgreSQL cannot take (e.g. NUL): bad input, not an outage
    return jsonify(error="bad_request", message="the request holds a value the database cannot store"), 400


@bp.errorhandler(psycopg.Error)
@bp.errorhandler(PoolTimeout)
def _db_error(exc):
    return jsonify(error="database_unavailable", message="the ticket database is not reachable"), 503


def _st():
    return state(current_app)


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    v = request.args.get(name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a whole number") from None
    if not lo <= n <= hi:
        raise ApiError(400, "bad_request", f"{name} must be between {lo} and {hi}")
    return n


def _multi(name: str, allowed: tuple) -> list[str] | None:
    raws = request.args.getlist(name)
    vals = [v for raw in raws for v in raw.split(",")]
    if raws and not vals or "" in vals:
        raise ApiError(400, "bad_request", f"{name} must be one of {', '.join(allowed)} (comma-separated)")
    for v in vals:
        if v not in allowed:
            raise ApiError(400, "bad_request", f"{name} must be one of {', '.join(allowed)}")
    return vals or None


def _str_arg(name: str) -> str | None:
    v = request.args.get(name)
    if v is not None and len(v) > 200:
        raise ApiError(400, "bad_request", f"{name} is longer than 200 characters")
    return v.replace("\x00", "") if v is not None else None  # PostgreSQL text has no NUL


def _body() -> dict:
    if not request.content_length and not request.data:
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return data


def _text(data: dict, key: str, required: bool = False) -> str:
    v = data.get(key)
    if v is None:
        if required:
            raise ApiError(400, "bad_request", f"{key} is required")
        return ""
    if not isinstance(v, str):
        raise ApiError(400, "bad_request", f"{key} must be a string")
    if required and not v:
        raise ApiError(400, "bad_request", f"{key} must not be empty")
    # PostgreSQL text has no NUL and no lone UTF-16 surrogates (JSON can carry both)
    v = v.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    v = v.strip() or v  # keep a whitespace-only text as given (it is not empty)
    if len(v) > MAX_TEXT:
        raise ApiError(400, "bad_request", f"{key} is longer than {MAX_TEXT} characters")
    return v


# the paths this blueprint serves, for /api/v1/openapi.json (openapi.for_app reads every
# registered blueprint's openapi_paths)
bp.openapi_paths = ticket_paths


@bp.get("/openapi.json")
def openapi():
    try:  # the document is public; who works here (oncall.people) only for a caller who may read
        require("read")
        people = sorted(_st().ctx.directory.people)
    except ApiError:
        people = None
    return jsonify(for_app(current_app, people))


@bp.get("/tickets")
def list_tickets():
    """A JSON list of ticket objects, newest first."""
    require("read")
    status = _multi("status", tickets.STATUSES)
    severity = _multi("severity", SEVERITIES)
    group_id = request.args.get("group_id")
    if group_id is not None:
        try:
            group_id = int(group_id)
            if not 0 < group_id < 2**63:
                raise ValueError
        except ValueError:
            raise ApiError(400, "bad_request", "group_id must be a positive whole number") from None
    with _st().db.connection() as conn:
        rows = ticket_store.list_tickets(conn, status=status, severity=severity, service=_str_arg("service"),
                                    alertname=_str_arg("alertname"), fingerprint=_str_arg("fingerprint"),
                                    group_id=group_id, limit=_int_arg("limit", 100, 1, 1000),
                                    offset=_int_arg("offset", 0, 0, 10**9))
    return jsonify([ticket_store.public(r) for r in rows])


def _full(conn, t: dict) -> dict:
    out = ticket_store.public(t)
    out["events"] = [{**e, "at": e["at"].isoformat()} for e in ticket_store.events(conn, t["id"])]
    # the incident's alerts: how many (firing/resolved episodes) and the list (firing first, capped)
    out["alert_counts"] = dict(ticket_store.alert_counts(conn, t["id"]))
    out["alerts"] = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in a.items()}
                     for a in ticket_store.alerts(conn, t["id"])]
    # deliveries with their status and last error (failed ones stay)
    out["notifications"] = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in n.items()}
                            for n in notify.deliveries(conn, t["id"])]
    # its Alertmanager group; truncated_alerts > 0: Alertmanager left that many alerts out (max_alerts)
    out["group"] = ticket_store.get_group(conn, t["group_id"])
    return out


@bp.get("/tickets/<tid>")
def get_ticket(tid: str):
    require("read")
    n = _ticket_id(tid)
    with _st().db.connection() as conn:
        t = ticket_store.get_ticket(conn, n)
        if t is None:
            raise ApiError(404, "not_found", "no such ticket")
        return jsonify(_full(conn, t))


def _action(tid: str, fn):
    actor = require("write")
    n = _ticket_id(tid)
    data = _body()
    st = _st()
    with st.db.connection() as conn:
        try:
            t = fn(st.ctx, conn, n, actor, data)
        except tickets.NotFound:
            raise ApiError(404, "not_found", "no such ticket") from None
        except tickets.Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        return jsonify(_full(conn, t))


@bp.post("/tickets/<tid>/acknowledge")
def acknowledge(tid: str):
    return _action(tid, lambda ctx, conn, n, actor, d: tickets.acknowledge(ctx, conn, n, actor, _text(d, "note")))


@bp.post("/tickets/<tid>/resolve")
def resolve(tid: str):
    return _action(tid, lambda ctx, conn, n, actor, d: tickets.resolve(ctx, conn, n, actor, _text(d, "note")))


@bp.post("/tickets/<tid>/comment")
def comment(tid: str):
    return _action(tid, lambda ctx, conn, n, actor, d: tickets.comment(ctx, conn, n, actor, _text(d, "text", True)))


@bp.post("/tickets/<tid>/reassign")
def reassign(tid: str):
    def fn(ctx, conn, n, actor, d):
        who = _text(d, "assignee", True)
        if who not in ctx.directory.people:
            raise ApiError(400, "bad_request", f"unknown person {who[:80]!r} (see oncall.people)")
        return tickets.reassign(ctx, conn, n, actor, who, _text(d, "note"))
    return _action(tid, fn)


@bp.post("/tickets/<tid>/escalate")
def escalate(tid: str):
    def fn(ctx, conn, n, actor, d):
        t = escalation.escalate_now(conn, n, _text(d, "reason") or "escalated by hand", actor, ctx=ctx)
        if t is None:
            if ticket_store.get_ticket(conn, n) is None:
                raise tickets.NotFound(n)
            raise tickets.Conflict("the ticket is resolved")
        return t
    return _action(tid, fn)


@bp.get("/oncall")
def oncall_now():
    require("read")
    st = _st()
    now = utcnow()
    out = []
    for name, s in st.ctx.directory.schedules.items():
        out.append({"schedule": name, "person": oncall.on_call(s, now),
                    "next_handover": oncall.next_handover(s, now).isoformat()})
    return jsonify(out)
