"""A small threaded HTTP server for the demo platform (stdlib only).

Every connection is one request (HTTP/1.0, ``Connection: close``), so closing the
listening socket really stops a region from answering: no keep-alive connection survives.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("opsstack.demo.http")

MAX_BODY = 64 * 1024


class Request:
    def __init__(self, method: str, path: str, query: dict, headers, body: bytes):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def json(self) -> dict:
        """The JSON object body ({} when empty); ValueError when it is not an object."""
        if not self.body.strip():
            return {}
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data


class Response:
    def __init__(self, status: int = 200, body: bytes | str | dict | list = b"",
                 content_type: str = "application/json", headers: dict | None = None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, sort_keys=True).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


Handler = Callable[[Request], Response]


class _RequestHandler(BaseHTTPRequestHandler):
    server_version = "opsstack-demo/1"
    protocol_version = "HTTP/1.0"

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(Response(413 if length > MAX_BODY else 400, {"error": "bad Content-Length"}))
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = Request(self.command, parts.path, parse_qs(parts.query), self.headers, body)
        try:
            resp = self.server.app(req)  # type: ignore[attr-defined]
        except Exception as exc:  # a bug must answer 500, not kill the thread silently
            log.exception("event=handler_error path=%s", parts.path)
            resp = Response(500, {"error": f"{type(exc).__name__}: {exc}"})
        self._send(resp)

    def _send(self, resp: Response) -> None:
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            self.send_header("Connection", "close")
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = _dispatch

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("event=request " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Listener:
    """One listening socket served by a thread; ``open()``/``close()`` any number of times."""

    def __init__(self, name: str, host: str, port: int, app: Handler):
        self.name = name
        self.host = host
        self.port = port
        self.app = app
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def open(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            srv = _Server((self.host, self.port), _RequestHandler)
            srv.app = self.app  # type: ignore[attr-defined]
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"listener-{self.name}", daemon=True)
            t.start()
            self._server, self._thread = srv, t
            log.info("event=listener_open name=%s addr=%s:%d", self.name, self.host, self.port)

    def close(self) -> None:
        with self._lock:
            srv, self._server = self._server, None
            if srv is None:
                return
            srv.shutdown()
            srv.server_close()
            log.info("event=listener_closed name=%s addr=%s:%d", self.name, self.host, self.port)
