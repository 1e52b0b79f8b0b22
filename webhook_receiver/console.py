"""The incident console: server-rendered HTML, no build step.

Login with a user from receiver.console.users (werkzeug password hashes); a signed session
cookie keeps it. Pages: the open tickets by severity and age (linked by Alertmanager group),
and one ticket with its alerts, owner, level, time left before the next escalation, the
timeline, and buttons to acknowledge, resolve, comment and reassign. Forms carry a CSRF token.
"""
from __future__ import annotations

import json
import secrets
from datetime import datetime
from functools import wraps

import psycopg
from flask import (Blueprint, abort, current_app, flash, redirect, render_template, request, session,
                   url_for)
from psycopg_pool import PoolTimeout

from webhook_receiver import escalation, tickets

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")

SEV_ORDER = ("critical", "warning", "info")


def _st():
    from webhook_receiver.app import state

    return state(current_app)


def _csrf() -> str:
    tok = session.get("csrf")
    if not tok:
        tok = session["csrf"] = secrets.token_urlsafe(24)
    return tok


def login_required(fn):
    @wraps(fn)
    def wrapper(*a, **kw):
        if not session.get("user"):
            return redirect(url_for("console.login", next=request.full_path if request.query_string else request.path))
        if request.method == "POST":
            given = request.form.get("csrf", "")
            if not secrets.compare_digest(given, session.get("csrf", "")):
                abort(400, "bad or missing CSRF token; reload the page")
        return fn(*a, **kw)
    return wrapper


def human(seconds: float | None) -> str:
    """1h 5m, 4m 12s, 9s (pure)."""
    if seconds is None:
        return "—"
    s = int(round(abs(seconds)))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m and not d else "", f"{s}s" if not (d or h) else ""]
    out = " ".join(p for p in parts if p) or "0s"
    return ("-" if seconds < 0 else "") + out


@bp.app_template_filter("ago")
def _ago(t: datetime | None) -> str:
    return human((escalation.utcnow() - t).total_seconds()) if t else "—"


@bp.app_template_filter("until")
def _until(t: datetime | None) -> str:
    if t is None:
        return "—"
    left = (t - escalation.utcnow()).total_seconds()
    return "due now" if left <= 0 else "in " + human(left)


def level_label(level: int, name: str) -> str:
    """'L2 IT manager' (the level number is added when the name lacks it)."""
    return name if name.split(" ", 1)[0] == f"L{level}" else f"L{level} {name}"


@bp.app_template_filter("ts")
def _ts(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "—"


@bp.app_context_processor
def _globals():
    st = _st()
    return {"title": st.cfg["receiver"]["console"]["title"], "user": session.get("user"), "csrf": _csrf}


@bp.errorhandler(psycopg.Error)
@bp.errorhandler(PoolTimeout)
def _db_down(exc):
    return render_template("console_error.html", message="The ticket database is not reachable; retry shortly."), 503


@bp.route("/login", methods=["GET", "POST"])
def login():
    st = _st()
    error = None
    if request.method == "POST":
        name = request.form.get("username", "")
        user = st.users.check(name, request.form.get("password", ""))
        if user:
            session.clear()
            session["user"] = user["name"]
            session["display"] = user.get("display_name") or user["name"]
            _csrf()
            nxt = request.args.get("next", "")
            return redirect(nxt if nxt.startswith("/console") else url_for("console.index"))
        error = "Wrong user name or password."
    no_users = not st.cfg["receiver"]["console"]["users"]
    return render_template("console_login.html", error=error, no_users=no_users), (401 if error else 200)


@bp.post("/logout")
@login_required
def logout():
    session.clear()
    return redirect(url_for("console.login"))


@bp.get("/")
@login_required
def index():
    st = _st()
    group = request.args.get("group", type=int)
    with st.db.connection() as conn:
        open_rows = tickets.list_tickets(conn, status=["open", "acknowledged"], group_id=group, limit=500)
        recent = tickets.list_tickets(conn, status=["resolved"], group_id=group, limit=20)
        counts = {r["ticket_id"]: r["n"] for r in conn.execute(
            "select ticket_id, count(*) n from ticket_alerts where ticket_id = any(%s) group by 1",
            ([t["id"] for t in open_rows],)).fetchall()}
        gsize = {r["group_id"]: r["n"] for r in conn.execute(
            "select group_id, count(*) n from tickets where status <> 'resolved' and group_id is not null "
            "group by 1").fetchall()}
    by_sev: dict[str, list] = {}
    for t in sorted(open_rows, key=lambda t: (t["group_id"] or 0, t["opened_at"])):
        by_sev.setdefault(t["severity"] if t["severity"] in SEV_ORDER else "other", []).append(t)
    sections = [(s, by_sev[s]) for s in (*SEV_ORDER, "other") if s in by_sev]
    labels = {t["id"]: level_label(t["level"], st.ctx.policy(t["policy"]).level(t["level"]).name) for t in open_rows}
    return render_template("console_index.html", sections=sections, recent=recent, counts=counts, gsize=gsize,
                           group=group, labels=labels)


@bp.get("/tickets/<int:tid>")
@login_required
def ticket(tid: int):
    st = _st()
    with st.db.connection() as conn:
        t = tickets.get_ticket(conn, tid)
        if t is None:
            abort(404)
        events = tickets.events(conn, tid)
        alerts = tickets.alerts(conn, tid)
        siblings = tickets.list_tickets(conn, group_id=t["group_id"], limit=50) if t["group_id"] else []
        enrichment, runs = _automation(conn, tid)
    pol = st.ctx.policy(t["policy"])
    return render_template("console_ticket.html", t=t, events=events, alerts=alerts,
                           siblings=[s for s in siblings if s["id"] != tid],
                           level_name=level_label(t["level"], pol.level(t["level"]).name),
                           people=sorted(st.ctx.directory.people), enrichment=enrichment, runs=runs)


def _automation(conn, tid: int) -> tuple[dict | None, list]:
    """What automation attached to the ticket and the remediation it ran (None, [] without
    automation in this app). The graph is linked (its API URL, readable with the console
    session), the JSON and text attachments are parsed here and rendered as text."""
    from webhook_receiver import automation

    auto = current_app.extensions.get(automation.EXT)
    if auto is None:
        return None, []
    from webhook_receiver import enrichment as enr
    from webhook_receiver.remediation import store

    auto.ensure_migrated()  # once per process; the automation tables follow the receiver's
    out: dict = {"files": [], "graph": None, "current": None, "related": None, "logs": None, "errors": None}
    for a in enr.list_attachments(conn, tid):
        a["url"] = url_for("automation.attachment", tid=tid, name=a["name"])
        out["files"].append(a)
        if a["kind"] == "graph":
            out["graph"] = a
            continue
        row = enr.get_attachment(conn, tid, a["name"])
        if row is None:  # replaced meanwhile
            continue
        text = bytes(row["body"]).decode("utf-8", "replace")
        if a["kind"] == "logs":
            out["logs"] = text
            continue
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if a["kind"] == "values" and isinstance(data, dict):
            out["current"] = {"expr": data.get("expr"), "rows": [v for v in data.get("values") or []
                                                                 if isinstance(v, dict)]}
        elif a["kind"] == "related" and isinstance(data, dict):
            out["related"] = {"service": data.get("service"),
                              "alerts": [r for r in data.get("alerts") or [] if isinstance(r, dict)]}
        elif a["kind"] == "error" and isinstance(data, dict):
            out["errors"] = data
    return out, store.ticket_runs(conn, tid)


@bp.app_template_filter("secs")
def _secs(seconds: float | None) -> str:
    """0.42s, 12.3s, 4m 12s."""
    if seconds is None:
        return "—"
    return f"{seconds:.2g}s" if seconds < 1 else f"{seconds:.1f}s" if seconds < 60 else human(seconds)


@bp.app_template_filter("num")
def _num(v) -> str:
    return f"{v:.6g}" if isinstance(v, (int, float)) else str(v)


def _do(tid: int, fn, done: str):
    st = _st()
    actor = session["user"]
    with st.db.connection() as conn:
        try:
            fn(st.ctx, conn, tid, actor)
            flash(done)
        except tickets.NotFound:
            abort(404)
        except tickets.Conflict as exc:
            flash(f"Not done: {exc}.")
    return redirect(url_for("console.ticket", tid=tid))


def _form_text(name: str, required: bool = False) -> str:
    v = (request.form.get(name) or "").strip()
    if required and not v:
        abort(400, f"{name} is required")
    if len(v) > 4000 or "\x00" in v:
        abort(400, f"{name} is too long")
    return v


@bp.post("/tickets/<int:tid>/acknowledge")
@login_required
def acknowledge(tid: int):
    return _do(tid, lambda ctx, conn, n, actor: tickets.acknowledge(ctx, conn, n, actor), "Acknowledged.")


@bp.post("/tickets/<int:tid>/resolve")
@login_required
def resolve(tid: int):
    note = _form_text("note")
    return _do(tid, lambda ctx, conn, n, actor: tickets.resolve(ctx, conn, n, actor, note), "Resolved.")


@bp.post("/tickets/<int:tid>/comment")
@login_required
def comment(tid: int):
    text = _form_text("text", required=True)
    return _do(tid, lambda ctx, conn, n, actor: tickets.comment(ctx, conn, n, actor, text), "Comment added.")


@bp.post("/tickets/<int:tid>/reassign")
@login_required
def reassign(tid: int):
    who = _form_text("assignee", required=True)
    if who not in _st().ctx.directory.people:
        abort(400, "unknown person")
    return _do(tid, lambda ctx, conn, n, actor: tickets.reassign(ctx, conn, n, actor, who), f"Given to {who}.")
