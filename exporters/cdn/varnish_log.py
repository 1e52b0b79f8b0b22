"""Varnish client requests per content class, from a long-lived `varnishncsa` per instance.

varnishstat has no per-class counters, so the exporter (when it serves, CdnCollector.start) runs
`varnishncsa -n <workdir> -F '%{X-Cache-Class}o %{Varnish:handling}x'` in the background and
counts each logged request by class (the X-Cache-Class header the demo's VCL sets: static, api,
dynamic; anything else is the default class) and handling (hit, miss, pass, pipe, synth; else
other). The counts are real counters of observed requests (they start at 0 with the exporter);
`opsstack_varnish_class_requests_total{instance,class,handling}` gives the hit ratio per class
with rate(), against `opsstack_cdn_cache_policy_hit_target_ratio{class}`. A varnishncsa that
exits is started again after a second (`opsstack_varnish_class_log_up` says whether it runs);
it stops with the exporter (close(), and PR_SET_PDEATHSIG when the exporter is killed).
"""
from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import threading

log = logging.getLogger("opsstack.exporter.cdn")

HANDLINGS = frozenset({"hit", "miss", "pass", "pipe", "synth"})
FORMAT = "%{X-Cache-Class}o %{Varnish:handling}x"


try:  # looked up here, not in the forked child (preexec_fn then makes one plain C call)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """The child gets SIGTERM when the exporter dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))


def parse_line(line: str, classes: frozenset, default_class: str) -> tuple[str, str] | None:
    parts = line.split()
    if len(parts) != 2:
        return None
    cls, handling = parts
    return (cls if cls in classes else default_class), (handling if handling in HANDLINGS else "other")


class ClassLog:
    def __init__(self, varnishncsa: str, workdir: str | None, classes, default_class: str):
        self.argv = [varnishncsa, "-F", FORMAT] + (["-n", workdir] if workdir else [])
        self.classes = frozenset(classes)
        self.default_class = default_class
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        p = self._proc
        return p is not None and p.poll() is None

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="varnishncsa", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                              stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            except OSError as exc:
                log.warning("event=varnishncsa_failed error=%r", str(exc))
                self._stop.wait(5.0)
                continue
            for raw in self._proc.stdout:
                key = parse_line(raw.decode(errors="replace"), self.classes, self.default_class)
                if key is not None:
                    with self._lock:
                        self._counts[key] = self._counts.get(key, 0) + 1
            self._proc.wait()
            if not self._stop.is_set():
                log.warning("event=varnishncsa_exited code=%s argv=%r", self._proc.returncode, self.argv)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        p = self._proc
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._thread is not None:
            self._thread.join(10)
