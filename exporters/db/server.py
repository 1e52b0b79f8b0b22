"""`opsstack exporter db`: serve the PostgreSQL collector on /metrics.

Listens on stack.host:stack.ports.exporter_db (a resolved config, so the port is a number).
`serve(cfg)` is the entry point: it builds the config views the exporter needs
(exporters.db, database, stack) once and hands them down. `python -m exporters.db.server -c CONFIG [--port N]` does the
same without the CLI (the bench uses it).

/metrics renders the collector's samples straight to the text format
(`DbCollector.scrape_bytes`: the background part is kept as bytes between refreshes), gzip-compressed when the scraper accepts it; the collector is
still a prometheus_client collector (`collect()`), for any registry that wants it.
"""
from __future__ import annotations

import argparse
import gzip
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.config import load, view
from core.exporter import wait_until_stopped
from core.logs import setup_logging
from exporters.db.advisor import AdvisorCache
from exporters.db.collector import DbCollector

log = logging.getLogger("opsstack.exporter.db")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def build(dbc, database, with_advisor: bool | None = None):
    """(collector, advisor cache or None) for the views of the exporters.db and database
    sections; ``with_advisor`` None: as exporters.db.advisor.enabled says."""
    advisor = None
    if dbc.advisor.enabled if with_advisor is None else with_advisor:
        advisor = AdvisorCache(dbc, database)
    return DbCollector(dbc, database, advisor=advisor), advisor


def make_server(collector: DbCollector, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body = collector.scrape_bytes()
                ctype = CONTENT_TYPE
            elif path == "/":
                body = b"<html><body><a href='/metrics'>/metrics</a> (opsstack exporter db)</body></html>\n"
                ctype = "text/html"
            else:
                self.send_error(404)
                return
            gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
            if gz:
                body = gzip.compress(body, compresslevel=1)
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            if gz:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # access logs off; errors still go to log.warning
            pass

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    return srv


def serve(cfg: dict, stop: threading.Event | None = None, port: int | None = None,
          with_advisor: bool | None = None) -> None:
    """Serve /metrics until SIGTERM/SIGINT (or `stop`). Blocks."""
    stack = view(cfg, "stack")
    host = stack.host
    port = port or stack.ports.exporter_db
    if port == "auto":
        raise SystemExit("exporters.db: stack.ports.exporter_db is 'auto'; run through `opsstack up` "
                         "or set a port")
    collector, advisor = build(view(cfg, "exporters.db"), view(cfg, "database"), with_advisor)
    srv = make_server(collector, host, int(port))
    th = threading.Thread(target=srv.serve_forever, name="db-exporter-http", daemon=True)
    th.start()
    log.info("event=listening exporter=db addr=%s:%d path=/metrics targets=%d", host, int(port),
             len(collector.targets))
    if advisor is not None:
        advisor.start()
    try:
        wait_until_stopped(stop)
    finally:
        srv.shutdown()
        srv.server_close()
        if advisor is not None:
            advisor.stop()
        collector.close()


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin wrapper
    p = argparse.ArgumentParser(prog="python -m exporters.db.server")
    p.add_argument("-c", "--config")
    p.add_argument("--port", type=int)
    p.add_argument("--no-advisor", action="store_true")
    a = p.parse_args(argv)
    setup_logging("INFO")
    serve(load(a.config), port=a.port, with_advisor=False if a.no_advisor else None)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
