"""The capacity of one region instance: ``replicas`` x ``workers`` request slots.

A request (every route but /health) holds one slot while the region serves it, and waits for a
free one when all are busy (at most ``queue_timeout``, then the service answers 503). So the
replica count really bounds what the region serves: too few replicas at the peak and requests
queue (latency up), more replicas and they do not. The time slots are held is the replicas'
CPU (``opsstack_demo_replica_cpu_seconds_total``); utilisation = its rate / (replicas x workers).
Changing the count takes effect at once (a scale-in lets the requests in flight finish).
"""
from __future__ import annotations

import threading
import time


class Overloaded(Exception):
    """No worker became free within the queue timeout."""


class ReplicaPool:
    def __init__(self, replicas: int, workers: int, min_replicas: int, max_replicas: int,
                 queue_timeout: float):
        self.workers = workers
        self.min = min_replicas
        self.max = max_replicas
        self.queue_timeout = queue_timeout
        self.replicas = self.clamp(replicas)
        self._cond = threading.Condition()
        self._busy = 0
        self._waiting = 0
        self.busy_seconds = 0.0   # slot-seconds held (replica CPU)
        self.rejected = 0

    def clamp(self, n: int) -> int:
        return max(self.min, min(self.max, int(n)))

    @property
    def slots(self) -> int:
        return self.replicas * self.workers

    def set(self, replicas: int) -> tuple[int, int]:
        """Set the replica count (clamped to min..max); returns (before, after)."""
        with self._cond:
            before = self.replicas
            self.replicas = self.clamp(replicas)
            self._cond.notify_all()
            return before, self.replicas

    def acquire(self) -> float:
        """Wait for a free slot; returns the time it was taken (perf_counter)."""
        deadline = time.monotonic() + self.queue_timeout
        with self._cond:
            self._waiting += 1
            try:
                while self._busy >= self.slots:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.rejected += 1
                        raise Overloaded(f"all {self.slots} workers busy for {self.queue_timeout:g}s")
                    self._cond.wait(left)
                self._busy += 1
            finally:
                self._waiting -= 1
        return time.perf_counter()

    def release(self, taken: float) -> None:
        held = time.perf_counter() - taken
        with self._cond:
            self._busy -= 1
            self.busy_seconds += held
            self._cond.notify()

    def snapshot(self) -> dict:
        with self._cond:
            return {"replicas": self.replicas, "workers": self.workers, "min": self.min, "max": self.max,
                    "busy": self._busy, "waiting": self._waiting,
                    "busy_seconds": round(self.busy_seconds, 6), "rejected": self.rejected}
