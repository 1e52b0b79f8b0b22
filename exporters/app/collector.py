"""The app exporter's collector: probe every service x region endpoint at scrape time.

Every probe runs in parallel (a bounded thread pool) with its own timeout and the
scrape's deadline, so a hanging target costs at most ``probe_timeout`` and never delays
the scrape beyond it. Metrics (labels service, region):

- ``opsstack_probe_up``: 1 when the last probe got a 2xx answer;
- ``opsstack_probe_http_status_code``: status of the last probe, 0 without an answer;
- ``opsstack_probe_duration_seconds{phase}``: phases of the last probe
  (dns|connect|tls|first_byte|total; a phase the probe did not reach is absent);
- ``opsstack_probe_latency_seconds``: histogram of the total time of every probe that got
  an answer (since the exporter started);
- ``opsstack_probe_tls_cert_expiry_timestamp_seconds``: notAfter of the https certificate;
- the exporter self-metrics (core.exporter), source="probes".
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from core.exporter import ExporterCollector, Scrape
from exporters.app.probe import PHASES, ProbeResult, probe, tls_context

log = logging.getLogger("opsstack.exporter.app")

GRACE = 0.25  # seconds the collector waits past probe_timeout for results to come back


@dataclass(frozen=True)
class Target:
    service: str
    region: str
    url: str


def targets_from_config(platform) -> list[Target]:
    """Every service x region endpoint of the ``platform`` section (its view, core.config.view)."""
    out = []
    for s in platform.services:
        for region, base in sorted(s.endpoints.items()):
            out.append(Target(s.name, region, base.rstrip("/") + s.health_path))
    return out


class _Histogram:
    def __init__(self, buckets: list[float]):
        self.buckets = list(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.sum += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for b, c in zip(self.buckets + [float("inf")], self.counts):
            acc += c
            out.append(("+Inf" if b == float("inf") else _fmt(b), acc))
        return out


def _fmt(b: float) -> str:
    return repr(float(b))


class AppProbeCollector(ExporterCollector):
    exporter = "app"

    def __init__(self, settings, targets: list[Target]):
        """``settings``: the view of exporters.app (core.config.view); ``targets``: what to probe."""
        self.targets = list(targets)
        self.timeout = float(settings.probe_timeout)
        self.buckets = [float(b) for b in settings.latency_buckets]
        self.tls: ssl.SSLContext | None = None
        if any(t.url.startswith("https://") for t in self.targets):
            self.tls = tls_context(settings.tls_ca_file, settings.tls_insecure_skip_verify)
        # threads start lazily, so a large pool costs nothing until probes hang: then the
        # spare workers keep a concurrent scrape from queueing behind the hanging probes
        self._pool = ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="probe")
        self._lock = threading.Lock()
        self._hist = {(t.service, t.region): _Histogram(self.buckets) for t in self.targets}

    def probe_all(self) -> dict[Target, ProbeResult]:
        """Probe every target in parallel; results within probe_timeout (+ a small grace)."""
        deadline = time.perf_counter() + self.timeout
        futures = {self._pool.submit(probe, t.url, self.timeout, deadline=deadline, tls=self.tls): t
                   for t in self.targets}
        done, _ = wait(futures, timeout=self.timeout + GRACE)
        results = {}
        for fut, t in futures.items():
            if fut in done and fut.exception() is None:
                results[t] = fut.result()
            else:
                fut.cancel()
                results[t] = ProbeResult(error="deadline" if fut not in done else repr(fut.exception()))
        return results

    def collect_sources(self, scrape: Scrape):
        with scrape.source("probes"):
            results = self.probe_all()
            up = GaugeMetricFamily("opsstack_probe_up", "1 if the last probe of the endpoint got a 2xx answer.",
                                   labels=["service", "region"])
            code = GaugeMetricFamily("opsstack_probe_http_status_code", "HTTP status of the last probe "
                                     "(0: no answer).", labels=["service", "region"])
            dur = GaugeMetricFamily("opsstack_probe_duration_seconds", "Duration of each phase of the last "
                                    "probe (dns, connect, tls, first_byte, total).",
                                    labels=["service", "region", "phase"])
            cert = GaugeMetricFamily("opsstack_probe_tls_cert_expiry_timestamp_seconds",
                                     "When the endpoint's TLS certificate expires (unix time).",
                                     labels=["service", "region"])
            hist = HistogramMetricFamily("opsstack_probe_latency_seconds", "Total time of the probes that got "
                                         "an answer.", labels=["service", "region"])
            with self._lock:
                for t, r in results.items():
                    if r.responded:
                        self._hist[(t.service, t.region)].observe(r.phases["total"])
                for t, r in sorted(results.items(), key=lambda kv: (kv[0].service, kv[0].region)):
                    lv = [t.service, t.region]
                    up.add_metric(lv, 1.0 if r.up else 0.0)
                    code.add_metric(lv, float(r.status))
                    for phase in PHASES:
                        if phase in r.phases:
                            dur.add_metric(lv + [phase], r.phases[phase])
                    if r.cert_not_after is not None:
                        cert.add_metric(lv, r.cert_not_after)
                    h = self._hist[(t.service, t.region)]
                    hist.add_metric(lv, h.cumulative(), h.sum)
                    if not r.up:
                        log.info("event=probe_failed service=%s region=%s url=%s status=%d error=%r",
                                 t.service, t.region, t.url, r.status, r.error)
            yield from (up, code, dur, cert, hist)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
