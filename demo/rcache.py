"""The demo services' shared cache in the stack's own redis-server (demo/edge.py runs it).

Keys are ``cache:<group>:<service>:<region>:<path>``: the prefix exporters.cdn.redis key_prefixes
names (the invalidation backend may delete them), then the page's first tag (``events`` for
the event pages, ``gates`` for gate statuses), so the cdn-cache-miss-storm playbook's
``cache:<tag>:*`` deletes a tag's pages; each key is also listed in the set ``cache:tag:<tag>``
of every tag it carries (edge.purge_tags deletes by any tag, ``event:7`` too). One connection per thread; when
Redis does not answer, the cache is skipped for a few seconds (a lookup is then a miss, the
request is still served) and a log line says so.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from core.resp import RedisConn, RedisError

log = logging.getLogger("opsstack.demo.rcache")

KEY_PREFIX = "cache:"  # = demo.edge.KEY_PREFIX (exporters.cdn.redis key_prefixes)
RETRY_AFTER = 5.0
TIMEOUT = 0.5


def tag_set(tag: str) -> str:
    return f"{KEY_PREFIX}tag:{tag}"


class RedisCache:
    def __init__(self, url: str, service: str):
        self.url = url
        self.service = service
        self._local = threading.local()
        self._down_until = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_views(cls, demo, stack, service: str) -> "RedisCache | None":
        """The cache of ``service`` when the edge runs (demo.edge.ports.redis set by `opsstack up`)."""
        port = (demo.edge.ports or {}).get("redis") if demo.edge.enabled else None
        return cls(f"redis://{stack.host}:{int(port)}/0", service) if port else None

    def key(self, group: str, region: str, path: str) -> str:
        return f"{KEY_PREFIX}{group}:{self.service}:{region}:{path[:200]}"

    def _conn(self) -> RedisConn | None:
        if time.monotonic() < self._down_until:
            return None
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = RedisConn(self.url, timeout=TIMEOUT)
        return c

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            if time.monotonic() >= self._down_until:
                log.warning("event=redis_cache_unavailable url=%s error=%r retry_in=%.0fs", self.url, str(exc)[:200],
                            RETRY_AFTER)
            self._down_until = time.monotonic() + RETRY_AFTER
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()

    def get(self, group: str, region: str, path: str) -> dict | None:
        c = self._conn()
        if c is None:
            return None
        try:
            raw = c.command("GET", self.key(group, region, path))
        except RedisError as exc:
            self._failed(exc)
            return None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def put(self, group: str, region: str, path: str, data: dict, tags=(), ttl: float = 600) -> None:
        c = self._conn()
        if c is None:
            return
        k = self.key(group, region, path)
        try:
            c.command("SET", k, json.dumps(data, separators=(",", ":")), "PX", str(max(1, int(ttl * 1000))))
            for t in tags:
                c.command("SADD", tag_set(t), k)
        except RedisError as exc:
            self._failed(exc)

    def get_or_fill(self, group: str, region: str, path: str, fill, ttl: float, tags=()) -> dict:
        data = self.get(group, region, path)
        if data is None:
            data = fill()
            self.put(group, region, path, data, tags, ttl)
        return data
