"""The receiver's Flask application factory.

    from webhook_receiver.app import create_app
    app = create_app(cfg)          # cfg = stack.config.load(...) with database.url and receiver.token set

Blueprints: webhook (POST /webhook/alertmanager), api (/api/v1/..., OpenAPI at
/api/v1/openapi.json), console (/console, HTML), ops (/healthz, /readyz, /metrics).
Migrations run at creation when the database answers (else on the first request that needs
it). Background work (payload processing, escalation, outbox, heartbeats) is started by
``start_scheduler(app)`` or ``scheduler.run_background(cfg)`` (`opsstack receiver serve`
does one of them), never by the factory.
"""
from __future__ import annotations

import hashlib
import logging
import threading

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from webhook_receiver import auth, tickets
from webhook_receiver.db import Database

log = logging.getLogger(__name__)

EXT = "opsstack"


class State:
    """Per-app objects, at app.extensions['opsstack']."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        r = cfg["receiver"]
        url = cfg["database"]["url"]
        if not url:
            raise ValueError("database.url is not set (run through `opsstack up` or set OPSSTACK_DATABASE_URL)")
        self.db = Database(url, size=r["pool_size"], timeout=r["db_timeout"])
        self.ctx = tickets.Context(cfg)
        self.token = r["token"]
        self.api_tokens = auth.ApiTokens(r["api"]["tokens"])
        self.users = auth.Users(r["console"]["users"])
        self.scheduler = None
        self.processor = None
        self.wakeup = threading.Event()  # set when this process queued a payload


def state(app) -> State:
    return app.extensions[EXT]


def _session_secret(cfg: dict) -> str:
    c = cfg["receiver"]["console"]
    if c["session_secret"]:
        return c["session_secret"]
    seed = (cfg["receiver"]["token"] or "") + "|" + (cfg["database"]["url"] or "")
    return hashlib.sha256(("opsstack-console|" + seed).encode()).hexdigest()


def create_app(cfg: dict) -> Flask:
    app = Flask(__name__)
    st = State(cfg)
    app.extensions[EXT] = st
    tickets.set_current_context(st.ctx)
    app.config["MAX_CONTENT_LENGTH"] = cfg["receiver"]["max_body_bytes"]
    app.config["SECRET_KEY"] = _session_secret(cfg)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["JSON_SORT_KEYS"] = False

    from webhook_receiver import api, console, ops, webhook

    app.register_blueprint(ops.bp)
    app.register_blueprint(webhook.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(console.bp)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        from flask import request

        if request.path.startswith("/console") and exc.code not in (413,):
            return exc
        resp = jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description)
        resp.status_code = exc.code
        for k, v in exc.get_headers():  # e.g. Allow on 405
            if k.lower() not in ("content-type", "content-length"):
                resp.headers[k] = v
        return resp

    try:
        st.db.ensure_migrated()
    except Exception as exc:  # noqa: BLE001 - the database may come later; /readyz says so
        log.warning("event=migrate_deferred error=%r", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    from webhook_receiver import automation

    automation.init_app(app, cfg)
    return app


def start_scheduler(app, scheduler: bool = True, force: bool = False, processor: bool = True) -> None:
    """Start this process's background threads: the payload processor (queued processing)
    and, unless disabled, the escalation/outbox/heartbeat loop. With receiver.background
    'process' the web workers run neither (the background process does) unless ``force``."""
    from webhook_receiver.scheduler import Processor, Scheduler

    st = state(app)
    if st.cfg["receiver"]["background"] == "process" and not force:
        return
    if processor and st.processor is None and st.cfg["receiver"]["processing"] == "queued":
        st.processor = Processor(st)
        st.processor.start()
    if scheduler and st.scheduler is None and st.cfg["receiver"]["scheduler"]["enabled"]:
        st.scheduler = Scheduler(st)
        st.scheduler.start()


def close_app(app) -> None:
    from webhook_receiver import automation

    auto = app.extensions.get(automation.EXT)
    if auto is not None:  # its ITSM forwarder thread and worker pools
        try:
            auto.shutdown()
        except Exception:  # noqa: BLE001 - closing the rest matters more
            log.exception("event=automation_shutdown_failed")
    st = state(app)
    for name in ("processor", "scheduler"):
        th = getattr(st, name)
        if th is not None:
            th.stop()
            setattr(st, name, None)
    st.db.close()
