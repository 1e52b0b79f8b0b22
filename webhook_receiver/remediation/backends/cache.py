"""Cache invalidation backends: cloudflare (purge), varnish (xkey purge / ban by tag or prefix),
redis (key-pattern delete). Playbook actions name them like any backend, so every call is
audited, dry-run, cooled down and locked by the runner like the others (docs/remediation.md).

Where they act comes from the CDN exporter's section (exporters.cdn: Cloudflare zones and token,
Varnish instance URLs, Redis instance URLs and the key prefixes invalidation may touch); how often
from exporters.cdn.invalidation.<provider> (max_calls per `per`, counted per receiver process for
each provider: a call over the limit is refused, not queued).

- cloudflare ``purge``: params ``zone`` (a configured zone name) and one of ``tags``, ``prefixes``,
  ``files``, ``hosts`` (a string or a list, at most 30) or ``purge_everything: true`` (only when
  ``allow_purge_everything``): POST <api_url>/zones/<id>/purge_cache.
- varnish ``purge_tag``: params ``tag``; ``PURGE /`` with ``xkey-purge: <tag>`` to each instance
  (the VCL calls xkey.purge). ``ban``: params ``tag`` or ``prefix`` (a URL path prefix): ``BAN /``
  with ``X-Ban-Tag`` or ``X-Ban-Prefix`` (the VCL adds the ban). ``instance`` limits it to one.
- redis ``delete_pattern``: params ``pattern`` (a glob under one of the instance's key_prefixes,
  e.g. ``cache:event:{event}:*``), optional ``instance``: SCAN MATCH + UNLINK, never KEYS, at most
  ``max_keys`` keys.
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from pathlib import Path

import requests

from core.resp import RedisConn, RedisError

from .base import Backend, BackendError, BackendTimeout, Result, check_url, truncate

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:=+-]{0,127}")
_PREFIX = re.compile(r"/[A-Za-z0-9/_.-]{0,200}")
_PATTERN = re.compile(r"[A-Za-z0-9_.:=+*?/-]{1,256}")


class RateLimiter:
    """At most ``max_calls`` per ``per`` seconds (a sliding window), shared by every backend
    object of the provider in this process."""

    _windows: dict[str, deque] = {}
    _lock = threading.Lock()

    @classmethod
    def take(cls, provider: str, max_calls: int, per: float, now: float | None = None) -> float | None:
        """None when the call may go; else the seconds until it could."""
        now = time.monotonic() if now is None else now
        with cls._lock:
            q = cls._windows.setdefault(provider, deque())
            while q and q[0] <= now - per:
                q.popleft()
            if len(q) >= max_calls:
                return q[0] + per - now
            q.append(now)
            return None

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._windows.clear()


def _cdn(cfg: dict) -> dict:
    return (cfg.get("exporters") or {}).get("cdn") or {}


def _list(v) -> list[str]:
    return [str(x) for x in (v if isinstance(v, list) else [v])]


def _tag(v) -> str:
    t = str(v)
    if not _TAG.fullmatch(t):
        raise BackendError(f"tag {t[:80]!r} is not a plain name (letters, digits, _ . : = + -)")
    return t


class _CacheBackend(Backend):
    provider = "cache"

    def _limit(self) -> None:
        lim = _cdn(self.cfg).get("invalidation", {}).get(self.provider) or {}
        wait = RateLimiter.take(self.provider, int(lim.get("max_calls", 10)), float(lim.get("per", 60.0)))
        if wait is not None:
            raise BackendError(f"{self.provider} invalidation rate limit reached ({lim.get('max_calls', 10)} per "
                               f"{float(lim.get('per', 60.0)):g}s): next call possible in {wait:.0f}s")


class CloudflareBackend(_CacheBackend):
    name = provider = "cloudflare"
    KINDS = ("tags", "prefixes", "files", "hosts")

    def _zone(self, params: dict) -> tuple[str, str]:
        cf = _cdn(self.cfg).get("cloudflare") or {}
        want = str(params.get("zone", ""))
        zones = {z["name"]: z["id"] for z in cf.get("zones") or []}
        if want not in zones:
            raise BackendError(f"zone {want[:60]!r} is not a configured zone (exporters.cdn.cloudflare.zones: "
                               f"{', '.join(zones) or 'none'})")
        return want, zones[want]

    def _body(self, params: dict) -> dict:
        kinds = [k for k in self.KINDS if params.get(k)]
        if params.get("purge_everything"):
            if kinds:
                raise BackendError("purge_everything cannot be combined with tags/prefixes/files/hosts")
            if not (_cdn(self.cfg).get("invalidation", {}).get("cloudflare") or {}).get("allow_purge_everything"):
                raise BackendError("purge_everything is not allowed (exporters.cdn.invalidation.cloudflare."
                                   "allow_purge_everything)")
            return {"purge_everything": True}
        if len(kinds) != 1:
            raise BackendError("give exactly one of tags, prefixes, files, hosts (or purge_everything)")
        items = _list(params[kinds[0]])
        if not items or len(items) > 30:
            raise BackendError(f"{kinds[0]}: 1 to 30 items per purge, got {len(items)}")
        if kinds[0] == "tags":
            items = [_tag(t) for t in items]
        elif kinds[0] == "files":
            items = [check_url(u) for u in items]
        elif kinds[0] in ("prefixes", "hosts"):
            for it in items:
                if not re.fullmatch(r"[A-Za-z0-9.-]+(/[A-Za-z0-9/_.-]*)?", it) or ".." in it:
                    raise BackendError(f"{kinds[0]} item {it[:80]!r} is not a host[/path]")
        return {kinds[0]: items}

    def describe(self, operation, params):
        try:
            zone, zid = self._zone(params)
            return {"backend": "cloudflare", "operation": operation, "zone": zone,
                    "url": self._url(zid), **self._body(params)}
        except BackendError as exc:
            return {"backend": "cloudflare", "operation": operation, "refused": str(exc)}

    def _url(self, zid: str) -> str:
        cf = _cdn(self.cfg).get("cloudflare") or {}
        return str(cf.get("api_url", "https://api.cloudflare.com/client/v4")).rstrip("/") + f"/zones/{zid}/purge_cache"

    def _token(self) -> str:
        cf = _cdn(self.cfg).get("cloudflare") or {}
        if cf.get("token_file"):
            try:
                return Path(cf["token_file"]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise BackendError(f"cannot read exporters.cdn.cloudflare.token_file: {exc.strerror}") from None
        if not cf.get("token"):
            raise BackendError("no Cloudflare token (exporters.cdn.cloudflare.token or token_file)")
        return str(cf["token"])

    def run(self, operation, params, timeout):
        _zone, zid = self._zone(params)
        body = self._body(params)
        token = self._token()
        self._limit()
        url = self._url(zid)
        try:
            r = requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                              allow_redirects=False)
        except requests.Timeout:
            raise BackendTimeout(f"POST {url}: timed out after {timeout:g}s") from None
        except requests.RequestException as exc:
            raise BackendError(f"POST {url}: {type(exc).__name__}") from None
        try:
            doc = r.json()
        except ValueError:
            doc = {}
        ok = r.status_code == 200 and bool(doc.get("success"))
        errs = "; ".join(str(e.get("message", "")) for e in (doc.get("errors") or []) if isinstance(e, dict))
        return Result(ok, truncate(f"POST {url} {body} -> {r.status_code}" + (f" {errs}" if errs else "")),
                      {"status": r.status_code})


class VarnishBackend(_CacheBackend):
    name = provider = "varnish"

    def _targets(self, params: dict) -> list[tuple[str, str]]:
        inst = (_cdn(self.cfg).get("varnish") or {}).get("instances") or []
        urls = [(i["name"], i["url"]) for i in inst if i.get("url")]
        if params.get("instance"):
            urls = [(n, u) for n, u in urls if n == str(params["instance"])]
        if not urls:
            raise BackendError("no varnish instance with a url (exporters.cdn.varnish.instances[].url)"
                               + (f" named {str(params['instance'])[:40]!r}" if params.get("instance") else ""))
        return [(n, check_url(u)) for n, u in urls]

    def _request(self, operation: str, params: dict) -> tuple[str, dict]:
        if operation == "purge_tag":
            return "PURGE", {"xkey-purge": _tag(params.get("tag", ""))}
        if operation == "ban":
            if params.get("tag") and not params.get("prefix"):
                return "BAN", {"X-Ban-Tag": _tag(params["tag"])}
            if params.get("prefix") and not params.get("tag"):
                p = str(params["prefix"])
                if not _PREFIX.fullmatch(p) or ".." in p:
                    raise BackendError(f"prefix {p[:80]!r} is not a URL path (/, letters, digits, _ . -)")
                return "BAN", {"X-Ban-Prefix": re.escape(p)}
            raise BackendError("ban needs exactly one of tag, prefix")
        raise BackendError(f"unknown varnish operation {operation!r}")

    def describe(self, operation, params):
        try:
            method, headers = self._request(operation, params)
            return {"backend": "varnish", "operation": operation, "method": method, "headers": headers,
                    "url": [u for _, u in self._targets(params)]}
        except BackendError as exc:
            return {"backend": "varnish", "operation": operation, "refused": str(exc)}

    def run(self, operation, params, timeout):
        method, headers = self._request(operation, params)
        targets = self._targets(params)
        self._limit()
        ok, lines, statuses = True, [], []
        for name, url in targets:
            try:
                r = requests.request(method, url.rstrip("/") + "/", headers=headers, timeout=timeout,
                                     allow_redirects=False)
            except requests.Timeout:
                raise BackendTimeout(f"{method} {url}: timed out after {timeout:g}s") from None
            except requests.RequestException as exc:
                raise BackendError(f"{method} {url}: {type(exc).__name__}") from None
            statuses.append(r.status_code)
            ok = ok and r.status_code == 200
            reason = (r.reason or "").strip()
            lines.append(f"{name}: {method} {headers} -> {r.status_code} {reason[:200]}")
        return Result(ok, truncate("\n".join(lines)), {"status": statuses})


class RedisBackend(_CacheBackend):
    name = provider = "redis"

    def _plan(self, params: dict) -> tuple[str, list[dict]]:
        pattern = str(params.get("pattern", ""))
        if not _PATTERN.fullmatch(pattern):
            raise BackendError(f"pattern {pattern[:80]!r}: letters, digits, _ . : = + - / and the globs * ? only")
        inst = (_cdn(self.cfg).get("redis") or {}).get("instances") or []
        if params.get("instance"):
            inst = [i for i in inst if i["name"] == str(params["instance"])]
        if not inst:
            raise BackendError("no redis instance (exporters.cdn.redis.instances)"
                               + (f" named {str(params['instance'])[:40]!r}" if params.get("instance") else ""))
        for i in inst:
            prefixes = i.get("key_prefixes") or []
            if not any(pattern.startswith(p) and len(pattern) > len(p) for p in prefixes):
                raise BackendError(f"pattern {pattern[:80]!r} is not under a key prefix of {i['name']} "
                                   f"({', '.join(prefixes)})")
        return pattern, inst

    def describe(self, operation, params):
        try:
            pattern, inst = self._plan(params)
            return {"backend": "redis", "operation": operation, "pattern": pattern,
                    "instances": [i["name"] for i in inst], "method": "SCAN MATCH + UNLINK"}
        except BackendError as exc:
            return {"backend": "redis", "operation": operation, "refused": str(exc)}

    def run(self, operation, params, timeout):
        if operation != "delete_pattern":
            raise BackendError(f"unknown redis operation {operation!r}")
        pattern, inst = self._plan(params)
        lim = _cdn(self.cfg).get("invalidation", {}).get("redis") or {}
        count, max_keys = int(lim.get("scan_count", 500)), int(lim.get("max_keys", 100000))
        self._limit()
        deadline = time.monotonic() + timeout
        lines, total, complete = [], 0, True
        for i in inst:
            deleted, cursor = 0, b"0"
            try:
                with RedisConn(i["url"], timeout=max(0.1, min(timeout, 5.0))) as r:
                    while True:
                        if time.monotonic() > deadline:
                            raise BackendTimeout(f"{i['name']}: timed out after {timeout:g}s, {deleted} keys unlinked")
                        cursor, keys = r.command("SCAN", cursor, "MATCH", pattern, "COUNT", str(count))
                        keys = keys[: max(0, max_keys - deleted)]
                        if keys:
                            deleted += int(r.command("UNLINK", *keys))
                        if cursor in (b"0", "0"):
                            break
                        if deleted >= max_keys:
                            complete = False
                            break
            except RedisError as exc:
                raise BackendError(f"{i['name']}: {exc}") from None
            total += deleted
            lines.append(f"{i['name']}: unlinked {deleted} keys matching {pattern}"
                         + ("" if complete else f" (stopped at max_keys {max_keys})"))
        return Result(complete, truncate("\n".join(lines)), {"deleted": total})
