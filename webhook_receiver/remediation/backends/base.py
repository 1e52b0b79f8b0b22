"""The backend interface (Backend, Result, errors) and the checks every backend uses on
rendered parameters (URL path segments, URLs)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit


class BackendError(RuntimeError):
    """The action could not be carried out (message goes to the audit row)."""


class BackendTimeout(BackendError):
    """The action did not finish within its timeout."""


@dataclass
class Result:
    ok: bool
    output: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Backend:
    name = "backend"

    def __init__(self, settings: dict, cfg: dict):
        self.settings = settings
        self.cfg = cfg

    def describe(self, operation: str, params: dict) -> dict:
        return {"backend": self.name, "operation": operation, **params}

    def run(self, operation: str, params: dict, timeout: float) -> Result:  # pragma: no cover
        raise NotImplementedError


def truncate(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[: limit - 20] + f"... [{len(text) - limit + 20} more]"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def path_segment(value: Any, what: str) -> str:
    """One URL path segment from a (rendered) parameter, percent-encoded; refused when it is
    empty, '.' or '..', or holds '/', '\\' or control characters (it would name another resource)."""
    v = str(value)
    if v in ("", ".", "..") or "/" in v or "\\" in v or _CONTROL.search(v):
        raise BackendError(f"{what} {v[:80]!r} is not a plain name (no '/', '..' or control characters)")
    return quote(v, safe="")


def check_url(url: str) -> str:
    """An http(s) URL whose path has no '.'/'..' segments (also percent-encoded) and no control characters."""
    u = str(url)
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BackendError(f"not an http(s) URL: {u[:120]!r}")
    if _CONTROL.search(u) or " " in u:
        raise BackendError(f"URL with spaces or control characters refused: {u[:120]!r}")
    for seg in parts.path.split("/"):
        if unquote(seg) in (".", "..") or "/" in unquote(seg) or "\\" in unquote(seg):
            raise BackendError(f"URL path with '.' or '..' or an encoded '/' refused: {u[:120]!r}")
    return u
