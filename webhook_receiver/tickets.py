"""Tickets in PostgreSQL: ingesting Alertmanager notifications and the human actions.

A ticket is one firing episode of one alert (fingerprint + startsAt); the episode rows in
``ticket_alerts`` carry the unique key that makes retries and clustered Alertmanagers
idempotent. A resolved notification that arrives before any firing one of its episode (two
clustered Alertmanagers, a retry) is kept in ``ticket_resolved_episodes``: the late firing
then opens nothing. Each notification's group records how many alerts Alertmanager left out
(truncatedAlerts, webhook max_alerts). Work on one fingerprint is serialised by a transaction-level advisory lock.
Every change writes a ``ticket_events`` row (the audit trail) and, where it matters,
notification rows (the durable outbox); hooks fire after the commit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from core.clock import utcnow
from core.config import view
from webhook_receiver import episodes, escalation, notify, oncall
from webhook_receiver.episodes import Step
from webhook_receiver.hooks import Hooks
from webhook_receiver.payload import Alert, Notification, PayloadError, parse_obj
from webhook_receiver.ticket_store import (SYSTEM_ACTOR, Emits, add_event, clear_heartbeat_alarm, heartbeat_seen,
                                           hook_payload, lock_ticket)

log = logging.getLogger(__name__)

# pg_advisory_xact_lock(FINGERPRINT_LOCK, hashtext(fingerprint))
FINGERPRINT_LOCK = 7_215_002
STATUSES = ("open", "acknowledged", "resolved")

class Context:
    """What ticket handling needs from the config, built once per app; ``hooks``: the app's
    subscribers (a Context of its own has none)."""

    def __init__(self, cfg: dict, hooks: Hooks | None = None):
        # typed views of the sections ticket handling reads (core.config.view), built once
        self.receiver = view(cfg, "receiver")
        self.escalation = view(cfg, "escalation")
        self.notifications = view(cfg, "notifications")
        self.hooks = hooks if hooks is not None else Hooks()
        self.policies = escalation.policies(self.escalation)
        self.default_policy = self.escalation.default_policy
        # oncall stays plain dicts: its pure rotation functions take schedule mappings, and a
        # person record goes as-is into notification payloads (JSON)
        self.directory = oncall.Directory(cfg["oncall"])
        self.reopen_window = float(self.receiver.reopen_window)
        self.raw_retention = float(self.receiver.raw_retention)
        self.heartbeats = set(self.receiver.heartbeat_alerts)
        self.db_url = view(cfg, "database").url

    def policy(self, name: str) -> escalation.Policy:
        return self.policies.get(name) or self.policies[self.default_policy]

    def schedule_for(self, policy: escalation.Policy, level: int, team: str) -> str:
        lv = policy.level(level)
        if lv.use_alert_team and team and team in self.directory.schedules:
            return team
        return lv.schedule

    def assignee_for(self, policy: escalation.Policy, level: int, team: str, at: datetime) -> str | None:
        return self.directory.who(self.schedule_for(policy, level, team), at)


# --- ingest ---------------------------------------------------------------------------------


@dataclass
class IngestResult:
    payload_id: int = 0
    opened: list = field(default_factory=list)
    reopened: list = field(default_factory=list)
    resolved: list = field(default_factory=list)
    attached: list = field(default_factory=list)
    duplicates: int = 0
    heartbeats: int = 0
    stale: int = 0  # firing alerts of an episode whose resolved notification came first: no ticket
    truncated_alerts: int = 0  # alerts Alertmanager left out of the notification (max_alerts)

    def as_dict(self) -> dict:
        return {"payload_id": self.payload_id, "opened": self.opened, "reopened": self.reopened,
                "resolved": self.resolved, "attached": self.attached, "duplicates": self.duplicates,
                "heartbeats": self.heartbeats, "stale": self.stale, "truncated_alerts": self.truncated_alerts}


PAYLOAD_CHANNEL = "opsstack_receiver_payloads"  # NOTIFY channel: a payload waits to be applied


def store_payload(conn, note: Notification, body: dict | str, processed: bool) -> int:
    """Insert the raw payload (a dict, or its JSON text as received and checked); a queued one
    also NOTIFYs the processors (same statement, delivered at commit)."""
    sql = ("insert into ticket_payloads (group_key, receiver, status, alert_count, body, processed_at) "
           "values (%s, %s, %s, %s, %s::jsonb, case when %s then now() end) returning id")
    if not processed:
        sql = f"with ins as ({sql}) select id, pg_notify('{PAYLOAD_CHANNEL}', '') from ins"
    return conn.execute(sql, (note.group_key, note.receiver, note.status, len(note.alerts),
                              body if isinstance(body, str) else Jsonb(body), processed)).fetchone()["id"]


# the group of a notification: last seen, and how many alerts the last notification carried and
# left out (truncatedAlerts > 0: the group is larger than alertmanager.max_alerts)
_UPSERT_GROUP = """
    insert into ticket_groups (group_key, receiver, group_labels, last_alert_count, truncated_alerts,
                               max_truncated_alerts)
    values (%s, %s, %s, %s, %s, %s)
    on conflict (group_key) do update set last_seen = now(), receiver = excluded.receiver,
        last_alert_count = excluded.last_alert_count, truncated_alerts = excluded.truncated_alerts,
        max_truncated_alerts = greatest(ticket_groups.max_truncated_alerts, excluded.truncated_alerts)
    returning id"""


def _group_params(note: Notification) -> tuple:
    return (note.group_key, note.receiver, Jsonb(note.group_labels), len(note.alerts), note.truncated_alerts,
            note.truncated_alerts)


def ingest(ctx: Context, conn, note: Notification, body: dict | str, now: datetime | None = None) -> IngestResult:
    """Inline processing: store the raw payload and apply every alert in one transaction."""
    now = now or utcnow()
    res = IngestResult()
    emits = Emits(ctx.hooks)
    with conn.transaction():
        res.payload_id = store_payload(conn, note, body, processed=True)
        apply_notification(ctx, conn, note, now, res, emits)
    emits.fire()
    return res


def enqueue_payload(conn, note: Notification, body: dict | str) -> int:
    """Queued processing: store the raw payload (committed: durable) for process_next().

    One statement: on an autocommit connection it is its own transaction (one round trip)."""
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return store_payload(conn, note, body, processed=False)
    with conn.transaction():
        return store_payload(conn, note, body, processed=False)


# Group commit (webhook_receiver.intake): many payloads, one statement, one commit. Each row carries
# its position; the ids come from one materialized CTE (volatile nextval, evaluated once), so each
# payload gets its own id back. (Plain parameters: a text[] of large bodies is slow to adapt.)
_ENQUEUE_MANY = """
with v as materialized (
    select nextval(pg_get_serial_sequence('ticket_payloads', 'id')) as id, u.*
    from (values {rows}) as u(ord, group_key, receiver, status, alert_count, body)
    order by u.ord),
ins as (insert into ticket_payloads (id, group_key, receiver, status, alert_count, body)
        select id, group_key, receiver, status, alert_count, body::jsonb from v order by ord returning id)
select (select array_agg(id order by ord) from v) as ids, (select count(*) from ins) as n,
       pg_notify('%s', '') as notified
""" % PAYLOAD_CHANNEL
_ROW = "(%s::int, %s::text, %s::text, %s::text, %s::int, %s::text)"


def enqueue_payloads(conn, items: list[tuple[Notification, str]]) -> list[int]:
    """Queued processing, many at once: store every (notification, JSON text) in ONE transaction
    (all or nothing: durable when this returns) and NOTIFY the processors once. Returns the
    payload ids in the order of ``items`` (which is also their id order)."""
    if not items:
        return []
    if len(items) == 1:
        return [enqueue_payload(conn, items[0][0], items[0][1])]
    sql = _ENQUEUE_MANY.replace("{rows}", ", ".join([_ROW] * len(items)))
    params: list = []
    for i, (n, text) in enumerate(items):
        params += (i, n.group_key, n.receiver, n.status, len(n.alerts), text)
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        row = conn.execute(sql, params, prepare=False).fetchone()  # one statement: its own transaction
    else:
        with conn.transaction():
            row = conn.execute(sql, params, prepare=False).fetchone()
    ids = row["ids"] if isinstance(row, dict) else row[0]
    if ids is None or len(ids) != len(items):  # cannot happen; never answer with a wrong id
        raise RuntimeError(f"enqueue_payloads: {len(items)} payloads, {ids!r} ids")
    return list(ids)


MAX_PROCESS_ATTEMPTS = 5


def process_next(ctx: Context, conn, now: datetime | None = None) -> IngestResult | None:
    """Apply the oldest stored payload whose group has no older pending one; None when idle.

    Payloads of one Alertmanager group are applied in arrival order (a resolved never
    overtakes its firing); different groups run in parallel across workers and replicas
    (FOR UPDATE SKIP LOCKED). A payload that keeps failing for a reason other than the
    database is set aside after MAX_PROCESS_ATTEMPTS with its error (it stays in the table).
    """
    emits = Emits(ctx.hooks)
    res = IngestResult()
    row = None
    try:
        with conn.transaction():
            row = conn.execute(
                """select id, body, attempts from ticket_payloads p where processed_at is null
                   and not exists (select 1 from ticket_payloads q where q.processed_at is null
                                   and q.group_key = p.group_key and q.id < p.id)
                   order by id limit 1 for update skip locked""").fetchone()
            if row is None:
                return None
            res.payload_id = row["id"]
            apply_notification(ctx, conn, parse_obj(row["body"]), now or utcnow(), res, emits)
            conn.execute("update ticket_payloads set processed_at = now(), attempts = attempts + 1, result = %s "
                         "where id = %s", (Jsonb(res.as_dict()), row["id"]))
    except (PayloadError, LookupError, TypeError, ValueError, AttributeError, psycopg.DataError) as exc:
        if row is None:
            raise
        failed = f"{type(exc).__name__}: {exc}"
        give_up = row["attempts"] + 1 >= MAX_PROCESS_ATTEMPTS
        with conn.transaction():  # the apply rolled back; record the failure (the claim is gone: fine)
            conn.execute("update ticket_payloads set attempts = attempts + 1, error = %s, "
                         "processed_at = case when %s then now() end where id = %s and processed_at is null",
                         (failed[:1000], give_up, row["id"]))
        log.error("event=payload_failed payload_id=%s attempt=%s gave_up=%s error=%r", row["id"],
                  row["attempts"] + 1, give_up, failed)
        return res
    emits.fire()
    return res


def apply_notification(ctx: Context, conn, note: Notification, now: datetime, res: IngestResult,
                       emits: Emits) -> None:
    res.truncated_alerts = note.truncated_alerts
    if note.truncated_alerts:
        log.warning("event=notification_truncated group_key=%r alerts=%s truncated_alerts=%s "
                    "hint='raise alertmanager.max_alerts or split the group (group_by)'",
                    note.group_key, len(note.alerts), note.truncated_alerts)
    alerts = []
    for a in sorted(note.alerts, key=lambda a: (a.fingerprint, a.starts_at)):
        if a.alertname in ctx.heartbeats:
            if a.status == "firing":
                _heartbeat_seen(ctx, conn, a.alertname, now, emits)
            res.heartbeats += 1
        else:
            alerts.append(a)
    stale = res.stale
    apply_alerts(ctx, conn, alerts, None, now, res, emits, note=note)
    if res.stale > stale:
        log.info("event=late_firing_ignored group_key=%r alerts=%s reason='resolved notification came first'",
                 note.group_key, res.stale - stale)


def _heartbeat_seen(ctx: Context, conn, name: str, now: datetime, emits: Emits) -> None:
    """A heartbeat arrived (inside the ingest transaction): its alarm ticket, if open, resolves."""
    alarm = heartbeat_seen(conn, name, now)
    if alarm:
        t = lock_ticket(conn, alarm)
        if t is not None and t["status"] != "resolved":
            _resolve(ctx, conn, t, SYSTEM_ACTOR, f"the {name} heartbeat is back", now, emits)
        clear_heartbeat_alarm(conn, name)


@dataclass
class _Known:
    episodes: dict
    active: dict
    recent: dict
    resolved_first: dict = field(default_factory=dict)  # (fingerprint, starts_at) -> ends_at
    recorded: list = field(default_factory=list)  # resolved-first episodes recorded by this call


def apply_alerts(ctx: Context, conn, alerts: list[Alert], group_id, now: datetime, res: IngestResult,
                 emits: Emits, note: Notification | None = None) -> None:
    """Apply alerts (sorted by fingerprint) with a few set-based reads and pipelined writes.

    With ``note``, its Alertmanager group is recorded too (group_id comes from that)."""
    with conn.pipeline():  # the reads go out together: one round trip
        cur_group = None
        if note is not None and note.group_key:
            cur_group = conn.execute(_UPSERT_GROUP, _group_params(note))
        if alerts:
            fps = sorted({a.fingerprint for a in alerts})
            # one advisory lock per fingerprint, in a stable order (no deadlocks between deliveries)
            conn.execute("select count(pg_advisory_xact_lock(%s, hashtext(f))) from "
                         "(select f from unnest(%s::text[]) f order by f) s", (FINGERPRINT_LOCK, fps))
            episode_keys = ([a.fingerprint for a in alerts], [a.starts_at for a in alerts])
            cur_ep = conn.execute(
                "select * from ticket_alerts where (fingerprint, starts_at) in "
                "(select * from unnest(%s::text[], %s::timestamptz[]))", episode_keys)
            cur_rf = conn.execute(
                "select fingerprint, starts_at, ends_at from ticket_resolved_episodes where (fingerprint, starts_at) in "
                "(select * from unnest(%s::text[], %s::timestamptz[]))", episode_keys)
            # unresolved tickets, and those resolved recently enough to be reopened
            cutoff = now - timedelta(seconds=ctx.reopen_window) if ctx.reopen_window > 0 else now + timedelta(days=1)
            cur_t = conn.execute(
                "select * from tickets where fingerprint = any(%s) and (status <> 'resolved' or resolved_at >= %s) "
                "for update", (fps, cutoff))
        if cur_group is not None:
            group_id = cur_group.fetchone()["id"]
        if not alerts:
            return
        known = _Known(episodes={(r["fingerprint"], r["starts_at"]): r for r in cur_ep.fetchall()}, active={},
                       recent={},
                       resolved_first={(r["fingerprint"], r["starts_at"]): r["ends_at"] for r in cur_rf.fetchall()})
        for r in cur_t.fetchall():
            if r["status"] != "resolved":
                known.active[r["fingerprint"]] = r
            elif r["fingerprint"] not in known.recent or r["resolved_at"] > known.recent[r["fingerprint"]]["resolved_at"]:
                known.recent[r["fingerprint"]] = r
    to_open: list[Alert] = []

    def flush():
        for a, t in zip(to_open, _open_many(ctx, conn, to_open, group_id, now, emits)):
            _insert_episode(conn, t["id"], a, group_id, now)
            known.active[a.fingerprint] = t
            res.opened.append(t["id"])
        to_open.clear()

    with conn.pipeline():  # writes go out without waiting for each answer
        for a in alerts:
            if a.fingerprint in known.active:
                known.recent.pop(a.fingerprint, None)
            if any(o.fingerprint == a.fingerprint for o in to_open):
                flush()  # the same alert twice in one payload: the first must exist first
            if _apply_alert(ctx, conn, a, group_id, now, res, emits, known):
                to_open.append(a)
        flush()
        if known.recorded:
            fps_, starts_, ends_ = zip(*known.recorded)
            conn.execute(
                "insert into ticket_resolved_episodes (fingerprint, starts_at, ends_at, recorded_at) "
                "select f, s, e, %s from unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) u(f, s, e) "
                "on conflict (fingerprint, starts_at) do nothing", (now, list(fps_), list(starts_), list(ends_)))
            # kept as long as the raw payloads: far longer than any retry or cluster delay
            conn.execute("delete from ticket_resolved_episodes where recorded_at < %s",
                         (now - timedelta(seconds=ctx.raw_retention),))


def _apply_alert(ctx: Context, conn, a: Alert, group_id, now: datetime, res: IngestResult, emits: Emits,
                 known: _Known) -> bool:
    """Carry out ``episodes.decide`` for one alert; True when it needs a new ticket (opened in a
    batch by the caller)."""
    key = (a.fingerprint, a.starts_at)
    ep = known.episodes.get(key)
    active = known.active.get(a.fingerprint)
    step = episodes.decide(a.status, ep["status"] if ep is not None else None, key in known.resolved_first,
                           active is not None, a.fingerprint in known.recent)
    if step is Step.DUPLICATE:
        if ep is not None:
            conn.execute("update ticket_alerts set last_seen = %s where id = %s", (now, ep["id"]))
        res.duplicates += 1
        return False
    if step is Step.RESOLVE_EPISODE:
        conn.execute("update ticket_alerts set status = 'resolved', ends_at = %s, last_seen = %s where id = %s",
                     (a.ends_at, now, ep["id"]))
        known.episodes[key] = {**ep, "status": "resolved"}
        t = lock_ticket(conn, ep["ticket_id"])
        if t["status"] != "resolved":
            _resolve(ctx, conn, t, SYSTEM_ACTOR, "the alert resolved", now, emits)
            res.resolved.append(t["id"])
            known.active.pop(a.fingerprint, None)
        return False
    if step is Step.LATE:
        res.stale += 1
        return False
    if step is Step.REMEMBER_RESOLVED:
        # its firing, should it still arrive (the other clustered Alertmanager, a retry), opens nothing
        res.duplicates += 1
        known.resolved_first[key] = a.ends_at
        known.recorded.append((a.fingerprint, a.starts_at, a.ends_at))
        return False
    if step is Step.RESOLVE_ACTIVE:
        _insert_episode(conn, active["id"], a, group_id, now)
        _resolve(ctx, conn, active, SYSTEM_ACTOR, "the alert resolved", now, emits)
        res.resolved.append(active["id"])
        known.active.pop(a.fingerprint, None)
        known.episodes[key] = {"status": "resolved", "ticket_id": active["id"], "id": None}
        return False
    if step is Step.ATTACH:
        _insert_episode(conn, active["id"], a, group_id, now)
        add_event(conn, active["id"], "alert_attached", SYSTEM_ACTOR, {"starts_at": a.starts_at.isoformat()})
        res.attached.append(active["id"])
        emits.add("ticket_updated", **hook_payload(ctx, active, SYSTEM_ACTOR, change="alert_attached"))
        return False
    if step is Step.OPEN:
        return True
    t = _reopen(ctx, conn, known.recent.pop(a.fingerprint), a, group_id, now, emits)  # Step.REOPEN
    res.reopened.append(t["id"])
    _insert_episode(conn, t["id"], a, group_id, now)
    known.active[a.fingerprint] = t
    return False


def _insert_episode(conn, ticket_id: int, a: Alert, group_id, now: datetime) -> None:
    conn.execute(
        """insert into ticket_alerts (ticket_id, fingerprint, starts_at, ends_at, status, labels, annotations,
                                      group_id, first_seen, last_seen)
           values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict (fingerprint, starts_at) do nothing""",
        (ticket_id, a.fingerprint, a.starts_at, a.ends_at if a.status == "resolved" else None, a.status,
         Jsonb(a.labels), Jsonb(a.annotations), group_id, now, now))


_INSERT_TICKET = """
    insert into tickets (fingerprint, status, alertname, service, severity, tier, team, labels, annotations,
                         summary, generator_url, group_id, starts_at, opened_at, policy, entry_level, level,
                         level_since, repeats, next_escalation_at, assignee, updated_at)
    values (%s, 'open', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s)
    returning *"""


def _open_many(ctx: Context, conn, alerts: list[Alert], group_id, now: datetime, emits: Emits) -> list[dict]:
    """New tickets for ``alerts`` (distinct fingerprints): one round trip for all of them."""
    if not alerts:
        return []
    params, meta = [], []
    for a in alerts:
        pol = ctx.policy(escalation.policy_name_for(ctx.escalation, a.team))
        state, due = escalation.initial_state(a.tier, pol, now)
        assignee = ctx.assignee_for(pol, state.level, a.team, now)
        meta.append((a, pol, assignee))
        params.append((a.fingerprint, a.alertname, a.service, a.severity, a.tier, a.team, Jsonb(a.labels),
                       Jsonb(a.annotations), a.summary, a.generator_url, group_id, a.starts_at, now, pol.name,
                       state.level, state.level, now, due, assignee, now))
    cur = conn.cursor()
    cur.executemany(_INSERT_TICKET, params, returning=True)
    rows = []
    while True:
        rows.append(cur.fetchone())
        if not cur.nextset():
            break
    out = []
    for (a, pol, assignee), t in zip(meta, rows):
        add_event(conn, t["id"], "opened", SYSTEM_ACTOR,
                  {"level": t["level"], "level_name": pol.level(t["level"]).name, "assignee": assignee,
                   "starts_at": a.starts_at.isoformat()}, at=now)
        notify.enqueue(ctx, conn, t, "opened")
        emits.add("ticket_opened", **hook_payload(ctx, t, SYSTEM_ACTOR))
        out.append(t)
    return out


def _reopen(ctx: Context, conn, t: dict, a: Alert, group_id, now: datetime, emits: Emits) -> dict:
    pol = ctx.policy(t["policy"])
    state, due = escalation.initial_state(a.tier, pol, now)
    assignee = ctx.assignee_for(pol, state.level, t["team"], now)
    t = conn.execute(
        """update tickets set status = 'open', acknowledged_at = null, acknowledged_by = null,
               resolved_at = null, resolved_by = null, reopened_count = reopened_count + 1,
               last_reopened_at = %s, level = %s, level_since = %s, repeats = 0, next_escalation_at = %s,
               assignee = %s, labels = %s, annotations = %s, group_id = coalesce(%s, group_id), updated_at = %s
           where id = %s returning *""",
        (now, state.level, now, due, assignee, Jsonb(a.labels), Jsonb(a.annotations), group_id, now,
         t["id"])).fetchone()
    add_event(conn, t["id"], "reopened", SYSTEM_ACTOR,
              {"starts_at": a.starts_at.isoformat(), "level": t["level"], "assignee": assignee}, at=now)
    notify.enqueue(ctx, conn, t, "reopened")
    emits.add("ticket_reopened", **hook_payload(ctx, t, SYSTEM_ACTOR))
    return t


def _resolve(ctx: Context, conn, t: dict, actor: str, reason: str, now: datetime, emits: Emits) -> dict:
    t = conn.execute(
        """update tickets set status = 'resolved', resolved_at = %s, resolved_by = %s,
               next_escalation_at = null, updated_at = %s where id = %s returning *""",
        (now, actor, now, t["id"])).fetchone()
    add_event(conn, t["id"], "resolved", actor, {"reason": reason}, at=now)
    notify.enqueue(ctx, conn, t, "resolved")
    emits.add("ticket_resolved", **hook_payload(ctx, t, actor, reason=reason))
    return t


# --- human actions --------------------------------------------------------------------------


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


def _act(ctx: Context, conn, ticket_id: int, fn) -> dict:
    emits = Emits(ctx.hooks)
    with conn.transaction():
        t = lock_ticket(conn, ticket_id)
        if t is None:
            raise NotFound(f"no ticket {ticket_id}")
        t = fn(t, emits)
    emits.fire()
    return t


def acknowledge(ctx: Context, conn, ticket_id: int, actor: str, note: str = "") -> dict:
    def fn(t, emits):
        if t["status"] == "resolved":
            raise Conflict("the ticket is resolved")
        if t["status"] == "acknowledged":
            return t
        now = utcnow()
        t = conn.execute("""update tickets set status = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s,
                                next_escalation_at = null, updated_at = %s where id = %s returning *""",
                         (now, actor, now, t["id"])).fetchone()
        add_event(conn, t["id"], "acknowledged", actor, {"note": note} if note else {}, at=now)
        notify.enqueue(ctx, conn, t, "acknowledged", actor=actor)
        emits.add("ticket_updated", **hook_payload(ctx, t, actor, change="acknowledged"))
        return t
    return _act(ctx, conn, ticket_id, fn)


def resolve(ctx: Context, conn, ticket_id: int, actor: str, note: str = "") -> dict:
    def fn(t, emits):
        if t["status"] == "resolved":
            return t
        return _resolve(ctx, conn, t, actor, note or "resolved by hand", utcnow(), emits)
    return _act(ctx, conn, ticket_id, fn)


def comment(ctx: Context, conn, ticket_id: int, actor: str, text: str) -> dict:
    def fn(t, emits):
        add_event(conn, t["id"], "comment", actor, {"text": text})
        t = conn.execute("update tickets set updated_at = now() where id = %s returning *", (t["id"],)).fetchone()
        emits.add("ticket_updated", **hook_payload(ctx, t, actor, change="comment"))
        return t
    return _act(ctx, conn, ticket_id, fn)


def reassign(ctx: Context, conn, ticket_id: int, actor: str, assignee: str, note: str = "") -> dict:
    def fn(t, emits):
        if t["assignee"] == assignee:
            return t
        old = t["assignee"]
        t = conn.execute("update tickets set assignee = %s, updated_at = now() where id = %s returning *",
                         (assignee, t["id"])).fetchone()
        ev = add_event(conn, t["id"], "reassigned", actor, {"from": old, "to": assignee, **({"note": note} if note else {})},
                       returning=True)
        notify.enqueue(ctx, conn, t, "reassigned", actor=actor, event_id=ev)
        emits.add("ticket_updated", **hook_payload(ctx, t, actor, change="reassigned", assignee=assignee))
        return t
    return _act(ctx, conn, ticket_id, fn)


