"""A minimal Redis client (RESP2 over TCP, stdlib only): what the CDN exporter (INFO) and the
cache invalidation backend (SCAN + UNLINK) need, without a Redis library dependency.

    with RedisConn("redis://:pw@127.0.0.1:6379/3", timeout=2) as r:
        info = parse_info(r.command("INFO", "all"))
"""
from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit


class RedisError(RuntimeError):
    """Connection trouble, a protocol error, or an error reply (-ERR ...)."""


class RedisConn:
    def __init__(self, url: str, timeout: float = 2.0):
        u = urlsplit(url)
        if u.scheme != "redis":
            raise RedisError(f"not a redis:// URL: {u.scheme}://...")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.db = int(u.path.strip("/") or 0)
        self.username = unquote(u.username) if u.username else None
        self.password = unquote(u.password) if u.password else None
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> "RedisConn":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise RedisError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        self._buf = b""
        if self.password is not None:
            args = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            self.command(*args)
        if self.db:
            self.command("SELECT", str(self.db))

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def command(self, *args):
        if self._sock is None:
            self.connect()
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        try:
            self._sock.sendall(b"".join(parts))
            return self._reply()
        except (OSError, socket.timeout) as exc:
            self.close()
            raise RedisError(f"{self.host}:{self.port}: {exc}") from None

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise RedisError("connection closed by the server")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            chunk = self._sock.recv(max(65536, n + 2 - len(self._buf)))
            if not chunk:
                raise RedisError("connection closed by the server")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:40]!r}")


def parse_info(raw) -> dict[str, str]:
    """INFO text -> {field: value} (sections flattened; keyspace lines kept as their text)."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        out[k.strip()] = v.strip()
    return out
