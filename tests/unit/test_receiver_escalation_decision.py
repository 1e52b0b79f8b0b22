"""The escalation decision: a pure function of ticket state, policy and time."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.config import defaults, view
from webhook_receiver.escalation import (Decision, Level, Policy, State, decide, due_at, entry_level,
                                         initial_state, policies)

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
M = timedelta(minutes=1)


@pytest.fixture
def pol() -> Policy:
    return policies(view(defaults(), "escalation"))["default"]


def test_default_policy_is_the_teams_rule(pol):
    assert [lv.ack_timeout for lv in pol.levels] == [300, 900, 1800]
    assert [lv.schedule for lv in pol.levels] == ["ops", "it-manager", "cto"]
    assert pol.repeat_interval == 1800 and pol.max_repeats == 0


def test_waits_until_the_level_times_out(pol):
    s = State("open", 1, T0)
    d = decide(s, pol, T0 + 4 * M)
    assert d == Decision("wait", s, T0 + 5 * M)


def test_l1_to_l2_to_l3_then_repeat_l3(pol):
    s = State("open", 1, T0)
    d = decide(s, pol, T0 + 5 * M)
    assert (d.action, d.state.level, d.state.level_since, d.next_at) == ("escalate", 2, T0 + 5 * M, T0 + 20 * M)
    d = decide(d.state, pol, T0 + 20 * M)
    assert (d.action, d.state.level, d.next_at) == ("escalate", 3, T0 + 50 * M)
    d = decide(d.state, pol, T0 + 50 * M)
    assert (d.action, d.state.level, d.state.repeats, d.next_at) == ("repeat", 3, 1, T0 + 80 * M)
    d = decide(d.state, pol, T0 + 80 * M)
    assert (d.action, d.state.repeats, d.next_at) == ("repeat", 2, T0 + 110 * M)


def test_schedule_is_anchored_to_the_ticket_not_the_clock(pol):
    """A scheduler that was down for an hour catches up step by step to the same times."""
    s = State("open", 1, T0)
    late = T0 + 60 * M
    steps = []
    while True:
        d = decide(s, pol, late)
        if d.action == "wait":
            break
        steps.append((d.action, d.state.level, d.state.level_since))
        s = d.state
    assert steps == [("escalate", 2, T0 + 5 * M), ("escalate", 3, T0 + 20 * M), ("repeat", 3, T0 + 50 * M)]
    assert decide(s, pol, late).next_at == T0 + 80 * M


@pytest.mark.parametrize("status", ["acknowledged", "resolved"])
def test_ack_stops_and_resolve_ends(pol, status):
    d = decide(State(status, 1, T0), pol, T0 + 999 * M)
    assert d.action == "stop" and d.next_at is None
    assert due_at(State(status, 2, T0), pol) is None


def test_max_repeats_stops_repeating():
    p = Policy("p", (Level("a", "s", 10), Level("b", "s", 20)), repeat_interval=5, max_repeats=2)
    s = State("open", 2, T0, repeats=2)
    assert decide(s, p, T0 + 100 * M).action == "stop"
    s = State("open", 2, T0, repeats=1)
    assert decide(s, p, T0 + timedelta(seconds=5)).action == "repeat"


@pytest.mark.parametrize("tier,level", [(1, 1), (2, 2), (3, 3), (0, 1), (7, 3)])
def test_tier_chooses_entry_level(pol, tier, level):
    assert entry_level(tier, pol) == level
    s, due = initial_state(tier, pol, T0)
    assert s.level == level and due == T0 + timedelta(seconds=pol.level(level).ack_timeout)


def test_durations_down_to_seconds():
    p = Policy("fast", (Level("a", "s", 1), Level("b", "s", 2)), repeat_interval=1)
    s, due = initial_state(1, p, T0)
    assert due == T0 + timedelta(seconds=1)
    d = decide(s, p, T0 + timedelta(seconds=1))
    assert d.action == "escalate" and d.next_at == T0 + timedelta(seconds=3)


def test_single_level_policy_repeats_itself():
    p = Policy("one", (Level("only", "s", 60),), repeat_interval=30)
    d = decide(State("open", 1, T0), p, T0 + M)
    assert (d.action, d.state.repeats, d.next_at) == ("repeat", 1, T0 + M + timedelta(seconds=30))
