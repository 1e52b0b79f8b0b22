"""Authentication: Alertmanager's bearer token, API tokens, console users (password hashes)."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from werkzeug.security import check_password_hash, generate_password_hash


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
    def __init__(self, tokens_cfg: list[dict]):
        self._tokens = []
        for t in tokens_cfg:
            tok = t["token"]
            digest = bytes.fromhex(tok[7:]) if tok.startswith("sha256:") else hashlib.sha256(tok.encode()).digest()
            self._tokens.append((digest, Client(t["name"], frozenset(t["scopes"]))))

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
    def __init__(self, users_cfg: list[dict]):
        self._users = {u["name"]: u for u in users_cfg}
        # a hash to check against when the user does not exist (same cost, no user enumeration)
        self._dummy = generate_password_hash("not-a-user")

    def check(self, name: str, password: str) -> dict | None:
        u = self._users.get(name)
        ok = check_password_hash(u["password_hash"] if u else self._dummy, password or "")
        return u if (u and ok) else None

    def get(self, name: str) -> dict | None:
        return self._users.get(name)


def hash_password(password: str) -> str:
    return generate_password_hash(password)
