"""One bounded JSON request, shared by the automation exporter's sources.

A source's answer is attacker-controlled input: the body is read in chunks and refused past
``max_bytes`` (a huge answer never fills the memory), a 2xx answer must be JSON, and every failure
(connection, timeout, size, JSON) becomes a ``SourceError`` with a short reason for the log line.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import requests


class SourceError(RuntimeError):
    """A source could not be read; str() is the reason (one line, bounded)."""

    def __init__(self, reason: str):
        super().__init__(" ".join(str(reason).split())[:300])


def session_for(url: str) -> requests.Session:
    """A session for one source: the environment's proxy for ``url`` (HTTP(S)_PROXY, NO_PROXY)
    resolved once here, not at every request (requests reads the whole environment per request
    otherwise: a tenth of a second per scrape of 110 pages), and no .netrc credentials."""
    s = requests.Session()
    s.proxies = requests.utils.get_environ_proxies(url)
    s.trust_env = False
    return s


def request_json(session: requests.Session, method: str, url: str, *, timeout: float, max_bytes: int,
                 **kw) -> tuple[int, Any]:
    """(status, parsed body) of one request; the body is None when it is not a 2xx answer or is
    empty. Raises SourceError when the source cannot be reached, is too slow, answers more than
    ``max_bytes`` or a 2xx answer that is not JSON."""
    try:
        with session.request(method, url, timeout=timeout, stream=True, allow_redirects=False, **kw) as r:
            declared = r.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise SourceError(f"{method} {_path(url)}: answer of {declared} bytes is over {max_bytes}")
            data = bytearray()
            for chunk in r.iter_content(65536):
                data += chunk
                if len(data) > max_bytes:
                    raise SourceError(f"{method} {_path(url)}: answer over {max_bytes} bytes")
            status = r.status_code
    except requests.Timeout:
        raise SourceError(f"{method} {_path(url)}: timed out after {timeout:g}s") from None
    except requests.RequestException as exc:
        raise SourceError(f"{method} {_path(url)}: {type(exc).__name__}") from None
    if not 200 <= status < 300 or not data:
        return status, None
    try:
        return status, json.loads(bytes(data))
    except (ValueError, RecursionError):
        raise SourceError(f"{method} {_path(url)}: answered {status} without valid JSON") from None


def _path(url: str) -> str:
    """The path of a URL, for a log line (no query, no credentials)."""
    rest = url.split("://", 1)[-1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path.split("?", 1)[0][:120]


def parse_time(value: Any) -> float | None:
    """An ISO 8601 timestamp of an API (``2026-11-30T01:02:03.456789Z``, ``+00:00``) as Unix
    seconds; None when missing or not a timestamp (a naive one is taken as UTC)."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        dt = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def iso(ts: float) -> str:
    """Unix seconds as the UTC ISO 8601 form the APIs take in a query (``...Z``)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
