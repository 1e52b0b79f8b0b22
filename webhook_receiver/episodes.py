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
