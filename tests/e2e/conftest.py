"""The native stack, started once for the e2e tests with short intervals, torn down after.

The one fake HTTP server (tests/support/fakehttp.py) plays the on-call chat tool: the stack's
notification channel posts there, so the tests can check what people would have been told.
"""
from __future__ import annotations

import pytest

from tests.support.fakehttp import FakeHTTP
from tests.support.harness import StackHandle, fast_config


@pytest.fixture(scope="session")
def notification_sink():
    """The chat tool: every POST answers 200; what was posted is in `.requests`."""
    with FakeHTTP({"POST *": 200}) as sink:
        yield sink


@pytest.fixture(scope="session")
def native_stack(tmp_path_factory, notification_sink):
    work = tmp_path_factory.mktemp("native-stack")
    cfg = fast_config(
        work / ".run",
        # a demo process gets ~0.5 core on a busy 2-core CI box: judge CPU against 30% of its limit
        alerts__service__cpu_ratio=0.3,
        # with the tests' 20s rate window, the overseas instances' few lookups per minute make a
        # noisy hit ratio: judge the cache only where it serves at least one lookup every 2s
        alerts__cache__min_request_rate=0.5,
        # forecasts within the test's minutes: short history and step, no Prophet (its fits are
        # the forecaster's own tests' business; here only the data path to Prometheus counts)
        forecast={"interval": "20s", "step": "2s", "history": "10m", "min_history": "20s",
                  "models": ["naive", "ses", "linear_trend", "long_trend"], "workers": 1},
        exporters__db__advisor__interval="20s",
        notifications={"channels": [{"name": "ops-chat", "type": "webhook", "url": notification_sink.url + "/hook"}],
                       "rules": [{"channels": ["ops-chat"]}],
                       "initial_backoff": "1s"},
    )
    handle = StackHandle(cfg, work)
    try:
        handle.up()
    except Exception:
        handle.down()
        raise
    yield handle
    handle.down()
