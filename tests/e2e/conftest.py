"""The native stack of the e2e tests: started ONCE per session, as a user's first `make up`.

`fresh_stack` starts it with the default config (tests/support/harness.py `default_config`: only
the run folder is the test's, ports are 'auto'), so with the demo's 14 days of backfilled
history, the embedded PostgreSQL, the full forecaster and the mail sink as notification
channel. test_a_fresh_stack_is_quiet.py (the file name sorts first) watches it for 10 minutes
with no fault. Then `native_stack` switches the same stack with `opsstack up` (Stack.apply) to
the short intervals the fault tests need, and the on-call chat tool below as notification
channel: the alert, remediation and dashboard tests run on it. A test that asks for the fresh
stack after the switch gets a new one of its own (never a stack that saw faults).

The one fake HTTP server (tests/support/fakehttp.py) plays the on-call chat tool: the stack's
notification channel posts there, so the tests can check what people would have been told.
"""
from __future__ import annotations

import time

import pytest

from core.config import defaults
from tests.support.fakehttp import FakeHTTP
from tests.support.harness import StackHandle, default_config, fast_config

# a first `up` backfills 14 days of demo history before it starts anything (~1-2 min, more on
# a busy machine) and waits up to stack.startup_timeout for each program
FIRST_UP_TIMEOUT = 900


def start_default_stack(work) -> StackHandle:
    handle = StackHandle(default_config(work / ".run"), work)
    # a user's machine: no external database, a generated receiver token
    for var in ("OPSSTACK_DATABASE_URL", "OPSSTACK_RECEIVER_TOKEN"):
        handle.env.pop(var, None)
    handle.fast = False
    try:
        handle.up(timeout=FIRST_UP_TIMEOUT)
    except Exception:
        handle.down()
        raise
    handle.up_returned = time.time()
    return handle


@pytest.fixture(scope="session")
def notification_sink():
    """The chat tool: every POST answers 200; what was posted is in `.requests`."""
    with FakeHTTP({"POST *": 200}) as sink:
        yield sink


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory):
    """The session's one stack, as `make up` starts it the first time."""
    handle = start_default_stack(tmp_path_factory.mktemp("native-stack"))
    yield handle
    handle.down()


@pytest.fixture(scope="session")
def fresh_stack(shared_stack, tmp_path_factory):
    """A stack no test has touched yet: the shared one before the switch, else a new one."""
    if not shared_stack.fast:
        yield shared_stack
        return
    handle = start_default_stack(tmp_path_factory.mktemp("fresh-stack"))
    yield handle
    handle.down()


def fast_settings(run_dir, sink_url: str) -> dict:
    return fast_config(
        run_dir,
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
        # the database faults within a minute (test_db_backup_faults.py): a replica 10s behind warns,
        # 20s behind is past the RPO; a failed WAL archive fires at once
        exporters__db__alerts={"replication_lag": "10s", "replication_lag_for": "3s",
                               "wal_archive_failing_for": "3s"},
        exporters__security__backup__rpo="20s",
        alerts__security__replica_lag_for="3s",
        notifications={"channels": [{"name": "ops-chat", "type": "webhook", "url": sink_url + "/hook"}],
                       "rules": [{"channels": ["ops-chat"]}],
                       "initial_backoff": "1s"},
        # the history is there already (a first start's business): the demo's settings stay as
        # they are, so the switch does not restart the demo services
        demo__backfill=defaults()["demo"]["backfill"],
        # ... and the database stays as the first start made it (a durable one is not restarted)
        database__embedded__durable=defaults()["database"]["embedded"]["durable"],
    )


@pytest.fixture(scope="session")
def native_stack(shared_stack, notification_sink):
    """The shared stack switched to short intervals by `opsstack up` on the running stack:
    Prometheus and Alertmanager reload, the programs whose settings changed (exporters,
    forecaster, receiver) restart, and `up` returns once they run and answer."""
    cfg = fast_settings(shared_stack.workdir / ".run", notification_sink.url)
    shared_stack.fast = True
    out = shared_stack.reconfigure(cfg)
    did = next((line for line in out.splitlines() if line.startswith("opsstack: reloaded")), out)
    assert "reloaded prometheus, alertmanager; restarted " in did, out
    assert "demo-" not in did, did  # the demo services (and their state) are kept
    return shared_stack
