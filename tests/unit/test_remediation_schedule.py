"""The low-traffic window a scheduled playbook acts in (webhook_receiver/remediation/schedule.py):
the daily traffic profile and the plan against a deadline (a predicted OOM)."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from webhook_receiver.remediation.schedule import daily_profile, hhmm, plan

TZ = "Asia/Seoul"
DAY = 86400.0


def _local(day: int, hour: float) -> float:
    """Unix time of local hour ``hour`` on 2026-11-<day> in TZ."""
    h, m = int(hour), int(round((hour % 1) * 60))
    return datetime(2026, 11, day, h, m, tzinfo=ZoneInfo(TZ)).timestamp()


def _traffic(end: float, days: int = 7, step: float = 300.0, seed: int = 0):
    """Requests/s with the demo's shape: a trough around 04:00 local, a peak around 15:00."""
    rng = np.random.default_rng(seed)
    t = np.arange(end - days * DAY, end, step)
    hour = (t + 9 * 3600) % DAY / 3600.0         # Seoul has no DST
    y = 3.0 + 2.5 * np.cos(2 * np.pi * (hour - 15.0) / 24.0) + rng.normal(0, 0.1, len(t))
    return t, np.maximum(y, 0.05)


@pytest.fixture(scope="module")
def profile():
    t, y = _traffic(_local(20, 14.0))
    p = daily_profile(t, y, TZ)
    assert p is not None and len(p) == 96
    assert 2.5 <= np.argmin(p) / 4 <= 5.5, "the trough is around 04:00 local"
    return p


def test_scheduled_in_the_next_trough_before_the_oom(profile):
    now = _local(20, 14.0)
    p = plan(now, _local(21, 12.0), profile, TZ)
    assert p.reason == "scheduled" and not p.now
    local = datetime.fromtimestamp(p.at, ZoneInfo(TZ))
    assert local.day == 21 and 2 <= local.hour <= 6
    assert p.window[0] <= p.at <= p.window[1]
    assert hhmm(p.at, TZ, now).startswith("2026-11-21 0")


def test_oom_inside_the_window_moves_the_restart_before_it(profile):
    now = _local(20, 14.0)
    deadline = _local(21, 3.0)                   # the trough's middle is past deadline - margin
    p = plan(now, deadline, profile, TZ, margin=1800.0)
    assert p.reason == "scheduled" and p.at <= deadline - 1800.0
    assert p.at >= p.window[0]


def test_imminent_oom_acts_at_once(profile):
    now = _local(20, 14.0)
    p = plan(now, now + 1800.0, profile, TZ, min_lead=3600.0)
    assert p.now and p.reason == "imminent" and p.at == now


def test_no_low_traffic_window_before_the_oom_acts_at_once(profile):
    now = _local(20, 14.0)
    p = plan(now, _local(20, 20.0), profile, TZ)  # six hours away, all of them busy
    assert p.now and p.reason == "no_window"


def test_quiet_now_acts_at_once(profile):
    now = _local(21, 4.0)
    p = plan(now, _local(22, 4.0), profile, TZ)
    assert p.now and p.reason == "quiet_now"


def test_no_profile_acts_at_once():
    now = _local(20, 14.0)
    t, _ = _traffic(now)
    assert daily_profile(t, np.full(len(t), 3.0), TZ) is None        # no daily shape
    assert daily_profile(t[-100:], np.ones(100), TZ) is None          # under a day
    assert plan(now, now + DAY, None, TZ).reason == "no_profile"


def test_unknown_deadline_takes_the_next_window(profile):
    now = _local(20, 14.0)
    p = plan(now, None, profile, TZ)
    assert p.reason == "scheduled" and p.at - now < DAY


# ---------------------------------------------------------------- config (core/schema)
def _pb(**schedule):
    return {"name": "later", "match": {"alertname": "MemoryLeakOomPredicted"}, "target": "demo-{service}",
            "schedule": schedule, "actions": [{"name": "restart", "backend": "supervisor",
                                               "params": {"program": "demo-{service}"}}]}


GOOD = {"deadline": 'min(opsstack_forecast_seconds_to_threshold{{service="{service}"}})',
        "traffic": 'sum(rate(opsstack_http_requests_total{{service="{service}"}}[5m]))'}


def test_schedule_config_defaults_and_errors_name_the_key():
    from core.config import ConfigError, load_data

    cfg = load_data({"remediation": {"playbooks": [_pb(**GOOD)]}})
    s = cfg["remediation"]["playbooks"][0]["schedule"]
    assert (s["history"], s["bin"], s["quiet_share"], s["min_lead"], s["margin"], s["timezone"]) == (
        7 * DAY, 900.0, 0.25, 3600.0, 1800.0, None)
    for bad, key in (({"deadline": GOOD["deadline"]}, "schedule.traffic"),
                     ({**GOOD, "timezone": "Mars/Olympus"}, "schedule.timezone"),
                     ({**GOOD, "traffic": "sum(rate(x[5m])"}, "schedule.traffic"),
                     ({**GOOD, "history": "1h"}, "schedule.history"),
                     ({**GOOD, "quiet": 0.2}, "schedule.quiet")):
        with pytest.raises(ConfigError) as e:
            load_data({"remediation": {"playbooks": [_pb(**bad)]}})
        assert key in str(e.value), (bad, str(e.value))
    with pytest.raises(ConfigError) as e:
        load_data({"remediation": {"playbooks": [dict(_pb(), schedule="tonight")]}})
    assert "schedule" in str(e.value)


def test_shipped_demo_playbook_schedules_the_oom_restart():
    from core.schema.remediation import parse_file
    from webhook_receiver.remediation.model import DEMO_FILE

    pb = next(p for p in parse_file(DEMO_FILE) if p["name"] == "scheduled-restart")
    assert pb["match"] == {"alertname": "MemoryLeakOomPredicted"} and pb["schedule"]["min_lead"] == 3600.0

