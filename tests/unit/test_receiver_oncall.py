"""On-call rotations: weekly handover at a local wall time, overrides win."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from core.config import ConfigError, load_data
from webhook_receiver.oncall import next_handover, on_call

SEOUL = ZoneInfo("Asia/Seoul")
SCHED = {"name": "ops", "members": ["ann", "bob", "cat"], "handover": "mon 09:00", "timezone": "Asia/Seoul",
         "start": "2026-01-05", "overrides": [
             {"start": "2026-01-14T00:00:00+09:00", "end": "2026-01-15T00:00:00+09:00", "person": "dan"}]}


def at(*a, tz=SEOUL):
    return datetime(*a, tzinfo=tz)


@pytest.mark.parametrize("when,who", [
    (at(2026, 1, 1, 12), "ann"),          # before the first handover: first member
    (at(2026, 1, 5, 8, 59), "ann"),
    (at(2026, 1, 5, 9, 0), "ann"),
    (at(2026, 1, 12, 8, 59), "ann"),
    (at(2026, 1, 12, 9, 0), "bob"),       # handover at 09:00 Seoul time
    (at(2026, 1, 14, 12), "dan"),         # override
    (at(2026, 1, 15, 0, 0), "bob"),       # override ended
    (at(2026, 1, 19, 9, 0), "cat"),
    (at(2026, 1, 26, 9, 0), "ann"),       # wraps around
    (at(2026, 1, 12, 0, 30, tz=timezone.utc), "bob"),  # 09:30 in Seoul
])
def test_rotation(when, who):
    assert on_call(SCHED, when) == who


def test_handover_keeps_wall_time_across_dst():
    s = {"members": ["a", "b"], "handover": "mon 09:00", "timezone": "Europe/Berlin", "start": "2026-03-23"}
    # DST starts 2026-03-29 in Berlin: the handover on 03-30 is still at 09:00 local
    assert on_call(s, datetime(2026, 3, 30, 8, 59, tzinfo=ZoneInfo("Europe/Berlin"))) == "a"
    assert on_call(s, datetime(2026, 3, 30, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))) == "b"
    assert next_handover(s, datetime(2026, 3, 25, tzinfo=timezone.utc)) == \
        datetime(2026, 3, 30, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))


def test_naive_time_is_refused():
    with pytest.raises(ValueError):
        on_call(SCHED, datetime(2026, 1, 1))


@pytest.mark.parametrize("data,key", [
    ({"oncall": {"schedules": [{"name": "ops", "members": ["nobody"]}]}}, "oncall.schedules[0].members[0]"),
    ({"oncall": {"schedules": [{"name": "ops", "members": ["cto"], "handover": "monday 9"}]}},
     "oncall.schedules[0].handover"),
    ({"oncall": {"schedules": [{"name": "ops", "members": ["cto"], "timezone": "Mars/Base"}]}},
     "oncall.schedules[0].timezone"),
    ({"escalation": {"default_policy": "nope"}}, "escalation.default_policy"),
    ({"notifications": {"rules": [{"channels": ["x"]}]}}, "notifications.rules[0].channels[0]"),
    ({"receiver": {"console": {"users": [{"name": "a", "password_hash": "plain"}]}}},
     "receiver.console.users[0].password_hash"),
])
def test_bad_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        load_data(data)
    assert e.value.key.startswith(key), str(e.value)
    assert "\n" not in str(e.value)
