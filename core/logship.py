"""Ship the key=value log lines of a program to Loki's push API (docs/logs.md).

`LokiHandler` is a logging handler: `emit` formats the record (the same line as on stderr),
makes it safe (invalid UTF-8 / lone surrogates escaped, longer than `max_line_bytes` cut with a
` truncated_from=<n>B` marker) and puts it on a bounded queue without ever waiting; a full queue
drops the line and counts it. One background thread takes lines off the queue, batches them
(`batch_size` lines or `flush_interval` seconds) and POSTs them to `/loki/api/v1/push`; a failed
push is retried a few times with backoff, then the batch is dropped and counted. Drops are
reported on stderr (one line per stats interval, never per line) and in a `logship stats` line
shipped with the logs, which is also the component's heartbeat for the "no logs" alert.

Labels are few and bounded: those the program is started with (`component`, `service`), the
record's `level`, and `region` when the caller passes a short region name as `extra`; never
anything per request, user or ticket: the rest of the line stays in the line.

Fork-safe: a child (gunicorn worker) starts its own queue and thread on its first line.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.request

# no prometheus_client import at module level: importing it decides, once per process, whether
# metrics live in PROMETHEUS_MULTIPROC_DIR files; the receiver sets that variable after the CLI
# (which imports this module through stack.runtime) has loaded, so an early import would leave its
# gunicorn workers' request metrics in private memory, never exported

# set by the launcher for the programs it starts (stack/launcher.py)
ENV_URL = "OPSSTACK_LOKI_PUSH_URL"
ENV_LABELS = "OPSSTACK_LOG_LABELS"   # component=receiver;service=opsstack (or commas)

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_LABEL_NAMES = ("component", "service", "region", "level")
DROP_REASONS = ("queue_full", "push_failed")


def safe_line(line: str, max_bytes: int) -> tuple[str, bool]:
    """The line as valid UTF-8 text (lone surrogates from undecodable bytes escaped as \\udcXX)
    cut to max_bytes with a marker saying how long it was; (line, truncated)."""
    data = line.encode("utf-8", "backslashreplace")
    if len(data) <= max_bytes:
        return data.decode("utf-8"), False
    marker = f" ...truncated_from={len(data)}B"
    keep = max(0, max_bytes - len(marker))
    return data[:keep].decode("utf-8", "ignore") + marker, True


def parse_labels(text: str | None) -> dict[str, str]:
    """`k=v,k=v` from the environment; only the known label names with short plain values."""
    out = {}
    for part in re.split(r"[,;]", text or ""):
        k, _, v = part.partition("=")
        k, v = k.strip(), v.strip()
        if k in _LABEL_NAMES and k != "level" and _LABEL_VALUE.match(v):
            out[k] = v
    return out


class LokiHandler(logging.Handler):
    def __init__(self, push_url: str, labels: dict[str, str], *, queue_size: int = 10000,
                 batch_size: int = 500, flush_interval: float = 1.0, max_line_bytes: int = 65536,
                 timeout: float = 5.0, retries: int = 3, stats_interval: float = 60.0):
        super().__init__()
        self.url = push_url.rstrip("/") + ("" if push_url.rstrip("/").endswith("/loki/api/v1/push")
                                           else "/loki/api/v1/push")
        self.labels = {k: v for k, v in labels.items() if k in _LABEL_NAMES and _LABEL_VALUE.match(str(v))}
        self.queue_size, self.batch_size = queue_size, batch_size
        self.flush_interval, self.max_line_bytes = flush_interval, max_line_bytes
        self.timeout, self.retries, self.stats_interval = timeout, retries, stats_interval
        self.counts = {"shipped": 0, "truncated": 0, "pushes": 0, "push_errors": 0,
                       **{f"dropped_{r}": 0 for r in DROP_REASONS}}
        self._closing = threading.Event()
        self._busy = False
        self._start()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._start)

    # ------------------------------------------------------------------ producer side
    def _start(self) -> None:
        self._pid = os.getpid()
        self._q: queue.Queue = queue.Queue(self.queue_size)
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._last_stats = time.monotonic()
        self._reported = dict(self.counts)

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid():
            with self._thread_lock:
                if self._pid != os.getpid():
                    self._start()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="logship", daemon=True)
                    self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line, cut = safe_line(self.format(record), self.max_line_bytes)
            region = getattr(record, "region", None)
            region = region if isinstance(region, str) and _LABEL_VALUE.match(region) else None
            item = (time.time_ns(), record.levelname.lower(), region, line)
            self._ensure_thread()
            if cut:
                self.counts["truncated"] += 1
            self._q.put_nowait(item)
        except queue.Full:
            self.counts["dropped_queue_full"] += 1
        except Exception:  # a log call never fails because of the shipper
            self.counts["dropped_queue_full"] += 1

    # ------------------------------------------------------------------ shipper thread
    def _run(self) -> None:
        while True:
            batch = []
            deadline = time.monotonic() + self.flush_interval
            while len(batch) < self.batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self._q.get(timeout=left))
                except queue.Empty:
                    break
            if time.monotonic() - self._last_stats >= self.stats_interval:
                batch.append(self._stats_item())
            if batch:
                self._busy = True
                try:
                    self._ship(batch)
                finally:
                    self._busy = False
            if self._closing.is_set() and self._q.empty():
                return

    def _stats_item(self) -> tuple:
        """The periodic `logship stats` line (shipped with the logs: the component's heartbeat)
        and, when lines were dropped since the last one, the same on stderr."""
        self._last_stats = time.monotonic()
        c = dict(self.counts)
        new_drops = sum(c[f"dropped_{r}"] - self._reported[f"dropped_{r}"] for r in DROP_REASONS)
        self._reported = c
        text = (f"ts={time.strftime('%Y-%m-%dT%H:%M:%S')} level=INFO logger=opsstack.logship "
                f"logship stats shipped={c['shipped']} truncated={c['truncated']} "
                + " ".join(f"dropped_{r}={c[f'dropped_{r}']}" for r in DROP_REASONS))
        if new_drops:
            print(text.replace("level=INFO", "level=WARNING") + f" dropped_since_last={new_drops}",
                  file=sys.stderr, flush=True)
        return (time.time_ns(), "info", None, text)

    def _payload(self, batch: list[tuple]) -> bytes:
        streams: dict[tuple, list] = {}
        for ts, level, region, line in batch:
            streams.setdefault((level, region), []).append([str(ts), line])
        out = []
        for (level, region), values in streams.items():
            labels = {**self.labels, "level": level}
            if region:
                labels["region"] = region
            values.sort(key=lambda v: int(v[0]))
            out.append({"stream": labels, "values": values})
        return json.dumps({"streams": out}, ensure_ascii=False).encode("utf-8")

    def _ship(self, batch: list[tuple]) -> None:
        body = self._payload(batch)
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    r.read()
                self.counts["pushes"] += 1
                self.counts["shipped"] += len(batch)
                return
            except urllib.error.HTTPError as exc:
                self.counts["push_errors"] += 1
                if 400 <= exc.code < 500 and exc.code != 429:
                    break  # Loki refuses this batch (too old, too big...): retrying won't help
            except Exception:  # unreachable, timeout, reset: retry a few times
                self.counts["push_errors"] += 1
            if self._closing.is_set() or attempt == self.retries:
                break
            time.sleep(min(5.0, 0.5 * 2 ** attempt))
        self.counts["dropped_push_failed"] += len(batch)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is shipped (or timeout); True when it is empty."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._q.empty() and not self._busy:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._closing.set()
        t = self._thread
        if t is not None and self._pid == os.getpid():
            t.join(timeout=self.timeout + 1)
        super().close()


class LogShipCollector:
    """opsstack_logship_* of the handler this program ships with (absent when it does not ship);
    a prometheus_client collector (anything with collect() registers)."""

    def __init__(self, handler: LokiHandler | None = None):
        self.handler = handler

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        h = self.handler or active_handler()
        if h is None:
            return
        c = dict(h.counts)
        lines = CounterMetricFamily("opsstack_logship_lines", "log lines by what became of them",
                                    labels=["result"])
        lines.add_metric(["shipped"], c["shipped"])
        for r in DROP_REASONS:
            lines.add_metric([f"dropped_{r}"], c[f"dropped_{r}"])
        yield lines
        yield CounterMetricFamily("opsstack_logship_truncated_lines", "lines cut to logs.max_line_bytes",
                                  value=c["truncated"])
        yield CounterMetricFamily("opsstack_logship_push_errors", "failed pushes to Loki (retries included)",
                                  value=c["push_errors"])


_ACTIVE: LokiHandler | None = None


def active_handler() -> LokiHandler | None:
    return _ACTIVE


def install_from_env(formatter: logging.Formatter | None = None) -> LokiHandler | None:
    """Attach a LokiHandler to the root logger when the launcher asked for it (ENV_URL set)."""
    global _ACTIVE
    url = os.environ.get(ENV_URL)
    if not url or _ACTIVE is not None:
        return _ACTIVE
    opts = {}
    for key, conv in (("queue_size", int), ("batch_size", int), ("flush_interval", float),
                      ("max_line_bytes", int)):
        v = os.environ.get(f"OPSSTACK_LOGSHIP_{key.upper()}")
        if v:
            try:
                opts[key] = conv(v)
            except ValueError:
                pass
    h = LokiHandler(url, parse_labels(os.environ.get(ENV_LABELS)), **opts)
    if formatter is not None:
        h.setFormatter(formatter)
    logging.getLogger().addHandler(h)
    _ACTIVE = h
    return h
