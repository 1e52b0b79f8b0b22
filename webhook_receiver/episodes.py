"""The ticket domain's episode rule, pure (no I/O): what one alert of a notification does to
the tickets, given what is already known about its fingerprint.

An *episode* is one firing of an alert (fingerprint + startsAt). ``decide`` is the whole rule;
tickets.py reads the known state with a few set-based queries, asks ``decide`` for each alert,
and carries the answer out. Kept apart so the rule is tested as a table (tests/unit/
test_receiver_episodes.py), without a database.
"""
from __future__ import annotations

from enum import Enum


class Step(str, Enum):
    DUPLICATE = "duplicate"                # a retry, the other cluster member, a repeat: touch last_seen
    RESOLVE_EPISODE = "resolve_episode"    # a known firing episode ended: resolve it (and its ticket)
    LATE = "late"                          # the resolved notification of this episode came first
    REMEMBER_RESOLVED = "remember_resolved"  # resolved, never seen firing: remember it, open nothing
    RESOLVE_ACTIVE = "resolve_active"      # resolved: record the episode on the open ticket, resolve it
    ATTACH = "attach"                      # a new episode while the ticket is open: same incident
    REOPEN = "reopen"                      # a new episode soon after the ticket resolved
    OPEN = "open"                          # a new incident


def decide(status: str, episode_status: str | None, resolved_first: bool, has_active: bool,
           has_recent: bool) -> Step:
    """What to do with an alert of ``status`` ('firing' | 'resolved').

    episode_status: status of the stored episode with the same fingerprint and startsAt, or None;
    resolved_first: a resolved notification of this very episode arrived before any firing one;
    has_active: the fingerprint has an unresolved ticket; has_recent: it has one resolved within
    the reopen window."""
    if episode_status is not None:
        if episode_status == "resolved" or status == "firing":
            return Step.DUPLICATE
        return Step.RESOLVE_EPISODE
    if resolved_first:
        return Step.DUPLICATE if status == "resolved" else Step.LATE
    if status == "resolved":
        return Step.RESOLVE_ACTIVE if has_active else Step.REMEMBER_RESOLVED
    if has_active:
        return Step.ATTACH
    return Step.REOPEN if has_recent else Step.OPEN


# --- the incident: what a notification does to one ticket ----------------------------------
#
# A ticket is an incident: the alerts of one Alertmanager group (receiver.incident_by: group,
# key = the notification's groupKey) or of one alert fingerprint (incident_by: alert). Each alert
# of a notification first gets its Step above, with has_active/has_recent asked of its incident
# key; the new firing alerts of one incident then make ONE incident-level step, and the incident
# resolves when its last firing episode has ended.


class IncidentStep(str, Enum):
    NONE = "none"        # nothing new fires for it: only episode bookkeeping (duplicates, resolves)
    OPEN = "open"        # a new incident: one ticket, paged once, whatever the number of alerts
    REOPEN = "reopen"    # its ticket resolved within the reopen window: reopened, paged again
    ATTACH = "attach"    # the incident is open: the alerts join it (one event, one hook, no page)


SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def incident_key(incident_by: str, group_key: str | None, fingerprint: str) -> str:
    """The key of the incident an alert belongs to: the notification's groupKey in group mode
    (an alert applied outside a notification, e.g. the heartbeat alarm, keys on its fingerprint)."""
    if incident_by == "group" and group_key:
        return group_key
    return fingerprint


def decide_incident(steps: list[Step]) -> IncidentStep:
    """The incident-level step for the alerts of one incident key in one notification, from
    their per-alert steps (``decide``; they share has_active/has_recent, so the new firing ones
    agree). Any number of new alerts open, reopen or attach once."""
    if Step.OPEN in steps:
        return IncidentStep.OPEN
    if Step.REOPEN in steps:
        return IncidentStep.REOPEN
    if Step.ATTACH in steps:
        return IncidentStep.ATTACH
    return IncidentStep.NONE


def incident_resolves(status: str, firing_left: int, ended_now: bool) -> bool:
    """An unresolved incident resolves when an episode of it ended in this notification and none
    of its episodes is still firing (the LAST firing alert resolved, not the first)."""
    return status != "resolved" and ended_now and firing_left == 0


def common(maps: list[dict]) -> dict:
    """The key/value pairs every mapping shares (the labels all alerts of an incident have)."""
    if not maps:
        return {}
    out = dict(maps[0])
    for m in maps[1:]:
        out = {k: v for k, v in out.items() if m.get(k) == v}
        if not out:
            break
    return out


def lead_index(severities: list[str], fingerprints: list[str]) -> int:
    """Which alert speaks for the incident (alertname, service, tier, severity): the most severe,
    then the lowest fingerprint (stable across retries and clustered Alertmanagers)."""
    return min(range(len(severities)), key=lambda i: (SEVERITY_RANK.get(severities[i], 3), fingerprints[i]))


def more_severe(a: str, b: str) -> str:
    return a if SEVERITY_RANK.get(a, 3) <= SEVERITY_RANK.get(b, 3) else b


def title(alertname: str, service: str, alerts: int, summary: str) -> str:
    """The ticket's summary: the alert's own summary for one alert; for more, the alert name,
    service and how many alerts (plus the summary they all share)."""
    if alerts <= 1:
        return summary
    head = f"{alertname} on {service}" if service else alertname
    return f"{head}: {alerts} alerts" + (f" - {summary}" if summary else "")
