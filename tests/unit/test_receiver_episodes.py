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


# --- the incident level -------------------------------------------------------------------------

from webhook_receiver.episodes import (IncidentStep, common, decide_incident, incident_key,  # noqa: E402
                                       incident_resolves, lead_index, title)

INCIDENT_CASES = [
    # per-alert steps of one incident's alerts in one notification -> what the incident does
    ([Step.OPEN] * 3, IncidentStep.OPEN),                          # a storm: one ticket, one page
    ([Step.OPEN], IncidentStep.OPEN),
    ([Step.REOPEN, Step.REOPEN], IncidentStep.REOPEN),              # re-fire in the window: reopened once
    ([Step.ATTACH], IncidentStep.ATTACH),                           # joins the open incident: no page
    ([Step.ATTACH] * 5, IncidentStep.ATTACH),
    ([], IncidentStep.NONE),                                        # only duplicates / resolves
]


@pytest.mark.parametrize("steps,want", INCIDENT_CASES)
def test_decide_incident(steps, want):
    assert decide_incident(steps) is want


def test_every_incident_step_is_reachable():
    assert {c[-1] for c in INCIDENT_CASES} == set(IncidentStep)


@pytest.mark.parametrize("status,firing_left,ended_now,want", [
    ("open", 0, True, True),            # the last firing alert resolved
    ("acknowledged", 0, True, True),    # acknowledged incidents resolve too
    ("open", 2, True, False),           # the first of three resolved: still open
    ("open", 0, False, False),          # nothing ended in this notification
    ("resolved", 0, True, False),       # resolved already (by hand): no second resolve
])
def test_incident_resolves_with_its_last_alert(status, firing_left, ended_now, want):
    assert incident_resolves(status, firing_left, ended_now) is want


@pytest.mark.parametrize("mode,group_key,fp,want", [
    ("group", "{}:{alertname=\"X\"}", "fp1", "{}:{alertname=\"X\"}"),
    ("group", "", "fp1", "fp1"),         # no group (the heartbeat alarm): the fingerprint
    ("group", None, "fp1", "fp1"),
    ("alert", "{}:{alertname=\"X\"}", "fp1", "fp1"),
])
def test_incident_key(mode, group_key, fp, want):
    assert incident_key(mode, group_key, fp) == want


def test_incident_fields_are_pure():
    assert common([{"a": "1", "b": "2"}, {"a": "1", "b": "3"}]) == {"a": "1"}
    assert common([]) == {}
    # the most severe alert leads; ties go to the lowest fingerprint
    assert lead_index(["warning", "critical", "critical"], ["a", "c", "b"]) == 2
    assert title("ServiceDown", "user-app", 1, "It is down.") == "It is down."
    assert title("ServiceDown", "user-app", 3, "It is down.") == "ServiceDown on user-app: 3 alerts - It is down."
    assert title("ServiceDown", "", 3, "") == "ServiceDown: 3 alerts"
