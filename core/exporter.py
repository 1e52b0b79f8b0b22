"""What every opsstack exporter shares: self-metrics and serving /metrics.

Every exporter exports (docs/development.md):

- ``opsstack_exporter_up{exporter,source}``: 1 when the source answered during this scrape,
  0 when it failed (the error is logged, the scrape still answers 200);
- ``opsstack_exporter_scrape_duration_seconds{exporter}``: how long the collection took.

Usage in a custom collector (reads its source at scrape time)::

    from core.exporter import ExporterCollector, serve

    class DbCollector(ExporterCollector):
        exporter = "db"

        def collect_sources(self, scrape):
            with scrape.source("postgres"):          # an exception -> up 0 + one log line
                rows = read_stats()
                g = GaugeMetricFamily("opsstack_db_x", "...", labels=["table"])
                ...
                yield g
            # or, when you decide yourself: scrape.set_up("postgres", ok)

    serve(DbCollector(cfg), host, port)            # blocks; /metrics on host:port

Metrics yielded inside a failing ``with scrape.source(...)`` block before the error are
kept; nothing after the error in that block runs. The self-metrics always come last.
Register one ExporterCollector per registry (each yields the self-metric families; two in
one registry would repeat them).
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("opsstack.exporter")

UP = "opsstack_exporter_up"
SCRAPE_DURATION = "opsstack_exporter_scrape_duration_seconds"


class Scrape:
    """One collection pass: the state of each source and the elapsed time."""

    def __init__(self, exporter: str):
        self.exporter = exporter
        self.started = time.perf_counter()
        self.sources: dict[str, bool] = {}

    def set_up(self, source: str, ok: bool, error: object | None = None) -> None:
        """Record a source as up or down (logs one line when it is down)."""
        self.sources[source] = bool(ok) and self.sources.get(source, True)
        if not ok:
            log.warning("event=source_failed exporter=%s source=%s error=%r", self.exporter, source,
                        str(error) if error is not None else "unknown")

    @contextlib.contextmanager
    def source(self, name: str) -> Iterator[None]:
        """Run a block that reads ``name``; any exception marks it down and is swallowed."""
        try:
            yield
        except Exception as exc:  # a source failure must never fail the scrape
            self.set_up(name, False, f"{type(exc).__name__}: {exc}")
        else:
            self.set_up(name, True)

    def metrics(self) -> list:
        """The self-metric families for this scrape (call last)."""
        up = GaugeMetricFamily(UP, "1 if the exporter could read the source during this scrape, else 0.",
                               labels=["exporter", "source"])
        for src, ok in sorted(self.sources.items()):
            up.add_metric([self.exporter, src], 1.0 if ok else 0.0)
        dur = GaugeMetricFamily(SCRAPE_DURATION, "Time this exporter spent collecting the scrape.",
                                labels=["exporter"])
        dur.add_metric([self.exporter], time.perf_counter() - self.started)
        return [up, dur]


class ExporterCollector(Collector):
    """Base class of a custom collector with the self-metrics appended.

    Subclasses set ``exporter`` and implement ``collect_sources(scrape)`` (a generator of
    metric families). ``describe()`` returns nothing so registering never reads a source.
    """

    exporter: str = "unknown"

    def collect_sources(self, scrape: Scrape) -> Iterable:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self):
        return []

    def collect(self):
        scrape = Scrape(self.exporter)
        out = []
        # A generator that raises outside any `source()` block: keep what it yielded,
        # mark the exporter's own source down instead of failing the scrape.
        try:
            for m in self.collect_sources(scrape):
                out.append(m)
        except Exception as exc:
            scrape.set_up(self.exporter, False, f"{type(exc).__name__}: {exc}")
        out.extend(scrape.metrics())
        return out


def registry_for(*collectors: Collector) -> CollectorRegistry:
    """A fresh registry (never the global one) holding the given collectors."""
    reg = CollectorRegistry(auto_describe=False)
    for c in collectors:
        reg.register(c)
    return reg


def start(registry: CollectorRegistry, host: str, port: int):
    """Serve ``registry`` on http://host:port/metrics in a thread; returns (server, thread)."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("event=listening addr=%s:%d path=/metrics", host, port)
    return server, thread


def serve(collector_or_registry, host: str, port: int, stop: threading.Event | None = None) -> None:
    """Serve /metrics until SIGTERM/SIGINT (or ``stop`` is set). Blocks."""
    reg = collector_or_registry if isinstance(collector_or_registry, CollectorRegistry) \
        else registry_for(collector_or_registry)
    server, _ = start(reg, host, port)
    try:
        wait_until_stopped(stop)
    finally:
        server.shutdown()
        server.server_close()


def wait_until_stopped(stop: threading.Event | None = None) -> None:
    """Block until SIGTERM/SIGINT arrives (when called on the main thread) or ``stop`` is set."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    stop.wait()
