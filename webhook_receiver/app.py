"""The receiver's Flask application factory.

    from webhook_receiver.app import create_app
    app = create_app(cfg)          # cfg = core.config.load(...) with database.url and receiver.token set

Blueprints: webhook (POST /webhook/alertmanager), api (/api/v1/..., OpenAPI at
/api/v1/openapi.json), console (/console, HTML), runbooks (/runbooks, HTML), ops (/healthz, /readyz, /metrics).
Migrations run at creation when the database answers (else on the first request that needs
it). Background work (payload processing, escalation, outbox, heartbeats) is started by
``start_scheduler(app)`` or ``run_background(cfg)`` (`opsstack receiver serve`
does one of them), never by the factory.

Layers: state.py (the per-app State) and errors.py (API errors, auth) below the blueprints;
this module only builds the State, registers the blueprints and the error handlers, and wires
automation. OpenAPI paths come from the registered blueprints (openapi.for_app).
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

import psycopg
from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

from core.logs import first_line
from webhook_receiver import api, auth, automation, console, console_store, kpis, ops, runbooks, spool, webhook
from webhook_receiver.scheduler import Processor, Scheduler
from webhook_receiver.state import EXT, State, state  # noqa: F401 - state(app) also from here

log = logging.getLogger(__name__)


# every console page: no script at all, styles only from the console's own stylesheet, images
# (the graph attachment) and form posts only to this origin, never framed, no Referer to links
CONSOLE_CSP = ("default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; "
               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _session_key_loader(st: State):
    """receiver.console.session_secret, else the random key kept in PostgreSQL (generated once,
    the same for every worker and replica). Never derived from the token or the database URL."""
    def load() -> str:
        st.db.ensure_migrated()
        return st.db.run(console_store.shared_secret)
    return load


API_MAX_BODY_BYTES = 1048576


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that JSON nested deeper than the parser's recursion allows is a
    ValueError (request.get_json -> 400), not a RecursionError (500)."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def create_app(cfg: dict) -> Flask:
    app = Flask(__name__)
    st = State(cfg)
    app.extensions[EXT] = st
    # API and console bodies are small; the webhook raises its own limit (receiver.max_body_bytes)
    app.config["MAX_CONTENT_LENGTH"] = min(API_MAX_BODY_BYTES, st.receiver.max_body_bytes)
    app.json = _JSONProvider(app)
    console_cfg = st.receiver.console
    app.config["SECRET_KEY"] = console_cfg.session_secret or None  # None: loaded on first use
    app.session_interface = auth.SessionInterface(_session_key_loader(st))
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"  # Secure: set per request when it came over TLS
    app.permanent_session_lifetime = timedelta(seconds=console_cfg.session_lifetime)
    app.config["JSON_SORT_KEYS"] = False

    app.register_blueprint(ops.bp)
    app.register_blueprint(webhook.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(runbooks.bp)

    @app.after_request
    def _security_headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith("/console"):
            resp.headers["Content-Security-Policy"] = CONSOLE_CSP
            resp.headers["X-Frame-Options"] = "DENY"
            resp.headers["Referrer-Policy"] = "no-referrer"
            if request.endpoint != "console.static":
                resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith("/console") and exc.code not in (413,):
            return exc
        resp = jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description)
        resp.status_code = exc.code
        for k, v in exc.get_headers():  # e.g. Allow on 405
            if k.lower() not in ("content-type", "content-length"):
                resp.headers[k] = v
        return resp

    @app.errorhandler(psycopg.DataError)
    def _db_input_error(exc: psycopg.DataError):
        # PostgreSQL refused a value that came with the request (NUL, out of range, bad encoding):
        # bad input, a retry cannot help
        log.info("event=db_data_error error=%r", first_line(exc))
        return jsonify(error="bad_request", message="the request holds a value the database cannot store"), 400

    @app.errorhandler(psycopg.Error)
    @app.errorhandler(PoolTimeout)
    def _db_error(exc):
        log.error("event=db_error error_type=%s error=%r", type(exc).__name__, first_line(exc))
        resp = jsonify(error="database_unavailable", message="the ticket database is not reachable; retry later",
                       retry=True)
        resp.status_code = 503
        resp.headers["Retry-After"] = "5"
        return resp

    try:
        st.db.ensure_migrated()
    except Exception as exc:  # noqa: BLE001 - the database may come later; /readyz says so
        log.warning("event=migrate_deferred error=%r", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    automation.init_app(app, cfg)
    st.metrics_collectors.append(kpis.collector_factory(cfg))  # outcome KPIs (after automation's tables)
    if st.receiver.processing == "queued" and st.receiver.intake == "spool":
        st.metrics_collectors.append(spool.collector_factory(st))
    return app


def start_scheduler(app, scheduler: bool = True, force: bool = False, processor: bool = True) -> None:
    """Start this process's background threads: the payload processor (queued processing)
    and, unless disabled, the escalation/outbox/heartbeat loop. With receiver.background
    'process' the web workers run neither (the background process does) unless ``force``."""
    st = state(app)
    if st.receiver.background == "process" and not force:
        return
    if processor and st.processor is None and st.receiver.processing == "queued":
        st.processor = Processor(st)
        if st.receiver.intake == "spool" and st.loader is None:
            # moves what the web processes spooled into the database (one loader per folder at
            # a time: a file lock), then wakes this process's processor
            st.loader = spool.Loader(st.db, spool.folder(st), wake=st.processor.kick)
        st.processor.start()
        if st.loader is not None:
            st.loader.start()
    if scheduler and st.scheduler is None and st.receiver.scheduler.enabled:
        st.scheduler = Scheduler(st)
        st.scheduler.start()


def close_app(app) -> None:
    auto = app.extensions.get(automation.EXT)
    if auto is not None:  # its ITSM forwarder thread and worker pools
        try:
            auto.shutdown()
        except Exception:  # noqa: BLE001 - closing the rest matters more
            log.exception("event=automation_shutdown_failed")
    st = state(app)
    for name in ("loader", "processor", "scheduler"):
        th = getattr(st, name)
        if th is not None:
            th.stop()
            setattr(st, name, None)
    st.db.close()


def run_background(cfg: dict, stop: threading.Event | None = None, scheduler: bool = True) -> None:
    """The receiver's background process: processor threads and the scheduler loop, no HTTP."""
    app = create_app(cfg)
    # its database sessions yield the CPU as the process does (cli.lower_priority): the backends
    # serving the webhook's intake go first in a storm
    state(app).db.backend_nice = state(app).receiver.background_nice
    start_scheduler(app, scheduler=scheduler, force=True)
    log.info("event=background_started processing_threads=%s", state(app).receiver.processing_threads)
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        close_app(app)
