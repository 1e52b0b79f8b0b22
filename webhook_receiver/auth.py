"""Authentication: Alertmanager's bearer token, API tokens, console users (password hashes),
the console's cookie session interface and CSRF token comparison."""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from typing import Callable

from flask import has_request_context, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.security import check_password_hash, generate_password_hash

log = logging.getLogger(__name__)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison (of SHA-256 digests, so lengths leak nothing either)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


@dataclass(frozen=True)
class Client:
    name: str
    scopes: frozenset


class ApiTokens:
    def __init__(self, tokens_cfg):
        """``tokens_cfg``: receiver.api.tokens of the typed receiver view (core.config.view)."""
        self._tokens = []
        for t in tokens_cfg:
            tok = t.token
            digest = bytes.fromhex(tok[7:]) if tok.startswith("sha256:") else hashlib.sha256(tok.encode()).digest()
            self._tokens.append((digest, Client(t.name, frozenset(t.scopes))))

    def client(self, given: str | None) -> Client | None:
        if not given:
            return None
        d = hashlib.sha256(given.encode()).digest()
        found = None
        for digest, client in self._tokens:  # check all: no early exit on a match
            if hmac.compare_digest(d, digest):
                found = client
        return found


class Users:
    def __init__(self, users_cfg):
        """``users_cfg``: receiver.console.users of the typed receiver view (core.config.view)."""
        self._users = {u.name: u for u in users_cfg}
        # a hash to check against when the user does not exist (same cost, no user enumeration)
        self._dummy = generate_password_hash("not-a-user")

    def check(self, name: str, password: str):
        u = self._users.get(name)
        ok = check_password_hash(u.password_hash if u else self._dummy, password or "")
        return u if (u and ok) else None

    def get(self, name: str):
        return self._users.get(name)


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def same_token(given, expected) -> bool:
    """Constant-time equality of two CSRF tokens; False when either is missing or not a string."""
    if not isinstance(given, str) or not isinstance(expected, str) or not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


class UnavailableSession(SecureCookieSession):
    """The session of a request that carried a cookie while the signing key could not be loaded
    (database down): empty, and never written back (the browser keeps its cookie)."""

    unavailable = True


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session with a key that is its own secret: app.config['SECRET_KEY']
    when configured, else ``load_key()`` (kept in PostgreSQL) on first use, cached per process.
    A request without a cookie never needs the key (the webhook never loads it). Cookies are
    ``Secure`` when the request came over TLS (or SESSION_COOKIE_SECURE says always).

    What the cookie names is verified against the server-side session table by the console
    (``console.verify_session``) on every request; signing alone is not trusted."""

    def __init__(self, load_key: Callable[[], str]):
        self._load_key = load_key
        self._lock = threading.Lock()

    def signing_key(self, app) -> str | None:
        if not app.secret_key:
            with self._lock:
                if not app.secret_key:
                    try:
                        key = self._load_key()
                    except Exception as exc:  # noqa: BLE001 - the database may come later
                        log.warning("event=session_key_unavailable error=%s", type(exc).__name__)
                        return None
                    app.config["SECRET_KEY"] = key
        return app.secret_key

    def get_signing_serializer(self, app):
        if self.signing_key(app) is None:
            return None
        return super().get_signing_serializer(app)

    def open_session(self, app, request):
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        s = super().open_session(app, request)
        return s if s is not None else UnavailableSession()

    def save_session(self, app, session, response) -> None:
        if getattr(session, "unavailable", False):
            return
        if session and self.get_signing_serializer(app) is None:
            return  # no key: nothing can be kept (the console answered 503 already)
        super().save_session(app, session, response)

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)
