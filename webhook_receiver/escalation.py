"""Escalation: the pure decision (`decide`), the scheduler step, and `escalate_now`.

Dependency direction: tickets -> escalation -> notify -> ticket_store (never back).

A ticket in status 'open' sits at a level of its policy since ``level_since``. When that
level's ack_timeout passes without an acknowledgement, the next level is paged; after the
last level's ack_timeout it is paged again every repeat_interval (until max_repeats, 0 = for
ever). Acknowledging stops the clock; resolving ends it. The schedule is anchored to the
ticket's own times (not to when the scheduler happened to run), so a receiver that was down
catches up to the same levels after a restart.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from psycopg.rows import dict_row

from core.clock import utcnow
from webhook_receiver import notify
from webhook_receiver.ticket_store import Emits, add_event, hook_payload, lock_ticket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Level:
    name: str
    schedule: str
    ack_timeout: float
    use_alert_team: bool = False


@dataclass(frozen=True)
class Policy:
    name: str
    levels: tuple[Level, ...]
    repeat_interval: float
    max_repeats: int = 0

    @classmethod
    def from_cfg(cls, p) -> "Policy":
        """From a policy of the typed ``escalation`` view (core.config.view)."""
        return cls(name=p.name, repeat_interval=float(p.repeat_interval), max_repeats=int(p.max_repeats),
                   levels=tuple(Level(name=lv.name, schedule=lv.schedule, ack_timeout=float(lv.ack_timeout),
                                      use_alert_team=bool(lv.use_alert_team))
                                for lv in p.levels))

    def level(self, n: int) -> Level:
        return self.levels[min(max(n, 1), len(self.levels)) - 1]


def policies(esc) -> dict[str, Policy]:
    """The policies of the typed ``escalation`` view, by name."""
    return {p.name: Policy.from_cfg(p) for p in esc.policies}


def policy_name_for(esc, team: str) -> str:
    return esc.team_policies.get(team, esc.default_policy)


def entry_level(tier: int, policy: Policy) -> int:
    """The alert's `tier` label chooses where escalation starts (clamped to the policy)."""
    return min(max(int(tier), 1), len(policy.levels))


@dataclass(frozen=True)
class State:
    status: str          # open | acknowledged | resolved
    level: int           # 1-based
    level_since: datetime
    repeats: int = 0     # pages of the last level after its first ack_timeout


@dataclass(frozen=True)
class Decision:
    action: str          # wait | escalate | repeat | stop
    state: State         # the state after the action
    next_at: datetime | None  # when to look again (None: never, unless the ticket changes)


def due_at(state: State, policy: Policy) -> datetime | None:
    """When the current level's time runs out (None: nothing more will happen)."""
    if state.status != "open":
        return None
    last = len(policy.levels)
    if state.level < last or state.repeats == 0:
        return state.level_since + timedelta(seconds=policy.level(state.level).ack_timeout)
    if policy.max_repeats and state.repeats >= policy.max_repeats:
        return None
    return state.level_since + timedelta(seconds=policy.repeat_interval)


def decide(state: State, policy: Policy, now: datetime) -> Decision:
    """What to do with a ticket at ``now``: a pure function of its state, policy and time.

    One step per call; a scheduler that fell behind calls it again for the next step.
    """
    due = due_at(state, policy)
    if due is None:
        return Decision("stop", state, None)
    if now < due:
        return Decision("wait", state, due)
    if state.level < len(policy.levels):
        new = replace(state, level=state.level + 1, level_since=due, repeats=0)
        return Decision("escalate", new, due_at(new, policy))
    new = replace(state, level_since=due, repeats=state.repeats + 1)
    return Decision("repeat", new, due_at(new, policy))


def initial_state(tier: int, policy: Policy, now: datetime) -> tuple[State, datetime | None]:
    s = State("open", entry_level(tier, policy), now, 0)
    return s, due_at(s, policy)


# --- database side -----------------------------------------------------------------------


def apply_escalation(ctx, conn, t: dict, d: Decision, actor: str, reason: str,
                     emits: Emits, now: datetime, forced: bool = False) -> dict:
    pol = ctx.policy(t["policy"])
    s = d.state
    assignee = ctx.assignee_for(pol, s.level, t["team"], now)
    old_level = t["level"]
    t = conn.execute(
        """update tickets set status = 'open', level = %s, level_since = %s, repeats = %s,
               next_escalation_at = %s, assignee = coalesce(%s, assignee), updated_at = %s
           where id = %s returning *""",
        (s.level, s.level_since, s.repeats, d.next_at, assignee, now, t["id"])).fetchone()
    add_event(conn, t["id"], "escalated", actor,
              {"from_level": old_level, "level": s.level, "level_name": pol.level(s.level).name,
               "repeat": s.repeats, "assignee": t["assignee"], "reason": reason, "forced": forced}, at=now)
    notify.enqueue(ctx, conn, t, "escalated", reason=reason)
    emits.add("ticket_updated", **hook_payload(ctx, t, actor, change="escalated", reason=reason))
    log.info("event=ticket_escalated ticket_id=%s level=%s repeat=%s actor=%s", t["id"], s.level, s.repeats, actor)
    return t


def run_due(ctx, conn, now: datetime | None = None, batch: int = 50) -> int:
    """Apply the decision to every open ticket whose timer ran out; returns how many steps.

    Takes each row with FOR UPDATE SKIP LOCKED, so several workers or replicas can run this
    at once and never escalate the same ticket twice.
    """
    now = now or utcnow()
    steps = 0
    emits = Emits(ctx.hooks)
    with conn.transaction():
        rows = conn.execute(
            """select * from tickets where status = 'open' and next_escalation_at is not null
               and next_escalation_at <= %s order by next_escalation_at limit %s
               for update skip locked""", (now, batch)).fetchall()
        for t in rows:
            pol = ctx.policy(t["policy"])
            d = decide(State(t["status"], t["level"], t["level_since"], t["repeats"]), pol, now)
            if d.action in ("escalate", "repeat"):
                apply_escalation(ctx, conn, t, d, actor="scheduler", reason="not acknowledged in time",
                                         emits=emits, now=now)
                steps += 1
            else:
                conn.execute("update tickets set next_escalation_at = %s where id = %s", (d.next_at, t["id"]))
    emits.fire()
    return steps


def escalate_now(conn, ticket_id: int, reason: str, actor: str, ctx) -> dict | None:
    """Page the next level of a ticket right away (e.g. a remediation ladder is exhausted).

    The ticket goes to the next level (or pages the last level again), is assigned to that
    level's on-call person, gets an 'escalated' event with ``reason`` and ``actor``, and is
    notified. An acknowledged ticket goes back to 'open' (a person must look at it again).
    Returns the ticket row after the change, or None when it does not exist or is resolved.
    Runs in ``conn.transaction()`` (committed at the end unless the caller has a transaction
    open); hooks fire after that. ``ctx``: the app's tickets.Context (state(app).ctx).
    """
    now = utcnow()
    emits = Emits(ctx.hooks)
    saved = conn.row_factory
    conn.row_factory = dict_row
    try:
        out = _escalate_now(ctx, conn, ticket_id, reason, actor, now, emits)
    finally:
        conn.row_factory = saved
    emits.fire()
    return out


def _escalate_now(ctx, conn, ticket_id, reason, actor, now, emits):
    with conn.transaction():
        t = lock_ticket(conn, ticket_id)
        if t is None or t["status"] == "resolved":
            return None
        pol = ctx.policy(t["policy"])
        if t["level"] < len(pol.levels):
            new = State("open", t["level"] + 1, now, 0)
        else:
            new = State("open", t["level"], now, t["repeats"] + 1)
        d = Decision("escalate", new, due_at(new, pol))
        return apply_escalation(ctx, conn, t, d, actor=actor, reason=reason, emits=emits, now=now,
                                        forced=True)
