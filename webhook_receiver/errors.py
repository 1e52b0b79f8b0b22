"""API errors and authentication, the one copy every JSON blueprint uses (api, automation).

    from webhook_receiver.errors import ApiError, require
    actor = require("write")            # ApiError 401/403 unless the request may write
    raise ApiError(404, "not_found", "no such ticket")

``register(bp)`` installs the handler that turns an ApiError into ``{"error", "message"}`` with
its status (401 also carries WWW-Authenticate).
"""
from __future__ import annotations

from flask import current_app, jsonify, request, session

from webhook_receiver import auth
from webhook_receiver.state import state


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str):
        self.status, self.error, self.message = status, error, message


def api_error_response(exc: ApiError):
    resp = jsonify(error=exc.error, message=exc.message)
    resp.status_code = exc.status
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="opsstack-api"'
    return resp


def register(bp) -> None:
    """Answer ApiError raised in ``bp``'s views as JSON."""
    bp.register_error_handler(ApiError, api_error_response)


def require(scope: str) -> str:
    """The actor name for the request, or ApiError 401/403.

    A bearer token from receiver.api.tokens (with ``scope``), the receiver's own token while
    receiver.api.accept_receiver_token, a console session (read), or nobody when
    receiver.api.anonymous_read (read)."""
    st = state(current_app)
    tok = auth.bearer(request.headers.get("Authorization"))
    if tok:
        client = st.api_tokens.client(tok)
        if client is None and st.receiver.api.accept_receiver_token and auth.token_matches(tok, st.token):
            return "api:stack"  # the stack's own secret (opsstack up, tests, automation)
        if client is None:
            raise ApiError(401, "unauthorized", "unknown API token")
        if scope not in client.scopes:
            raise ApiError(403, "forbidden", f"the token lacks the {scope!r} scope")
        return f"api:{client.name}"
    if scope == "read":
        if session.get("user"):
            return session["user"]
        if st.receiver.api.anonymous_read:
            return "anonymous"
    raise ApiError(401, "unauthorized", "send Authorization: Bearer <API token>")


def ticket_id(value: str) -> int:
    """A ticket id from the URL, or ApiError 404 (not a whole number, out of range)."""
    try:
        n = int(value)
    except ValueError:
        raise ApiError(404, "not_found", "no such ticket") from None
    if not 0 < n < 2**63:
        raise ApiError(404, "not_found", "no such ticket")
    return n
