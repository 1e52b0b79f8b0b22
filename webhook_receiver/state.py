"""The per-app state of the receiver, at ``app.extensions['opsstack']``.

    from webhook_receiver.state import state
    st = state(current_app)       # st.receiver (typed view), st.db, st.ctx, st.hooks, st.automation...

Everything an app owns lives here, never in module globals, so two apps in one process (tests
make many) never share a pool, a hook subscriber or a metrics collector. Blueprints import this
module; app.py (the factory) builds the State.
"""
from __future__ import annotations

import threading

from webhook_receiver import auth, tickets
from webhook_receiver.db import Database
from webhook_receiver.hooks import Hooks

EXT = "opsstack"
AUTOMATION_EXT = "opsstack.automation"


class State:
    """Per-app objects, at app.extensions['opsstack']."""

    def __init__(self, cfg: dict):
        # the whole validated dict is kept only to hand on as a whole: automation.init_app (its
        # remediation/enrichment/ITSM parts and jobs still read their sections as dicts) and the
        # tests that read the database URL; receiver code reads the typed views below
        self.cfg = cfg
        self.hooks = Hooks()  # ticket_opened/updated/resolved/reopened subscribers of this app
        self.ctx = tickets.Context(cfg, hooks=self.hooks)  # builds the typed views once
        self.receiver = self.ctx.receiver            # view(cfg, "receiver")
        self.notifications = self.ctx.notifications  # view(cfg, "notifications")
        self.escalation = self.ctx.escalation        # view(cfg, "escalation")
        r = self.receiver
        url = self.ctx.db_url
        if not url:
            raise ValueError("database.url is not set (run through `opsstack up` or set OPSSTACK_DATABASE_URL)")
        self.db = Database(url, size=r.pool_size, timeout=r.db_timeout)
        self.token = r.token
        self.api_tokens = auth.ApiTokens(r.api.tokens)
        self.users = auth.Users(r.console.users)
        # password checks running at once in this process (more get 503 at once: scrypt never
        # takes every thread and core from the webhook)
        self.login_slots = threading.BoundedSemaphore(r.console.login.concurrent_checks)
        self.scheduler = None
        self.processor = None
        self.loader = None  # spool.Loader (receiver.intake: spool), beside the processor
        self.automation = None  # automation.Automation, set by automation.init_app
        # more collectors for this app's /metrics: callables f(db) -> collector, called per scrape
        self.metrics_collectors: list = []
        self.wakeup = threading.Event()  # set when this process queued a payload


def state(app) -> State:
    return app.extensions[EXT]
