"""The app exporter's collector: probe every service x region endpoint at scrape time.

Every probe of a scrape runs on one asyncio event loop (a thread of its own), all under one
deadline: scrape start + ``probe_timeout``. A hanging target costs a socket until that
deadline, never a thread, and never delays the scrape beyond it; at most ``max_concurrency``
probes hold a socket at once (shared by concurrent scrapes), the others wait for a slot
within the same deadline. Metrics (labels service, region):

- ``opsstack_probe_up``: 1 when the last probe got a 2xx answer;
- ``opsstack_probe_http_status_code``: status of the last probe, 0 without an answer;
- ``opsstack_probe_duration_seconds{phase}``: phases of the last probe
  (dns|connect|tls|first_byte|total; a phase the probe did not reach is absent);
- ``opsstack_probe_latency_seconds``: histogram of the total time of every probe that got
  an answer (since the exporter started);
- ``opsstack_probe_tls_cert_expiry_timestamp_seconds``: notAfter of the https certificate;
- ``opsstack_probe_timed_out``: 1 when the last probe ran into the deadline (no answer, or no
  free slot, in time);
- the exporter self-metrics (core.exporter), source="probes".
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from core.exporter import ExporterCollector, Scrape
from exporters.app.probe import PHASES, ProbeResult, probe_async, tls_context

log = logging.getLogger("opsstack.exporter.app")

GRACE = 0.5  # seconds the scrape waits past probe_timeout for the loop to hand results back
FD_RESERVE = 64  # descriptors kept for the listener, scrape connections, logs, the loop itself


def plan_concurrency(wanted: int, targets: int, soft_limit: int) -> tuple[int, str | None]:
    """Probe slots that fit the open-file limit ``soft_limit``, and an error text when it
    cuts ``max_concurrency`` (``wanted``) below what the ``targets`` could use at once."""
    fits = soft_limit - FD_RESERVE
    slots = max(min(wanted, fits), 1)
    if min(wanted, max(targets, 1)) <= fits:  # one scrape's probes fit (concurrent scrapes share slots)
        return slots, None
    return slots, (f"open-file limit {soft_limit} leaves {slots} probe slots for {min(wanted, targets)} wanted "
                   f"(exporters.app.max_concurrency={wanted}, {targets} targets, {FD_RESERVE} kept): "
                   f"raise the hard limit (ulimit -Hn, systemd LimitNOFILE=); until then probes beyond the "
                   f"slots wait for one and may miss the deadline")


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

    def __init__(self, settings, targets: list[Target], slots: int | None = None):
        """``settings``: the view of exporters.app (core.config.view); ``targets``: what to probe;
        ``slots``: probes holding a socket at once (default max_concurrency; see plan_concurrency)."""
        self.targets = list(targets)
        self.timeout = float(settings.probe_timeout)
        self.buckets = [float(b) for b in settings.latency_buckets]
        self.slots = int(slots or settings.max_concurrency)
        self.tls: ssl.SSLContext | None = None
        if any(t.url.startswith("https://") for t in self.targets):
            self.tls = tls_context(settings.tls_ca_file, settings.tls_insecure_skip_verify)
        self._lock = threading.Lock()
        self._hist = {(t.service, t.region): _Histogram(self.buckets) for t in self.targets}
        self._loop = asyncio.new_event_loop()
        self._sem = asyncio.Semaphore(self.slots)  # bound to the loop at first use, in the loop
        self._thread = threading.Thread(target=self._loop.run_forever, name="probe-loop", daemon=True)
        self._thread.start()

    def probe_all(self) -> dict[Target, ProbeResult]:
        """Probe every target at once under one deadline (now + probe_timeout)."""
        out: dict[Target, ProbeResult] = {}
        fut = asyncio.run_coroutine_threadsafe(self._probe_all(out), self._loop)
        try:
            fut.result(timeout=self.timeout + GRACE)
        except FutureTimeout:  # the loop is behind (an overloaded machine): keep what is in
            fut.cancel()
        results = {}
        for t in self.targets:
            r = out.get(t)
            results[t] = r if r is not None else ProbeResult(
                error="timeout: no result from the probe loop by the deadline", timed_out=True,
                phases={"total": self.timeout})
        return results

    async def _probe_all(self, out: dict) -> None:
        deadline = self._loop.time() + self.timeout

        async def one(t: Target) -> None:
            out[t] = await probe_async(t.url, deadline, tls=self.tls, slots=self._sem)

        await asyncio.gather(*(one(t) for t in self.targets))

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
            timed_out = GaugeMetricFamily("opsstack_probe_timed_out", "1 if the last probe of the endpoint ran "
                                          "into the deadline (probe_timeout) before an answer.",
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
                    timed_out.add_metric(lv, 1.0 if r.timed_out else 0.0)
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
            yield from (up, code, timed_out, dur, cert, hist)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
