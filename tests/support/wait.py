"""The one way tests wait: poll a condition with a generous deadline, never a fixed sleep."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``fn`` until it returns something truthy and return that. An exception from ``fn``
    counts as "not yet" (the thing polled may be restarting). TimeoutError after ``timeout``
    seconds, with the last value and the last error."""
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - reported if the deadline passes
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout:g}s (last value {last!r}"
                               + (f", last error {last_exc!r})" if last_exc else ")"))
        time.sleep(interval)
