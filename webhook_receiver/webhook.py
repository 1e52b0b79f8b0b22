"""POST /webhook/alertmanager: Alertmanager webhook payload version 4 -> tickets.

Answers: 200 stored; 400 bad JSON / not v4 / invalid (nothing written); 401 bad or missing
bearer token; 413 too large; 503 the database could not be written (Alertmanager retries).
"""
from __future__ import annotations

import json
import logging

import psycopg
from flask import Blueprint, current_app, jsonify, request
from psycopg_pool import PoolTimeout

from webhook_receiver import auth, intake, metrics
from webhook_receiver.payload import PayloadError, parse_obj
from webhook_receiver.tickets import ingest

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)


def _err(status: int, error: str, message: str, **extra):
    resp = jsonify(error=error, message=message, **extra)
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="opsstack-receiver"'
    return resp


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: jsonb refuses them (was a 503)


def _load(body: bytes):
    """(parsed JSON, text to store). The text is the body itself when it is plain UTF-8 without
    \\uD800-\\uDFFF escapes (the usual case: no second serialisation); None when it must be
    re-encoded from the parsed value (BOM, UTF-16/32, surrogate escapes: checked afterwards)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or text.startswith("\ufeff") or "\\ud" in text or "\\uD" in text:
        return json.loads(body, parse_constant=_reject_constant), None
    return json.loads(text, parse_constant=_reject_constant), text


@bp.post("/webhook/alertmanager")
def alertmanager():
    from webhook_receiver.app import state

    st = state(current_app)
    if not auth.token_matches(auth.bearer(request.headers.get("Authorization")), st.token):
        metrics.WEBHOOK.labels("unauthorized").inc()
        return _err(401, "unauthorized", "missing or wrong bearer token")
    body = request.get_data(cache=False)  # 413 above max_body_bytes (MAX_CONTENT_LENGTH)
    if b"\\u0000" in body:  # PostgreSQL cannot store NUL in text/jsonb: bad input, not a retry case
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(400, "invalid_payload", "NUL characters (\\u0000) are not accepted")
    try:
        data, text = _load(body)
    except (ValueError, UnicodeDecodeError) as exc:
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(400, "invalid_json", f"malformed JSON: {exc}")
    try:
        note = parse_obj(data)
        if text is None:
            # the stored copy: compact, and valid UTF-8 (a lone \udXXX escape is not; jsonb refuses it)
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            text.encode("utf-8")
    except PayloadError as exc:
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(400, "invalid_payload", exc.message, field=exc.where)
    except UnicodeEncodeError:
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(400, "invalid_payload", "the JSON holds an unpaired UTF-16 surrogate escape")
    queued = st.cfg["receiver"]["processing"] == "queued"
    try:
        st.db.ensure_migrated()
        if queued:  # group commit: this process's writer stores it with whatever else is waiting
            payload_id = intake.writer(current_app, st).submit(note, text)
        else:
            res = st.db.run(lambda conn: ingest(st.ctx, conn, note, text))
    except (psycopg.Error, PoolTimeout, intake.StoreFailed) as exc:
        metrics.WEBHOOK.labels("db_error").inc()
        log.error("event=webhook_db_error group_key=%r error=%r", note.group_key,
                  (str(exc).strip().splitlines() or [type(exc).__name__])[0])
        return _err(503, "database_unavailable", "could not store the notification; retry later", retry=True)
    metrics.WEBHOOK.labels("stored").inc()
    if queued:
        st.wakeup.set()  # this worker's processor applies it now; any worker may
        return jsonify(status="accepted", payload_id=payload_id)
    log.info("event=notification_stored payload_id=%s group_key=%r status=%s alerts=%s opened=%s resolved=%s "
             "reopened=%s duplicates=%s", res.payload_id, note.group_key, note.status, len(note.alerts),
             len(res.opened), len(res.resolved), len(res.reopened), res.duplicates)
    return jsonify(status="ok", **res.as_dict())
