"""The native stack, started once for the e2e tests with short intervals, torn down after."""
from __future__ import annotations

import pytest

from stack.harness import StackHandle, fast_config


@pytest.fixture(scope="session")
def native_stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("native-stack")
    handle = StackHandle(fast_config(work / ".run"), work)
    try:
        handle.up()
    except Exception:
        handle.down()
        raise
    yield handle
    handle.down()
