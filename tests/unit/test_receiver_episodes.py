"""The episode rule as a table (webhook_receiver/episodes.py): no database."""
from __future__ import annotations

import pytest

from webhook_receiver.episodes import Step, decide

CASES = [
    # status, stored episode, resolved first, open ticket, recently resolved ticket -> step
    ("firing", "firing", False, True, False, Step.DUPLICATE),          # a retry / the other AM
    ("firing", "resolved", False, False, True, Step.DUPLICATE),        # a stale firing after the end
    ("resolved", "resolved", False, False, False, Step.DUPLICATE),     # the resolve again
    ("resolved", "firing", False, True, False, Step.RESOLVE_EPISODE),  # the episode ended
    ("firing", None, True, False, False, Step.LATE),                   # resolved came first, firing late
    ("resolved", None, True, False, False, Step.DUPLICATE),            # the early resolve again
    ("resolved", None, False, False, False, Step.REMEMBER_RESOLVED),   # resolved, never seen firing
    ("resolved", None, False, True, False, Step.RESOLVE_ACTIVE),       # a new episode's end, ticket open
    ("firing", None, False, True, False, Step.ATTACH),                 # new episode, ticket still open
    ("firing", None, False, True, True, Step.ATTACH),                  # open wins over recently resolved
    ("firing", None, False, False, True, Step.REOPEN),                 # re-fire inside the reopen window
    ("firing", None, False, False, False, Step.OPEN),                  # a new incident
]


@pytest.mark.parametrize("status,episode,resolved_first,active,recent,step", CASES)
def test_decide(status, episode, resolved_first, active, recent, step):
    assert decide(status, episode, resolved_first, active, recent) is step


def test_every_step_is_reachable():
    assert {c[-1] for c in CASES} == set(Step)
