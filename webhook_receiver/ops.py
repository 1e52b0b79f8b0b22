"""/healthz (the process answers), /readyz (database reachable and migrated), /metrics.

These three are open (load balancers, supervisors and Prometheus reach them without a
credential) and say nothing more than that: /healthz and /readyz answer a status and a
database true/false, never an error text or a URL; /metrics carries aggregate counts only
(tickets by service/severity, MTTA/MTTR, remediation outcomes by playbook), never a ticket,
a label value beyond the bounded sets, a name or a secret. Everything else needs a credential.
"""
from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from webhook_receiver import metrics
from webhook_receiver.state import state

bp = Blueprint("ops", __name__)


@bp.before_app_request
def _start_timer():
    g._t0 = time.perf_counter()


@bp.after_app_request
def _observe(resp):
    t0 = getattr(g, "_t0", None)
    if t0 is not None and request.url_rule is not None:
        metrics.REQUEST_SECONDS.labels(request.url_rule.rule).observe(time.perf_counter() - t0)
    return resp


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    st = state(current_app)
    try:
        st.db.ensure_migrated()
        ok = st.db.ping()
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        return jsonify(status="unavailable", database=False), 503
    return jsonify(status="ok", database=True)


@bp.get("/metrics")
def metrics_view():
    st = state(current_app)
    channels = [c.name for c in st.notifications.channels]
    return Response(metrics.exposition(st.db, st.metrics_collectors, channels), mimetype=CONTENT_TYPE_LATEST)
