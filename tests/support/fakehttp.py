"""The one fake HTTP server of the tests and benches.

A threaded server on a free loopback port (or a Unix socket; optionally TLS) that records every
request and answers from a route table::

    with FakeHTTP({"GET /metrics": (200, "up 1\\n"),
                   "POST /api/chat.postMessage": post_message,      # fn(req) -> reply
                   "* /rest/api/3/issue/*": issue}) as srv:           # any method, a glob
        ...  srv.url, srv.requests, srv.fail("POST", "/x", 503), srv.hang(path="/slow") ...

Routes: keys are ``"METHOD PATTERN"`` or ``"PATTERN"`` (any method); PATTERN is an fnmatch glob
on the path without the query string (``*`` also crosses ``/``). The first matching route wins
(insertion order); no match answers ``default`` (404). A route's value is a handler
``fn(req: Request) -> reply`` or a canned reply.

Replies: a `Response`, ``(status, body)``, ``(status, body, headers)``, a bare status (int) or a
bare body. A body that is a dict/list is sent as JSON, a str as text/plain, bytes as they are,
None as nothing. Content-Length is always set.

Order of work for one request: record it, run ``guard(req)`` (may answer on its own: auth checks),
apply the faults set on demand (`delay`, `hang` until `release`, then `fail` or `drop`), run the
route (one at a time when ``serial=True``). A handler that raises answers 500 and its traceback
is kept in ``errors``.
"""
from __future__ import annotations

import fnmatch
import json
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str                       # without the query string
    query: dict[str, str]           # first value of each parameter
    headers: HTTPMessage            # .get() is case-insensitive
    body: bytes
    target: str                     # the raw request target (path and query)
    query_all: dict[str, list[str]] = field(default_factory=dict)
    at: float = 0.0                 # time.monotonic() on arrival

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> Any:
        """The body parsed as JSON (None when empty); raises ValueError when it is not JSON."""
        return json.loads(self.body) if self.body else None

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        has_type = any(k.lower() == "content-type" for k in headers)
        if self.body is None:
            data = b""
        elif isinstance(self.body, (bytes, bytearray)):
            data = bytes(self.body)
        elif isinstance(self.body, str):
            data = self.body.encode()
            if not has_type:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            data = json.dumps(self.body).encode()
            if not has_type:
                headers["Content-Type"] = "application/json"
        return data, headers


Reply = Any  # Response | (status, body) | (status, body, headers) | int | body
Handler = Callable[[Request], Reply]


def as_response(reply: Reply) -> Response:
    if isinstance(reply, Response):
        return reply
    if isinstance(reply, int) and not isinstance(reply, bool):
        return Response(reply)
    if isinstance(reply, tuple):
        return Response(*reply)
    return Response(200, reply)


def _split_key(key: str) -> tuple[str, str]:
    head, _, rest = key.strip().partition(" ")
    if rest and (head == "*" or head.upper() in METHODS):
        return head.upper(), rest.strip()
    return "*", key.strip()


def _matches(method: str, pattern: str, req: Request) -> bool:
    return method in ("*", req.method) and fnmatch.fnmatchcase(req.path, pattern)


@dataclass
class _Fault:
    kind: str                       # delay | hang | fail | drop
    method: str
    pattern: str
    times: int | None               # None: every matching request
    seconds: float = 0.0
    reply: Response | None = None
    apply: bool = False
    released: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args):
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _any(self):
        u = urlsplit(self.path)
        qs = parse_qs(u.query, keep_blank_values=True)
        req = Request(self.command, u.path, {k: v[0] for k, v in qs.items()}, self.headers, self._read_body(),
                      self.path, qs, time.monotonic())
        reply = self.server.fake._answer(req)
        if reply is None:  # drop: close without an answer
            self.close_connection = True
            return
        data, headers = reply.encode()
        self.send_response(reply.status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _any


class _ServerMixin:
    daemon_threads = True
    fake: "FakeHTTP"
    tls: ssl.SSLContext | None = None

    def finish_request(self, request, client_address):
        sock = request
        if self.tls is not None:  # the handshake in the request's thread, not the accepting one
            sock = self.tls.wrap_socket(request, server_side=True)
        self.fake._open.add(sock)
        try:
            self.RequestHandlerClass(sock, client_address, self)
        finally:
            self.fake._open.discard(sock)
            if sock is not request:
                sock.close()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError, ValueError)):
            return  # a client that went away (it gave up on a hang, it closed mid-request)
        self.fake.errors.append(traceback.format_exc())


class _TCPServer(_ServerMixin, ThreadingHTTPServer):
    allow_reuse_address = True


class _UnixServer(_ServerMixin, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("local", 0)


def not_found(req: Request) -> Reply:
    return 404, {"error": f"no route for {req.method} {req.path}"}


class FakeHTTP:
    """A configurable fake HTTP server; see the module docstring."""

    def __init__(self, routes: dict[str, Handler | Reply] | None = None, *, default: Handler | Reply = not_found,
                 guard: Callable[[Request], Reply | None] | None = None, serial: bool = False,
                 host: str = "127.0.0.1", port: int = 0, unix_path: str | Path | None = None,
                 tls: tuple[str | Path, str | Path] | None = None, protocol: str = "HTTP/1.1",
                 backlog: int = 64, record: bool = True):
        self.routes: dict[str, Handler | Reply] = dict(routes or {})
        self.default = default
        self.guard = guard
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.record = record
        self.host, self.port = host, port
        self.unix_path = str(unix_path) if unix_path else None
        self.tls = tls
        self.protocol = protocol
        self.backlog = backlog
        self._serial = threading.Lock() if serial else None
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._hangs: list[_Fault] = []  # every hang set, also those used up: release() frees their requests
        self._open: set = set()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "FakeHTTP":
        handler = type("Handler", (_Handler,), {"protocol_version": self.protocol})
        if self.unix_path:
            cls = type("Server", (_UnixServer,), {"request_queue_size": self.backlog})
            self._server = cls(self.unix_path, handler)
        else:
            cls = type("Server", (_TCPServer,), {"request_queue_size": self.backlog})
            self._server = cls((self.host, self.port), handler)
            self.port = self._server.server_address[1]
        self._server.fake = self
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._server.tls = ctx
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"fakehttp-{self.port or 'unix'}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Start, then block this thread (a server in a process of its own)."""
        self.start()
        assert self._thread is not None
        self._thread.join()

    def stop(self) -> None:
        if self._server is None:
            return
        self.release()
        self._server.shutdown()
        self._server.server_close()
        for sock in list(self._open):  # idle keep-alive connections end too
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server = None

    close = stop

    def __enter__(self) -> "FakeHTTP":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHTTP not started")
        if self.unix_path:
            return f"unix://{self.unix_path}"
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """host:port, as a Prometheus scrape target."""
        return f"{self.host}:{self.port}"

    # ---------------------------------------------------------------- routes
    def add_route(self, key: str, reply: Handler | Reply) -> None:
        """Add (or replace) a route: ``"METHOD PATTERN"`` or ``"PATTERN"`` -> handler or canned reply."""
        self.routes[key] = reply

    # ---------------------------------------------------------------- recorded requests
    def find(self, method: str = "*", path: str = "*") -> list[Request]:
        return [r for r in list(self.requests) if _matches(method.upper(), path, r)]

    def wait_for(self, count: int = 1, method: str = "*", path: str = "*", timeout: float = 30) -> list[Request]:
        """Wait until at least `count` matching requests arrived; return them (TimeoutError if not)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.find(method, path)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {count} {method} {path} requests after {timeout:.0f}s")
            time.sleep(0.02)

    def clear(self) -> None:
        """Forget the recorded requests and errors (not the routes or faults)."""
        self.requests.clear()
        self.errors.clear()

    # ---------------------------------------------------------------- faults on demand
    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)
            if fault.kind == "hang":
                self._hangs.append(fault)

    def fail(self, method: str = "*", path: str = "*", status: int = 500, body: Any = None,
             headers: dict | None = None, times: int | None = 1, apply: bool = False) -> None:
        """Answer the next `times` matching requests (None: all) with `status`. apply=True runs the
        route first: the change is made but its answer is lost (a retry must not apply it twice)."""
        self._add(_Fault("fail", method.upper(), path, times, reply=Response(status, body, headers or {}),
                         apply=apply))

    def drop(self, method: str = "*", path: str = "*", times: int | None = 1, apply: bool = False) -> None:
        """Close the connection of the next `times` matching requests without an answer."""
        self._add(_Fault("drop", method.upper(), path, times, apply=apply))

    def delay(self, seconds: float, method: str = "*", path: str = "*", times: int | None = None) -> None:
        """Wait `seconds` before answering matching requests."""
        self._add(_Fault("delay", method.upper(), path, times, seconds=seconds))

    def hang(self, method: str = "*", path: str = "*", times: int | None = None,
             timeout: float | None = None) -> None:
        """Hold matching requests until `release()` (or `stop()`, or `timeout`), then answer them."""
        self._add(_Fault("hang", method.upper(), path, times, seconds=timeout or 0.0))

    def release(self) -> None:
        """Let every held request go on, and hang no more."""
        with self._lock:
            for f in self._hangs:
                f.released.set()
            self._hangs.clear()
            self._faults = [f for f in self._faults if f.kind != "hang"]

    def clear_faults(self) -> None:
        self.release()
        with self._lock:
            self._faults.clear()

    def _take(self, req: Request) -> tuple[list[_Fault], _Fault | None]:
        """The timing faults and the first outcome fault for this request, each use counted."""
        timing, outcome = [], None
        with self._lock:
            for f in list(self._faults):
                if not _matches(f.method, f.pattern, req):
                    continue
                if f.kind in ("fail", "drop"):
                    if outcome is not None:
                        continue
                    outcome = f
                else:
                    timing.append(f)
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        self._faults.remove(f)
        return timing, outcome

    # ---------------------------------------------------------------- answering
    def _answer(self, req: Request) -> Response | None:
        if self.record:
            self.requests.append(req)
        try:
            if self.guard is not None:
                early = self.guard(req)
                if early is not None:
                    return as_response(early)
            timing, outcome = self._take(req)
            for f in timing:
                if f.kind == "delay":
                    time.sleep(f.seconds)
                else:
                    f.released.wait(f.seconds or None)
            if outcome is None:
                return self._route(req)
            if outcome.apply:
                self._route(req)
            return outcome.reply if outcome.kind == "fail" else None
        except Exception:
            self.errors.append(traceback.format_exc())
            return Response(500, {"error": "fake handler raised", "traceback": self.errors[-1]})

    def _route(self, req: Request) -> Response:
        target = self.default
        for key, value in list(self.routes.items()):
            method, pattern = _split_key(key)
            if _matches(method, pattern, req):
                target = value
                break
        if not callable(target):
            return as_response(target)
        if self._serial is None:
            return as_response(target(req))
        with self._serial:
            return as_response(target(req))
