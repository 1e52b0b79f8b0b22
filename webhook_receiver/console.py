"""The incident console: server-rendered HTML, no build step.

Login with a user from receiver.console.users (werkzeug password hashes). The session cookie
(signed with its own random key, see app.py) carries a random session id; the session itself is
a row in PostgreSQL (console_store), checked on every request together with the user still
being configured, ended by logout and by the idle timeout / lifetime. Wrong passwords are
throttled per user name and per client address (429 + Retry-After, the password is not even
checked while locked), and only receiver.console.login.concurrent_checks password checks run at
once per process (503 past that). Every form, the login form included, carries a CSRF token.

Pages: the open tickets by severity and age (linked by Alertmanager group), and one ticket with
its alerts, owner, level, time left before the next escalation, the timeline, and buttons to
acknowledge, resolve, comment and reassign. Links built from alert data go through
``safe_href`` (http/https only); the pages run no script at all (CSP in app.py).
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from datetime import datetime
from functools import wraps
from urllib.parse import urlsplit

import psycopg
from flask import (Blueprint, abort, current_app, flash, redirect, render_template, request, session,
                   url_for)
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import ServiceUnavailable

from core.clock import utcnow
from webhook_receiver import auth, console_store, notify, ticket_store, tickets
from webhook_receiver import enrichment as enr
from webhook_receiver.remediation import store
from webhook_receiver.state import AUTOMATION_EXT, state

log = logging.getLogger(__name__)

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static", static_url_path="/static")

# what browsers drop or reinterpret inside URLs (controls, spaces, backslash): never in a link
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\\]")
MAX_HREF = 2048


def safe_href(url) -> str | None:
    """``url`` when it may be a link: an absolute http(s) URL with a host, or a path on this site
    ('/x', not '//x'); None for anything else (javascript:, data:, vbscript:, relative, odd) (pure).
    Templates render a None as plain text without an href."""
    if not isinstance(url, str) or not url or len(url) > MAX_HREF or _URL_UNSAFE.search(url):
        return None
    if url.startswith("/") and not url.startswith("//"):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


bp.add_app_template_filter(safe_href, "safe_href")

SEV_ORDER = ("critical", "warning", "info")


def _st():
    return state(current_app)


def _csrf() -> str:
    tok = session.get("csrf")
    if not tok:
        tok = session["csrf"] = secrets.token_urlsafe(24)
    return tok


def _check_csrf() -> None:
    if not auth.same_token(request.form.get("csrf"), session.get("csrf")):
        abort(400, "bad or missing CSRF token; reload the page")


def _timeouts() -> tuple[float, float]:
    c = _st().receiver.console
    return c.session_idle_timeout, c.session_lifetime


@bp.before_app_request
def verify_session() -> None:
    """Every request that carries a logged-in session (console, API reads, attachments): the
    session id must name a live row in console_sessions for the same user, and that user must
    still be configured; otherwise the session is dropped (the request is anonymous, the cookie
    is cleared). A signed cookie alone (e.g. forged with a leaked key) is never enough."""
    if request.endpoint == "console.static" or not session:
        return
    user, sid = session.get("user"), session.get("sid")
    if user is None and sid is None:
        return  # before login: only the CSRF token
    st = _st()
    known = isinstance(user, str) and st.users.get(user) is not None
    live = None
    if known and isinstance(sid, str):
        idle, lifetime = _timeouts()
        try:
            live = st.db.run(lambda conn: console_store.touch_session(conn, sid, idle, lifetime))
        except (psycopg.Error, PoolTimeout):
            raise ServiceUnavailable("the ticket database is not reachable; retry shortly") from None
    if live is None or live != user:
        log.info("event=console_session_rejected reason=%s", "no_live_session" if known else "unknown_user")
        session.clear()


def login_required(fn):
    @wraps(fn)
    def wrapper(*a, **kw):
        if not session.get("user"):
            return redirect(url_for("console.login", next=request.full_path if request.query_string else request.path))
        if request.method == "POST":
            _check_csrf()
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
    return human((utcnow() - t).total_seconds()) if t else "—"


@bp.app_template_filter("until")
def _until(t: datetime | None) -> str:
    if t is None:
        return "—"
    left = (t - utcnow()).total_seconds()
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
    return {"title": st.receiver.console.title, "user": session.get("user"), "csrf": _csrf,
            # notifications.mailbox_url (the demo mail sink under `opsstack up`): where the pages land
            "mailbox_url": safe_href(st.notifications.mailbox_url)}


@bp.errorhandler(psycopg.Error)
@bp.errorhandler(PoolTimeout)
@bp.errorhandler(ServiceUnavailable)
def _db_down(exc):
    return render_template("console_error.html", message="The ticket database is not reachable; retry shortly."), 503


@bp.before_request
def _signing_key() -> None:
    """The session key comes from PostgreSQL unless configured: no key, no console (503)."""
    if request.endpoint == "console.static":
        return
    if current_app.session_interface.get_signing_serializer(current_app) is None or getattr(
            session, "unavailable", False):
        raise ServiceUnavailable("the session key is not available (database down?)")


def _safe_next(nxt: str) -> str:
    """Where to go after login: a console path only (no other host, no scheme) (pure)."""
    if isinstance(nxt, str) and nxt.startswith("/console/") and not _URL_UNSAFE.search(nxt) and "//" not in nxt:
        return nxt
    return "/console/"


def _login_page(error: str | None, status: int, headers: dict | None = None):
    no_users = not _st().receiver.console.users
    return render_template("console_login.html", error=error, no_users=no_users), status, headers or {}


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method != "POST":
        return _login_page(None, 200)
    _check_csrf()  # the form's token, kept in the pre-login session cookie
    st = _st()
    lc = st.receiver.console.login
    name = request.form.get("username", "")
    name = name if isinstance(name, str) else ""
    addr = request.remote_addr or "unknown"
    keys = ["user:" + name[:200], "addr:" + addr]
    # locked out: answer at once, without checking the password (even a right one)
    locked = st.db.run(lambda conn: console_store.locked_for(conn, keys))
    if locked > 0:
        wait = console_store.retry_after(locked)
        log.info("event=console_login_throttled retry_after=%s", wait)
        return _login_page(f"Too many failed logins: try again in {wait}s.", 429, {"Retry-After": str(wait)})
    if not st.login_slots.acquire(blocking=False):
        return _login_page("The console is busy checking other logins: try again in a moment.", 503,
                           {"Retry-After": "1"})
    try:
        user = st.users.check(name, request.form.get("password", ""))
    finally:
        st.login_slots.release()
    idle, lifetime = _timeouts()
    if not user:
        def fail(conn) -> float:
            w = max(console_store.record_failure(conn, keys[0], lc.free_attempts, lc.backoff,
                                                 lc.max_backoff, lc.forget_after),
                    console_store.record_failure(conn, keys[1], lc.address_free_attempts, lc.backoff,
                                                 lc.max_backoff, lc.forget_after))
            console_store.sweep_failures(conn, lc.forget_after)
            return w
        st.db.run(fail)
        log.info("event=console_login_failed")
        return _login_page("Wrong user name or password.", 401)

    def start(conn) -> str:
        console_store.clear_failures(conn, keys[0])
        return console_store.create_session(conn, user.name, addr, idle, lifetime)
    sid = st.db.run(start)
    session.clear()  # a new session (and CSRF token) on every login: no fixation
    session["sid"] = sid
    session["user"] = user.name
    session["display"] = user.display_name or user.name
    _csrf()
    log.info("event=console_login user=%s", user.name)
    return redirect(_safe_next(request.args.get("next", "")))


@bp.post("/logout")
@login_required
def logout():
    sid = session.get("sid")
    _st().db.run(lambda conn: console_store.end_session(conn, sid))  # the cookie is dead from now on
    session.clear()
    return redirect(url_for("console.login"))


@bp.get("/")
@login_required
def index():
    st = _st()
    group = request.args.get("group", type=int)
    with st.db.connection() as conn:
        open_rows = ticket_store.list_tickets(conn, status=["open", "acknowledged"], group_id=group, limit=500)
        recent = ticket_store.list_tickets(conn, status=["resolved"], group_id=group, limit=20)
        gsize = {r["group_id"]: r["n"] for r in conn.execute(
            "select group_id, count(*) n from tickets where status <> 'resolved' and group_id is not null "
            "group by 1").fetchall()}
    by_sev: dict[str, list] = {}
    for t in sorted(open_rows, key=lambda t: (t["group_id"] or 0, t["opened_at"])):
        by_sev.setdefault(t["severity"] if t["severity"] in SEV_ORDER else "other", []).append(t)
    sections = [(s, by_sev[s]) for s in (*SEV_ORDER, "other") if s in by_sev]
    labels = {t["id"]: level_label(t["level"], st.ctx.policy(t["policy"]).level(t["level"]).name) for t in open_rows}
    return render_template("console_index.html", sections=sections, recent=recent, gsize=gsize,
                           group=group, labels=labels)


@bp.get("/tickets/<int:tid>")
@login_required
def ticket(tid: int):
    st = _st()
    with st.db.connection() as conn:
        t = ticket_store.get_ticket(conn, tid)
        if t is None:
            abort(404)
        events = ticket_store.events(conn, tid)
        alerts = ticket_store.alerts(conn, tid)
        alert_counts = ticket_store.alert_counts(conn, tid)
        siblings = ticket_store.list_tickets(conn, group_id=t["group_id"], limit=50) if t["group_id"] else []
        enrichment, runs = _automation(conn, tid)
        failed_notifications = notify.deliveries(conn, tid, failed_only=True)
        group = ticket_store.get_group(conn, t["group_id"]) if t["group_id"] else None
    pol = st.ctx.policy(t["policy"])
    return render_template("console_ticket.html", t=t, events=events, alerts=alerts, alert_counts=alert_counts,
                           siblings=[s for s in siblings if s["id"] != tid],
                           level_name=level_label(t["level"], pol.level(t["level"]).name),
                           people=sorted(st.ctx.directory.people), enrichment=enrichment, runs=runs,
                           failed_notifications=failed_notifications, group=group)


def _automation(conn, tid: int) -> tuple[dict | None, list]:
    """What automation attached to the ticket and the remediation it ran (None, [] without
    automation in this app). The graph is linked (its API URL, readable with the console
    session), the JSON and text attachments are parsed here and rendered as text."""
    auto = current_app.extensions.get(AUTOMATION_EXT)
    if auto is None:
        return None, []
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
            link = (a.get("meta") or {}).get("explore_url")  # built by enrichment from enrichment.logs.grafana_url
            if isinstance(link, str) and link.startswith(("http://", "https://")):
                out["logs_explore"] = link
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
