"""The native stack, started once for the e2e tests with short intervals, torn down after."""
from __future__ import annotations

import pytest

from stack.harness import StackHandle, fast_config


@pytest.fixture(scope="session")
def native_stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("native-stack")
    cfg = fast_config(
        work / ".run",
        # a demo process gets ~0.5 core on a busy 2-core CI box: judge CPU against 30% of its limit
        alerts__service__cpu_ratio=0.3,
        # forecasts within the test's minutes: short history and step, no Prophet (its fits are
        # the forecaster's own tests' business; here only the data path to Prometheus counts)
        forecast={"interval": "20s", "step": "2s", "history": "10m", "min_history": "20s",
                  "models": ["naive", "ses", "linear_trend", "long_trend"], "workers": 1},
    )
    handle = StackHandle(cfg, work)
    try:
        handle.up()
    except Exception:
        handle.down()
        raise
    yield handle
    handle.down()
