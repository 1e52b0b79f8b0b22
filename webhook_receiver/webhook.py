"""POST /webhook/alertmanager: Alertmanager webhook payload version 4 -> tickets.

Answers: 200 stored; 400 bad JSON / nested too deeply / not v4 / invalid (nothing written);
401 bad or missing bearer token; 413 larger than receiver.max_body_bytes, whether announced by
Content-Length or streamed (chunked: read with a hard cap, never truncated); 415 not
application/json; 503 the database could not be written (Alertmanager retries).
"""
from __future__ import annotations

import json
import logging
import time

import psycopg
from flask import Blueprint, current_app, jsonify, request
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import RequestEntityTooLarge

from core.logs import first_line
from webhook_receiver import auth, intake, metrics
from webhook_receiver.payload import PayloadError, parse_obj
from webhook_receiver.state import state
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


def _is_json(content_type: str | None) -> bool:
    """application/json, with or without parameters (Alertmanager sends exactly that)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


READ_CHUNK = 65536


def read_body(limit: int) -> bytes:
    """The request body, at most ``limit`` bytes; RequestEntityTooLarge (413) above it.

    With Content-Length werkzeug refuses a larger one before reading. Without it (chunked)
    werkzeug's stream would stop quietly at the limit (a truncated body that might still parse);
    here the stream is read with a hard cap instead: one byte past the limit is a 413."""
    request.max_content_length = limit
    if request.content_length is not None:
        return request.get_data(cache=False)
    env = request.environ
    if not env.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not end the stream: nothing can be read safely
    stream = env["wsgi.input"]
    buf = bytearray()
    while True:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - len(buf)))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise RequestEntityTooLarge(f"the body is larger than {limit} bytes (receiver.max_body_bytes)")


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
    st = state(current_app)
    if not auth.token_matches(auth.bearer(request.headers.get("Authorization")), st.token):
        metrics.WEBHOOK.labels("unauthorized").inc()
        return _err(401, "unauthorized", "missing or wrong bearer token")
    if not _is_json(request.headers.get("Content-Type")):
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(415, "unsupported_media_type", "the body must be Content-Type: application/json")
    try:
        body = read_body(st.receiver.max_body_bytes)
    except RequestEntityTooLarge:
        metrics.WEBHOOK.labels("too_large").inc()
        log.warning("event=webhook_too_large limit=%s length=%s", st.receiver.max_body_bytes,
                    request.content_length)
        raise
    if b"\\u0000" in body:  # PostgreSQL cannot store NUL in text/jsonb: bad input, not a retry case
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(400, "invalid_payload", "NUL characters (\\u0000) are not accepted")
    try:
        data, text = _load(body)
    except (ValueError, UnicodeDecodeError) as exc:
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(400, "invalid_json", f"malformed JSON: {exc}")
    except RecursionError:
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(400, "invalid_json", "malformed JSON: nested too deeply")
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
    except RecursionError:
        metrics.WEBHOOK.labels("invalid").inc()
        return _err(400, "invalid_json", "malformed JSON: nested too deeply")
    queued = st.receiver.processing == "queued"
    try:
        spooled = queued and st.receiver.intake == "spool"
        if not spooled:  # the spool needs no database (its loader migrates)
            st.db.ensure_migrated()
        if queued:  # group commit: this process's writer stores it with whatever else is waiting
            t0 = time.perf_counter()
            payload_id = intake.writer(current_app, st).submit(note, text)
            metrics.INTAKE_STORE_SECONDS.observe(time.perf_counter() - t0)
        else:
            res = st.db.run(lambda conn: ingest(st.ctx, conn, note, text))
    except (psycopg.Error, PoolTimeout, intake.StoreFailed) as exc:
        metrics.WEBHOOK.labels("db_error").inc()
        log.error("event=webhook_db_error group_key=%r error=%r", note.group_key,
                  first_line(exc))
        return _err(503, "database_unavailable", "could not store the notification; retry later", retry=True)
    metrics.WEBHOOK.labels("stored").inc()
    if queued:
        st.wakeup.set()  # this worker's processor applies it now; any worker may (spooled: once loaded)
        if spooled:  # on this host's disk; in the database right after
            return jsonify(status="accepted", spooled=True)
        return jsonify(status="accepted", payload_id=payload_id)
    log.info("event=notification_stored payload_id=%s group_key=%r status=%s alerts=%s opened=%s resolved=%s "
             "reopened=%s duplicates=%s", res.payload_id, note.group_key, note.status, len(note.alerts),
             len(res.opened), len(res.resolved), len(res.reopened), res.duplicates)
    return jsonify(status="ok", **res.as_dict())
