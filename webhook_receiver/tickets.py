"""Tickets in PostgreSQL: ingesting Alertmanager notifications and the human actions.

A ticket is one firing episode of one alert (fingerprint + startsAt); the episode rows in
``ticket_alerts`` carry the unique key that makes retries and clustered Alertmanagers
idempotent. A resolved notification that arrives before any firing one of its episode (two
clustered Alertmanagers, a retry) is kept in ``ticket_resolved_episodes``: the late firing
then opens nothing. Each notification's group records how many alerts Alertmanager left out
(truncatedAlerts, webhook max_alerts). Work on one incident and on one fingerprint is serialised by
transaction-level advisory locks taken in one global order (lock_incidents: no deadlock).
Every change writes a ``ticket_events`` row (the audit trail) and, where it matters,
notification rows (the durable outbox); hooks fire after the commit.
"""
from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from core.clock import utcnow
from core.config import view
from core.logs import first_line
from webhook_receiver import episodes, escalation, notify, oncall
from webhook_receiver.episodes import Step
from webhook_receiver.hooks import Hooks
from webhook_receiver.payload import Alert, Notification, PayloadError, parse_obj
from webhook_receiver.ticket_store import (SYSTEM_ACTOR, Emits, add_event, clear_heartbeat_alarm, heartbeat_seen,
                                           hook_payload, lock_ticket)

log = logging.getLogger(__name__)

# Ingest locks (transaction-level advisory locks, see lock_incidents):
#   (ALL_INCIDENTS_LOCK, 0)       shared by every ingest transaction; exclusive for one that
#                                 would need more than LOCK_CAP keys (a storm payload, a big
#                                 reconcile): the number of locks a transaction holds stays bounded
#   (INCIDENT_LOCK, crc32(key))   one per incident key (the Alertmanager group in group mode)
#   (FINGERPRINT_LOCK, crc32(fp)) one per alert fingerprint (a fingerprint may sit in two groups)
INCIDENT_LOCK = 7_215_002
ALL_INCIDENTS_LOCK = 7_215_003
FINGERPRINT_LOCK = 7_215_004
LOCK_CAP = 1024
ATTACHED_LIST_CAP = 20  # alerts listed in one alert_attached event (its count says how many)
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
        self.incident_by = self.receiver.incident_by  # group | alert: what one ticket is
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
    attached: list = field(default_factory=list)  # incidents that new alerts joined (one entry each)
    attached_alerts: int = 0  # how many alerts joined them
    duplicates: int = 0
    heartbeats: int = 0
    stale: int = 0  # firing alerts of an episode whose resolved notification came first: no ticket
    truncated_alerts: int = 0  # alerts Alertmanager left out of the notification (max_alerts)
    failed: bool = False  # queued processing: the payload could not be applied (error recorded)

    def as_dict(self) -> dict:
        return {"payload_id": self.payload_id, "opened": self.opened, "reopened": self.reopened,
                "resolved": self.resolved, "attached": self.attached,
                "attached_alerts": self.attached_alerts, "duplicates": self.duplicates,
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
PROCESS_BATCH = 250           # payloads claimed and applied in one transaction by process_batch
PROCESS_BATCH_ALERTS = 20000  # ... and at most about this many alerts (a storm payload goes alone)
# errors of one payload (not of the database): its savepoint rolls back, the batch goes on
_PAYLOAD_ERRORS = (PayloadError, LookupError, TypeError, ValueError, AttributeError, psycopg.DataError,
                   psycopg.IntegrityError)

# The oldest pending payloads (up to a limit) that no other worker holds, and whether each is
# blocked: its group has an older pending payload outside this claim (another worker's, or one
# that failed in this pass): payloads of one group are applied in arrival order (a resolved never
# overtakes its firing). ``first_out``: per group, the lowest pending id not claimed here (the
# pending ids below the claim's last: the partial index ticket_payloads_pending_id).
_CLAIM = """
    with c as materialized (
        select id, group_key, body, attempts, alert_count from ticket_payloads
        where processed_at is null and id <> all(%s) order by id limit %s for update skip locked),
    g as (select q.group_key, min(q.id) first_out from ticket_payloads q
          where q.processed_at is null and q.id < (select max(id) from c) and q.id not in (select id from c)
            and q.group_key in (select group_key from c) group by 1)
    select c.id, c.body, c.attempts, c.alert_count, c.group_key, coalesce(g.first_out < c.id, false) blocked
    from c left join g on g.group_key = c.group_key order by c.id"""
_MARK_PROCESSED = """
    update ticket_payloads p set processed_at = now(), attempts = p.attempts + 1, result = u.r
    from jsonb_to_recordset(%s::jsonb) u(id bigint, r jsonb) where p.id = u.id"""


def process_next(ctx: Context, conn, now: datetime | None = None) -> IngestResult | None:
    """Apply the oldest stored payload whose group has no older pending one; None when idle."""
    out = process_batch(ctx, conn, now, limit=1)
    return out[0] if out else None


def process_batch(ctx: Context, conn, now: datetime | None = None, limit: int = PROCESS_BATCH,
                  skip: set[int] | None = None) -> list[IngestResult]:
    """Apply up to ``limit`` queued payloads in ONE transaction; [] when idle.

    One claim (FOR UPDATE SKIP LOCKED: other workers and replicas take other payloads) of the
    oldest pending payloads, cut at PROCESS_BATCH_ALERTS alerts; a payload whose group has an
    older pending one outside the claim waits (per-group arrival order). Their ingest locks are
    taken with ONE statement (lock_incidents: waiting, nothing held yet). Then the payloads are
    applied in *waves*: each wave takes the oldest payload of every group as long as it shares no
    incident key or fingerprint with an older payload still waiting, and reaches no incident one of
    them reaches (_not_overtaking), and applies them all together with the same few set-based
    statements one payload needs (apply_units: a wave of 300 notifications costs about what one
    does). So the end state is that of applying the payloads one by one in id order (tested
    against it: tests/integration/test_receiver_batches.py).
    A wave runs in a savepoint: when it fails for a reason other than the database, its payloads
    are applied again one by one, each in a savepoint of its own, so a bad one fails alone: its
    attempt and error are recorded, it is set aside after MAX_PROCESS_ATTEMPTS (it stays in the
    table), the rest of its group waits, and it is not taken again while its id is in ``skip``
    (the caller's pass). Heartbeat payloads and ones that do not parse go one by one too.
    Hooks fire after the commit; their stagers (the automation jobs) write inside it.
    """
    try:
        return _process_batch(ctx, conn, now, limit, skip if skip is not None else set())
    except _Busy:
        log.info("event=payload_batch_busy reason='ingest locks held by another batch'")
        return []


class _Busy(Exception):
    pass


def _process_batch(ctx: Context, conn, now: datetime | None, limit: int, skip: set[int]) -> list[IngestResult]:
    emits = Emits(ctx.hooks)
    out: list[IngestResult] = []
    with conn.transaction():
        rows = conn.execute(_CLAIM, (sorted(skip), limit)).fetchall()
        take, notes, keys, alerts = [], {}, set(), 0
        for row in rows:
            if row["blocked"]:
                continue  # later payloads of its group are blocked too (first_out is below them)
            if take and alerts + row["alert_count"] > PROCESS_BATCH_ALERTS:
                break
            try:
                notes[row["id"]] = note = parse_obj(row["body"])
                keys |= note_lock_keys(ctx, note)
            except _PAYLOAD_ERRORS:  # recorded as failed by _apply_payload; needs no lock
                pass
            take.append(row)
            alerts += row["alert_count"]
        if not take:
            return []
        try:  # the batch's only lock statement: it waits (holding nothing another ingest waits for)
            lock_incidents(conn, keys, wait=True)
        except psycopg.errors.QueryCanceled:  # held by another batch beyond the statement timeout:
            raise _Busy() from None           # that one does the work; these wait for the next pass
        now = now or utcnow()
        remaining = list(take)  # id order
        units: dict[int, _Unit] = {}  # payload id -> its unit (built once; one left out waits as it is)

        def unit_of(row) -> _Unit | None:
            note = notes.get(row["id"])
            if note is None:
                return None
            if row["id"] not in units:
                units[row["id"]] = _unit(ctx, note.alerts, note, IngestResult(payload_id=row["id"]), payload=row)
            return units[row["id"]]

        applied: list[dict] = []
        touched: set[int] = set()  # episodes seen again: last_seen = now, once for the batch
        while remaining:
            # a wave: the oldest payload of each group, unless it shares an incident key or a fingerprint
            # with an older payload still waiting (of the wave or not: it must not overtake it); those
            # older ones go along as ``blockers`` (_not_overtaking checks the incidents alerts reach).
            # A heartbeat payload, or one that does not parse, goes alone when it is the oldest head.
            wave, blockers, solo = [], [], []
            seen_groups, seen_keys, seen_fps = set(), set(), set()
            for row in remaining:
                u = unit_of(row)
                head = row["group_key"] not in seen_groups
                seen_groups.add(row["group_key"])
                if head and (u is None or any(a.alertname in ctx.heartbeats for a in u.note.alerts)):
                    if not wave:
                        solo.append(row)
                    break
                if u is None:
                    continue
                clash = not head or seen_keys & u.ikeys or seen_fps & u.fps
                seen_keys |= u.ikeys
                seen_fps |= u.fps
                (blockers if clash else wave).append(u)
            done: set[int] = set()
            failed_groups: set = set()
            for row in solo:  # one by one, each in its savepoint (records its own result)
                res = _apply_payload(ctx, conn, row, now, emits, note=notes.get(row["id"]))
                out.append(res)
                if res.failed:
                    skip.add(row["id"])
                    failed_groups.add(row["group_key"])  # the rest of its group waits for it
                else:
                    done.add(row["id"])
            if len(wave) > 1:  # none may reach an incident an older one reaches (an alert in two groups)
                wave = _not_overtaking(conn, wave, blockers)
            if wave:
                mine, seen = Emits(ctx.hooks), []
                try:
                    with conn.transaction():  # a savepoint: the wave rolls back alone
                        apply_units(ctx, conn, wave, now, mine, touched=seen)
                except _PAYLOAD_ERRORS as exc:
                    log.warning("event=payload_wave_failed payloads=%s error=%r: applying them one by one",
                                len(wave), first_line(exc))
                    for u in wave:
                        units.pop(u.payload["id"], None)
                        res = _apply_payload(ctx, conn, u.payload, now, emits, note=notes.get(u.payload["id"]))
                        out.append(res)
                        if res.failed:
                            skip.add(u.payload["id"])
                            failed_groups.add(u.payload["group_key"])
                        else:
                            done.add(u.payload["id"])
                else:
                    emits.merge(mine)
                    touched.update(seen)
                    for u in wave:
                        _log_applied(u)
                        out.append(u.res)
                        applied.append({"id": u.payload["id"], "r": u.res.as_dict()})
                        done.add(u.payload["id"])
            remaining = [r for r in remaining if r["id"] not in done and r["group_key"] not in failed_groups]
        if touched:
            conn.execute(_TOUCH, (now, sorted(touched)))
        if applied:
            conn.execute(_MARK_PROCESSED, (json.dumps(applied),))
    emits.fire()
    out.sort(key=lambda r: r.payload_id)
    return out


def _not_overtaking(conn, wave: list, blockers: list) -> list:
    """The units of ``wave`` that reach no incident an older payload (of the wave, or an older
    one waiting: ``blockers``) reaches: its own incident keys, and those of the tickets holding
    its episodes or a firing episode of its fingerprints (an alert in two groups: its episode
    superseded or resolved on the other group's ticket). The oldest is always kept; a unit left
    out (and so waiting) keeps its incidents from the later ones too. One statement."""
    last = wave[-1].payload["id"]
    both = [u for u in wave + [b for b in blockers if b.payload["id"] < last] if u.alerts]
    if len(both) < 2:
        return wave
    reach: dict[str, set] = {}
    for r in conn.execute(_REACH, (json.dumps([{"f": a.fingerprint, "s": a.starts_at.isoformat()}
                                               for u in both for a in u.alerts]),
                                   sorted(set().union(*(u.fps for u in both))))).fetchall():
        reach.setdefault(r["fingerprint"], set()).add(r["incident_key"])
    in_wave = {id(u) for u in wave}
    left_out, taken = set(), set()
    for u in sorted(both, key=lambda u: u.payload["id"]):
        mine = set(u.ikeys).union(*(reach.get(f, ()) for f in u.fps))
        if mine & taken and id(u) in in_wave:
            left_out.add(id(u))
        taken |= mine
    return [u for u in wave if id(u) not in left_out]


class LocksBusy(Exception):
    """A payload's incident locks are held by another transaction (apply_alerts with wait=False)."""


def _apply_payload(ctx: Context, conn, row: dict, now: datetime, emits: Emits,
                   note: Notification | None = None) -> IngestResult:
    """Apply one claimed payload (``note``: its parsed body) in a savepoint, its ingest locks
    held by the caller (process_batch)."""
    res = IngestResult(payload_id=row["id"])
    mine = Emits(ctx.hooks)
    try:
        with conn.transaction():  # a savepoint: this payload alone rolls back on its own error
            apply_notification(ctx, conn, note if note is not None else parse_obj(row["body"]), now, res, mine,
                               locked=True)
            conn.execute("update ticket_payloads set processed_at = now(), attempts = attempts + 1, result = %s "
                         "where id = %s", (Jsonb(res.as_dict()), row["id"]))
    except _PAYLOAD_ERRORS as exc:
        failed = f"{type(exc).__name__}: {exc}"
        give_up = row["attempts"] + 1 >= MAX_PROCESS_ATTEMPTS
        conn.execute("update ticket_payloads set attempts = attempts + 1, error = %s, "
                     "processed_at = case when %s then now() end where id = %s and processed_at is null",
                     (failed[:1000], give_up, row["id"]))
        log.error("event=payload_failed payload_id=%s attempt=%s gave_up=%s error=%r", row["id"],
                  row["attempts"] + 1, give_up, failed)
        return IngestResult(payload_id=row["id"], failed=True)
    emits.merge(mine)
    return res


def _log_applied(u: "_Unit") -> None:
    """What apply_notification logs for one notification (a wave applies many)."""
    note = u.note
    if note is not None and note.truncated_alerts:
        log.warning("event=notification_truncated group_key=%r alerts=%s truncated_alerts=%s "
                    "hint='raise alertmanager.max_alerts or split the group (group_by)'",
                    note.group_key, len(note.alerts), note.truncated_alerts)
    if u.res.stale:
        log.info("event=late_firing_ignored group_key=%r alerts=%s reason='resolved notification came first'",
                 note.group_key if note is not None else None, u.res.stale)


def apply_notification(ctx: Context, conn, note: Notification, now: datetime, res: IngestResult,
                       emits: Emits, wait: bool = True, locked: bool = False) -> None:
    if not locked:  # before anything else (the heartbeat rows too): see lock_incidents
        if not lock_incidents(conn, note_lock_keys(ctx, note), wait=wait):
            raise LocksBusy()
        locked = True
    res.truncated_alerts = note.truncated_alerts
    if note.truncated_alerts:
        log.warning("event=notification_truncated group_key=%r alerts=%s truncated_alerts=%s "
                    "hint='raise alertmanager.max_alerts or split the group (group_by)'",
                    note.group_key, len(note.alerts), note.truncated_alerts)
    alerts = []
    for a in note.alerts:
        if a.alertname in ctx.heartbeats:
            if a.status == "firing":
                _heartbeat_seen(ctx, conn, a.alertname, now, emits)
            res.heartbeats += 1
        else:
            alerts.append(a)
    stale = res.stale
    apply_alerts(ctx, conn, alerts, None, now, res, emits, note=note, wait=wait, locked=locked)
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


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _episode_row(ticket_id: int, a: Alert, group_id: int | None) -> dict:
    return {"ticket_id": ticket_id, "fingerprint": a.fingerprint, "starts_at": a.starts_at.isoformat(),
            "ends_at": _iso(a.ends_at) if a.status == "resolved" else None, "status": a.status,
            "labels": a.labels, "annotations": a.annotations, "group_id": group_id}


def _incident_fields(alerts: list[Alert], group_labels: dict) -> dict:
    """What a ticket says about its alerts: the lead alert (most severe) names it; labels are the
    group's labels plus what every alert shares; annotations what every alert shares."""
    lead = alerts[episodes.lead_index([a.severity for a in alerts], [a.fingerprint for a in alerts])]
    labels = {**episodes.common([a.labels for a in alerts]), **group_labels}
    annotations = episodes.common([a.annotations for a in alerts])
    n = len({a.fingerprint for a in alerts})
    return {"lead": lead, "labels": labels, "annotations": annotations, "alerts": n,
            "summary": episodes.title(lead.alertname, lead.service, n, annotations.get("summary", ""))}


# the stored episodes of the notification's alerts (src 'e') and those whose resolved notification
# came first (src 'r'); the keys go as one JSON parameter (cheaper than arrays of 10,000 values)
_SELECT_KNOWN = """
    with u as materialized (select f, s from jsonb_to_recordset(%s::jsonb) as r(f text, s timestamptz))
    select 'e' src, e.id, e.fingerprint, e.starts_at, e.status, e.ticket_id from ticket_alerts e
    join u on e.fingerprint = u.f and e.starts_at = u.s
    union all
    select 'r', null, r.fingerprint, r.starts_at, null, null from ticket_resolved_episodes r
    join u on r.fingerprint = u.f and r.starts_at = u.s"""
# Why no ingest transaction can deadlock on these locks (by construction):
# 1. A transaction WAITS for ingest locks only once, in its first lock statement, while it holds
#    no ingest lock and no row lock that another ingest transaction could wait for (the
#    processor holds only its claimed payload rows, which others skip: SKIP LOCKED; reconcile
#    holds only its own try-lock). Every later acquisition in the transaction (the next claim
#    round of a batch, heartbeat.check, which holds ticket_heartbeats rows) only TRIES and gives
#    up (LocksBusy: the batch ends, the heartbeat check waits for its next pass).
# 2. That one waiting statement takes its locks in one global order: (ALL_INCIDENTS_LOCK, 0)
#    first, then (class, key) ascending. A waiter holds only locks below the one it waits for,
#    so a cycle of waiters is impossible.
# 3. The rows apply_alerts writes belong to the incidents and fingerprints it holds locks on, so
#    two ingest transactions do not wait for each other's rows while they hold these locks. The
#    one exception: an alert that sits in two Alertmanager groups whose tickets each hold an
#    episode of the other's alerts (routes with `continue`); its counts may then cross, and
#    PostgreSQL's deadlock detector rolls one batch back, which is applied again by the next pass.
# Payloads of one group are also serialised by the claim (process_batch: per-group order).
_LOCK_SHARED_ALL = "select pg_advisory_xact_lock_shared(%s, 0)"
_LOCK_ALL = "select pg_advisory_xact_lock(%s, 0)"
_LOCK = ("select count(pg_advisory_xact_lock(c, k)) from "
         "(select c, k from unnest(%s::int[], %s::int[]) u(c, k) order by 1, 2) s")
_TRY_LOCK = ("select pg_try_advisory_xact_lock_shared(%s, 0) and coalesce((select bool_and(ok) from "
             "(select pg_try_advisory_xact_lock(c, k) ok from "
             "(select c, k from unnest(%s::int[], %s::int[]) u(c, k) order by 1, 2) s) t), true) ok")
_TRY_LOCK_ALL = "select pg_try_advisory_xact_lock(%s, 0) ok"


def _int4(key: str) -> int:
    h = zlib.crc32(key.encode())
    return h - (1 << 32) if h >= (1 << 31) else h


def lock_keys(incident_keys, fingerprints) -> set[tuple[int, int]]:
    """The (class, key) advisory locks of these incident keys and fingerprints."""
    out = {(INCIDENT_LOCK, _int4(k)) for k in incident_keys}
    out.update((FINGERPRINT_LOCK, _int4(f)) for f in fingerprints)
    return out


def note_lock_keys(ctx: Context, note: Notification) -> set[tuple[int, int]]:
    """The locks apply_notification needs for ``note`` (heartbeats excepted: they take none)."""
    fps = {a.fingerprint for a in note.alerts if a.alertname not in ctx.heartbeats}
    return lock_keys({episodes.incident_key(ctx.incident_by, note.group_key, f) for f in fps}, fps)


def lock_incidents(conn, keys: set[tuple[int, int]], wait: bool = True) -> bool:
    """Take the ingest locks ``keys`` (see above); ``wait`` False: only if free, False when not
    (some may then be held until the transaction ends). More than LOCK_CAP keys: the exclusive
    (ALL_INCIDENTS_LOCK, 0) instead, a single lock."""
    if not keys:
        return True
    if len(keys) > LOCK_CAP:
        if wait:
            conn.execute(_LOCK_ALL, (ALL_INCIDENTS_LOCK,))
            return True
        return conn.execute(_TRY_LOCK_ALL, (ALL_INCIDENTS_LOCK,)).fetchone()["ok"]
    cls, ks = zip(*sorted(keys))
    if wait:
        conn.execute(_LOCK_SHARED_ALL, (ALL_INCIDENTS_LOCK,))
        conn.execute(_LOCK, (list(cls), list(ks)))
        return True
    return bool(conn.execute(_TRY_LOCK, (ALL_INCIDENTS_LOCK, list(cls), list(ks))).fetchone()["ok"])


_INSERT_TICKETS = """
    insert into tickets (incident_key, fingerprint, status, alertname, service, severity, tier, team, labels,
                         annotations, summary, generator_url, group_id, starts_at, opened_at, policy, entry_level,
                         level, level_since, repeats, next_escalation_at, assignee, updated_at, alert_count,
                         firing_count)
    select r.incident_key, r.fingerprint, 'open', r.alertname, r.service, r.severity, r.tier, r.team, r.labels,
           r.annotations, r.summary, r.generator_url, r.group_id, r.starts_at, %(now)s, r.policy, r.level,
           r.level, %(now)s, 0, r.due, r.assignee, %(now)s, r.alerts, r.alerts
    from jsonb_to_recordset(%(rows)s) as r(incident_key text, fingerprint text, alertname text, service text,
         severity text, tier int, team text, labels jsonb, annotations jsonb, summary text, generator_url text,
         starts_at timestamptz, policy text, level int, due timestamptz, assignee text, alerts int, group_id bigint)
    returning *"""
_REOPEN_TICKETS = """
    update tickets t set status = 'open', acknowledged_at = null, acknowledged_by = null, resolved_at = null,
        resolved_by = null, reopened_count = t.reopened_count + 1, last_reopened_at = %(now)s, level = r.level,
        level_since = %(now)s, repeats = 0, next_escalation_at = r.due, assignee = r.assignee, labels = r.labels,
        annotations = r.annotations, group_id = coalesce(r.group_id, t.group_id), updated_at = %(now)s
    from jsonb_to_recordset(%(rows)s) as r(id bigint, level int, due timestamptz, assignee text, labels jsonb,
                                          annotations jsonb, group_id bigint)
    where t.id = r.id returning t.*"""
_ATTACH_TICKETS = """
    update tickets t set labels = r.labels, annotations = r.annotations, severity = r.severity, updated_at = %(now)s
    from jsonb_to_recordset(%(rows)s) as r(id bigint, labels jsonb, annotations jsonb, severity text)
    where t.id = r.id returning t.*"""
# ... and, per ticket, how many of the inserted episodes' alerts (fingerprints) the ticket had no
# episode of before this statement: what its alert_count grows by (the outer scan of
# ticket_alerts runs on the statement's snapshot, so it does not see the rows inserted here)
_INSERT_EPISODES = """
    with ins as (
        insert into ticket_alerts (ticket_id, fingerprint, starts_at, ends_at, status, labels, annotations, group_id,
                                   first_seen, last_seen)
        select r.ticket_id, r.fingerprint, r.starts_at, r.ends_at, r.status, r.labels, r.annotations, r.group_id,
               %(now)s, %(now)s
        from jsonb_to_recordset(%(rows)s) as r(ticket_id bigint, fingerprint text, starts_at timestamptz,
             ends_at timestamptz, status text, labels jsonb, annotations jsonb, group_id bigint)
        on conflict (fingerprint, starts_at) do nothing
        returning id, ticket_id, fingerprint)
    select ins.ticket_id, count(distinct ins.fingerprint) as new from ins
    where not exists (select 1 from ticket_alerts x where x.fingerprint = ins.fingerprint
                      and x.ticket_id = ins.ticket_id and x.id <> ins.id)
    group by 1"""
_INSERT_EVENTS = """
    insert into ticket_events (ticket_id, kind, actor, details, at)
    select r.ticket_id, r.kind, %(actor)s, r.details, %(now)s
    from jsonb_to_recordset(%(rows)s) as r(ticket_id bigint, kind text, details jsonb)
    returning id, ticket_id, kind"""
_TOUCH = "update ticket_alerts set last_seen = %s where id = any(%s::bigint[])"
# an alert has one firing episode at a time: a newer startsAt of a fingerprint ends its older ones
# (Alertmanager moved on; their resolved notification may never come)
# (each fingerprint's newest startsAt is one backward step of the unique (fingerprint, starts_at)
# index, and its firing episodes come from the partial index of firing episodes: a flapping alert
# gathers an episode per re-fire, and reading them all on every notification was the costliest
# statement of the storm bench after a few runs)
_SUPERSEDE = """
    update ticket_alerts a set status = 'resolved', ends_at = coalesce(a.ends_at, n.starts_at), last_seen = %(now)s
    from (select f.fp as fingerprint,
                 (select max(x.starts_at) from ticket_alerts x where x.fingerprint = f.fp) as starts_at
          from unnest(%(fps)s::text[]) as f(fp)) n
    where a.fingerprint = n.fingerprint and a.status = 'firing' and a.starts_at < n.starts_at
    returning a.ticket_id, a.fingerprint"""
# An incident's counts after a change, without reading its whole history (a flapping incident
# gathers an episode per re-fire): firing_count from its firing episodes only (the index on
# (ticket_id, status)); alert_count (its distinct alerts) grows by the alerts new to it (``n``:
# from _INSERT_EPISODES), except on a ticket opened by this very change (``fresh``), counted whole
# (it holds this change's episodes only)
_COUNT = """
    update tickets t set
        alert_count = greatest(case when u.fresh then (select count(distinct a.fingerprint) from ticket_alerts a
                                                        where a.ticket_id = t.id)
                                    else t.alert_count + u.n end, 1),
        firing_count = (select count(*) from ticket_alerts a where a.ticket_id = t.id and a.status = 'firing')
    from unnest(%s::bigint[], %s::int[], %s::bool[]) u(id, n, fresh)
    where t.id = u.id
    returning t.id, t.status, t.alertname, t.service, t.summary, t.annotations, t.alert_count, t.firing_count"""


@dataclass(eq=False)
class _Unit:
    """One notification's alerts (or a bare list of alerts) applied by apply_units."""
    alerts: list          # non-heartbeat alerts, one per episode, in (fingerprint, startsAt) order
    keys: list            # their incident keys, index for index
    res: IngestResult
    note: Notification | None = None
    group_id: int | None = None
    payload: dict | None = None  # the claimed ticket_payloads row (process_batch)
    ikeys: set = field(default_factory=set)
    fps: set = field(default_factory=set)
    group_labels: dict = field(default_factory=dict)


def _unit(ctx: Context, alerts: list[Alert], note: Notification | None, res: IngestResult, group_id=None,
          payload: dict | None = None) -> _Unit:
    group_key = note.group_key if note is not None else None
    by_episode: dict = {}
    for a in alerts:  # Alertmanager never sends an episode twice in one notification; if it did, the end wins
        if a.alertname in ctx.heartbeats and note is not None:
            continue  # apply_notification handles them (process_batch applies such payloads alone)
        k = (a.fingerprint, a.starts_at)
        if k not in by_episode or a.status == "resolved":
            by_episode[k] = a
    alerts = sorted(by_episode.values(), key=lambda a: (a.fingerprint, a.starts_at))
    keys = [episodes.incident_key(ctx.incident_by, group_key, a.fingerprint) for a in alerts]
    if note is not None:
        res.truncated_alerts = note.truncated_alerts
    return _Unit(alerts, keys, res, note, group_id, payload, set(keys), {a.fingerprint for a in alerts},
                 dict(note.group_labels) if note is not None else {})


def apply_alerts(ctx: Context, conn, alerts: list[Alert], group_id, now: datetime, res: IngestResult,
                 emits: Emits, note: Notification | None = None, wait: bool = True,
                 reason: str | None = None, locked: bool = False) -> None:
    """Apply alerts to their incidents with a few set-based statements, whatever their number.

    Each alert gets its episode step (episodes.decide) against its incident (key: the
    notification's groupKey, or its fingerprint: receiver.incident_by); the new firing alerts of
    an incident open, reopen or join it ONCE (episodes.decide_incident); an incident resolves
    when its last firing episode ended. With ``note``, its Alertmanager group is recorded too
    (group_id comes from that). ``wait`` False: raise LocksBusy instead of waiting for a lock
    (the caller holds other locks of this transaction already); ``locked``: the caller holds
    them already (lock_incidents). ``reason``: the resolved event's reason when an incident
    resolves (default: the alert(s) resolved)."""
    u = _unit(ctx, alerts, None, res, group_id)
    u.note = note  # the heartbeats were taken out by apply_notification (a bare list keeps them)
    if note is not None:
        u.group_labels = dict(note.group_labels)
        u.keys = [episodes.incident_key(ctx.incident_by, note.group_key, a.fingerprint) for a in u.alerts]
        u.ikeys = set(u.keys)
    if not locked and u.alerts:
        # holding locks already (wait False): take these only if free, before anything else
        if not lock_incidents(conn, lock_keys(u.ikeys, u.fps), wait=wait):
            raise LocksBusy()
    apply_units(ctx, conn, [u], now, emits, reason=reason)


_UPSERT_GROUPS = """
    insert into ticket_groups (group_key, receiver, group_labels, last_alert_count, truncated_alerts,
                               max_truncated_alerts)
    select r.group_key, r.receiver, r.group_labels, r.n, r.t, r.t
    from jsonb_to_recordset(%s::jsonb) r(group_key text, receiver text, group_labels jsonb, n int, t int)
    on conflict (group_key) do update set last_seen = now(), receiver = excluded.receiver,
        last_alert_count = excluded.last_alert_count, truncated_alerts = excluded.truncated_alerts,
        max_truncated_alerts = greatest(ticket_groups.max_truncated_alerts, excluded.truncated_alerts)
    returning id, group_key"""
# the incidents the alerts of a wave (and the older payloads it must not overtake) reach: those
# holding their episodes, and those holding a firing episode of their fingerprints (superseded)
_REACH = """
    with u as materialized (select f, s from jsonb_to_recordset(%s::jsonb) as r(f text, s timestamptz))
    select e.fingerprint, t.incident_key from ticket_alerts e join u on e.fingerprint = u.f and e.starts_at = u.s
    join tickets t on t.id = e.ticket_id
    union
    select e.fingerprint, t.incident_key from ticket_alerts e join tickets t on t.id = e.ticket_id
    where e.fingerprint = any(%s::text[]) and e.status = 'firing'"""


def apply_units(ctx: Context, conn, units: list[_Unit], now: datetime, emits: Emits,
                reason: str | None = None, touched: list | None = None) -> None:
    """Apply the alerts of several notifications (units) together: the reads and writes of
    apply_alerts, each ONE statement for all of them. The units must not interfere: no shared
    incident key or fingerprint, no incident reached by two (process_batch builds its waves so,
    _not_overtaking), and their ingest locks are held. ``touched``: the episodes seen again are
    added to it instead of having their last_seen set now (process_batch sets it once for the
    whole batch: nothing reads it in between)."""
    with conn.pipeline():  # the reads go out together: one round trip
        cur_group = None
        groups = {u.note.group_key: u.note for u in units if u.note is not None and u.note.group_key}
        if groups:
            cur_group = conn.execute(_UPSERT_GROUPS, (json.dumps([
                {"group_key": n.group_key, "receiver": n.receiver, "group_labels": n.group_labels,
                 "n": len(n.alerts), "t": n.truncated_alerts} for n in groups.values()]),))
        live = [u for u in units if u.alerts]
        if live:
            cur_known = conn.execute(_SELECT_KNOWN, (json.dumps([{"f": a.fingerprint, "s": a.starts_at.isoformat()}
                                                                 for u in live for a in u.alerts]),))
            # unresolved incidents, and those resolved recently enough to be reopened
            cutoff = now - timedelta(seconds=ctx.reopen_window) if ctx.reopen_window > 0 else now + timedelta(days=1)
            # no key update: it serialises ticket writers as FOR UPDATE does, but lets the foreign
            # key checks of rows inserted for these tickets elsewhere (notifications sent, jobs'
            # attachments and events) go on instead of waiting for a whole batch
            cur_t = conn.execute("select * from tickets where incident_key = any(%s) "
                                 "and (status <> 'resolved' or resolved_at >= %s) for no key update",
                                 (sorted(set().union(*(u.ikeys for u in live))), cutoff))
        if cur_group is not None:
            gid = {r["group_key"]: r["id"] for r in cur_group.fetchall()}
            for u in units:
                if u.note is not None and u.note.group_key:
                    u.group_id = gid[u.note.group_key]
        if not live:
            return
        known, resolved_first = {}, set()
        for r in cur_known.fetchall():
            if r["src"] == "e":
                known[(r["fingerprint"], r["starts_at"])] = r
            else:
                resolved_first.add((r["fingerprint"], r["starts_at"]))
        active: dict[str, dict] = {}
        recent: dict[str, dict] = {}
        for r in cur_t.fetchall():
            k = r["incident_key"]
            if r["status"] != "resolved":
                active[k] = r
            elif k not in recent or r["resolved_at"] > recent[k]["resolved_at"]:
                recent[k] = r
        # --- the rule, per alert then per incident (pure) ---
        touch: list[int] = []
        ended: list[tuple[int, datetime | None]] = []
        owner: dict[int, _Unit] = {}  # ticket id -> the unit that touched it
        ended_tickets: set[int] = set()
        remember: list[tuple] = []
        episode_rows: list[dict] = []
        opens, reopens, attaches = [], [], []
        for u in live:
            res = u.res
            new_by_key: dict[str, list[tuple[Alert, Step]]] = {}
            for a, k in zip(u.alerts, u.keys):
                ep = known.get((a.fingerprint, a.starts_at))
                step = episodes.decide(a.status, ep["status"] if ep is not None else None,
                                       (a.fingerprint, a.starts_at) in resolved_first, k in active, k in recent)
                if step is Step.DUPLICATE:
                    if ep is not None:
                        touch.append(ep["id"])
                    res.duplicates += 1
                elif step is Step.RESOLVE_EPISODE:
                    ended.append((ep["id"], a.ends_at))
                    ended_tickets.add(ep["ticket_id"])
                    owner[ep["ticket_id"]] = u
                elif step is Step.LATE:
                    res.stale += 1
                elif step is Step.REMEMBER_RESOLVED:
                    # its firing, should it still arrive (the other clustered Alertmanager, a retry), opens nothing
                    res.duplicates += 1
                    remember.append((a.fingerprint, a.starts_at, a.ends_at))
                elif step is Step.RESOLVE_ACTIVE:  # the end of an episode never seen firing: recorded on the incident
                    episode_rows.append(_episode_row(active[k]["id"], a, u.group_id))
                    ended_tickets.add(active[k]["id"])
                    owner[active[k]["id"]] = u
                else:  # ATTACH / REOPEN / OPEN: new firing alerts of the incident
                    new_by_key.setdefault(k, []).append((a, step))
            for k, items in new_by_key.items():
                ist = episodes.decide_incident([s for _, s in items])
                new = [a for a, _ in items]
                if ist is episodes.IncidentStep.OPEN:
                    opens.append((u, k, new))
                elif ist is episodes.IncidentStep.REOPEN:
                    reopens.append((u, recent[k], new))
                elif ist is episodes.IncidentStep.ATTACH:
                    attaches.append((u, active[k], new))

        # --- the writes: a few set-based statements for all the units ---
        if touch and touched is not None:
            touched.extend(touch)
        elif touch:
            conn.execute(_TOUCH, (now, touch))
        if ended:
            conn.execute("update ticket_alerts e set status = 'resolved', ends_at = u.e, last_seen = %s "
                         "from jsonb_to_recordset(%s::jsonb) u(id bigint, e timestamptz) where e.id = u.id",
                         (now, json.dumps([{"id": i, "e": _iso(e)} for i, e in ended])))
        events: list[dict] = []
        opened = _open_incidents(ctx, conn, opens, now, events)
        reopened = _reopen_incidents(ctx, conn, reopens, now, events)
        attached = _attach_alerts(conn, attaches, now, events)
        for u, t, new in opened + reopened + attached:
            owner[t["id"]] = u
            episode_rows.extend(_episode_row(t["id"], a, u.group_id) for a in new)
        grown: dict[int, int] = {}  # ticket id -> alerts (fingerprints) new to it
        if episode_rows:
            grown = {r["ticket_id"]: r["new"] for r in
                     conn.execute(_INSERT_EPISODES, {"now": now, "rows": Jsonb(episode_rows)}).fetchall()}
        event_ids: dict[tuple[int, str], int] = {}
        if events:
            for r in conn.execute(_INSERT_EVENTS, {"actor": SYSTEM_ACTOR, "now": now, "rows": Jsonb(events)}):
                event_ids[(r["ticket_id"], r["kind"])] = r["id"]
        notify.enqueue_many(ctx, conn, [(t, "opened") for _, t, _ in opened] + [(t, "reopened") for _, t, _ in reopened])
        # alert_labels: for the jobs stager (does a playbook match?), not forwarded (Automation.on_opened)
        for u, t, new in opened:
            emits.add("ticket_opened", **hook_payload(ctx, t, SYSTEM_ACTOR, alerts=len(new),
                                                      alert_labels=[dict(a.labels) for a in new]))
            u.res.opened.append(t["id"])
        for u, t, new in reopened:
            emits.add("ticket_reopened", **hook_payload(ctx, t, SYSTEM_ACTOR, alerts=len(new),
                                                        alert_labels=[dict(a.labels) for a in new]))
            u.res.reopened.append(t["id"])
        for u, t, new in attached:  # recorded on the open incident: no page
            emits.add("ticket_updated", **hook_payload(ctx, t, SYSTEM_ACTOR, change="alert_attached", alerts=len(new),
                                                       event_id=event_ids.get((t["id"], "alert_attached")),
                                                       attached_labels=[dict(a.labels) for a in new]))
            u.res.attached.append(t["id"])
            u.res.attached_alerts += len(new)
        if remember:
            fps_, starts_, ends_ = zip(*remember)
            conn.execute(
                "insert into ticket_resolved_episodes (fingerprint, starts_at, ends_at, recorded_at) "
                "select f, s, e, %s from unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) u(f, s, e) "
                "on conflict (fingerprint, starts_at) do nothing", (now, list(fps_), list(starts_), list(ends_)))
            # kept as long as the raw payloads: far longer than any retry or cluster delay
            conn.execute("delete from ticket_resolved_episodes where recorded_at < %s",
                         (now - timedelta(seconds=ctx.raw_retention),))
        # a newer episode of a fingerprint ends its older firing ones (on whichever ticket). Only
        # where an episode was recorded now: after every apply no firing episode of its alerts is
        # older than their newest, so an alert that adds no episode leaves nothing to end
        by_fp = {f: u for u in live for f in u.fps}
        new_fps = sorted({r["fingerprint"] for r in episode_rows})
        if new_fps:
            for r in conn.execute(_SUPERSEDE, {"now": now, "fps": new_fps}).fetchall():
                ended_tickets.add(r["ticket_id"])
                owner.setdefault(r["ticket_id"], by_fp[r["fingerprint"]])
        touched = ended_tickets | {t["id"] for _, t, _ in opened + reopened + attached}
        if touched:
            fresh = {t["id"] for _, t, _ in opened}
            ids = sorted(touched)
            counted = conn.execute(_COUNT, (ids, [grown.get(i, 0) for i in ids], [i in fresh for i in ids])).fetchall()
            titles = []
            for r in counted:
                want = episodes.title(r["alertname"], r["service"], r["alert_count"],
                                      (r["annotations"] or {}).get("summary", ""))
                if want != r["summary"] and r["alert_count"] > 1:
                    titles.append((r["id"], want))
            if titles:
                ids, texts = zip(*titles)
                conn.execute("update tickets t set summary = u.s from unnest(%s::bigint[], %s::text[]) u(id, s) "
                             "where t.id = u.id", (list(ids), list(texts)))
            done = [r["id"] for r in counted
                    if episodes.incident_resolves(r["status"], r["firing_count"], r["id"] in ended_tickets)]
            if done:
                per_unit: dict[int, int] = {}
                for tid in done:
                    per_unit[id(owner[tid])] = per_unit.get(id(owner[tid]), 0) + 1
                why = {tid: reason or ("the alert resolved" if per_unit[id(owner[tid])] == 1
                                       or ctx.incident_by == "alert" else "its alerts resolved") for tid in done}
                for t in _resolve_many(ctx, conn, done, SYSTEM_ACTOR, why, now, emits):
                    owner[t["id"]].res.resolved.append(t["id"])
        emits.stage(conn)  # the hooks' stagers (automation jobs): in this transaction


def _policy_state(ctx: Context, tier: int, team: str, now: datetime, pol=None):
    pol = pol or ctx.policy(escalation.policy_name_for(ctx.escalation, team))
    state, due = escalation.initial_state(tier, pol, now)
    return pol, state, due, ctx.assignee_for(pol, state.level, team, now)


def _open_incidents(ctx: Context, conn, opens: list, now: datetime, events: list) -> list[tuple]:
    """New tickets for new incidents: one statement for all of them (one per incident, not per alert);
    ``opens``: (unit, incident key, its new alerts)."""
    if not opens:
        return []
    rows, meta = [], {}
    for u, key, new in opens:
        f = _incident_fields(new, u.group_labels)
        lead = f["lead"]
        pol, state, due, assignee = _policy_state(ctx, lead.tier, lead.team, now)
        meta[key] = (u, new, pol, assignee)
        rows.append({"incident_key": key, "fingerprint": lead.fingerprint, "alertname": lead.alertname,
                     "service": lead.service, "severity": lead.severity, "tier": lead.tier, "team": lead.team,
                     "labels": f["labels"], "annotations": f["annotations"], "summary": f["summary"],
                     "generator_url": lead.generator_url, "starts_at": min(a.starts_at for a in new).isoformat(),
                     "policy": pol.name, "level": state.level, "due": _iso(due), "assignee": assignee,
                     "alerts": f["alerts"], "group_id": u.group_id})
    out = []
    for t in conn.execute(_INSERT_TICKETS, {"now": now, "rows": Jsonb(rows)}).fetchall():
        u, new, pol, assignee = meta[t["incident_key"]]
        events.append({"ticket_id": t["id"], "kind": "opened", "details": {
            "level": t["level"], "level_name": pol.level(t["level"]).name, "assignee": assignee,
            "starts_at": t["starts_at"].isoformat(), "alerts": len(new)}})
        out.append((u, t, new))
    return out


def _reopen_incidents(ctx: Context, conn, reopens: list, now: datetime, events: list) -> list[tuple]:
    """Incidents resolved within the reopen window whose alerts fire again: reopened, once each;
    ``reopens``: (unit, ticket, its new alerts)."""
    if not reopens:
        return []
    rows, meta = [], {}
    for u, t, new in reopens:
        f = _incident_fields(new, u.group_labels)
        pol, state, due, assignee = _policy_state(ctx, f["lead"].tier, t["team"], now, ctx.policy(t["policy"]))
        meta[t["id"]] = (u, new, assignee)
        rows.append({"id": t["id"], "level": state.level, "due": _iso(due), "assignee": assignee,
                     "labels": f["labels"], "annotations": f["annotations"], "group_id": u.group_id})
    out = []
    for t in conn.execute(_REOPEN_TICKETS, {"now": now, "rows": Jsonb(rows)}).fetchall():
        u, new, assignee = meta[t["id"]]
        events.append({"ticket_id": t["id"], "kind": "reopened", "details": {
            "starts_at": min(a.starts_at for a in new).isoformat(), "level": t["level"], "assignee": assignee,
            "alerts": len(new)}})
        out.append((u, t, new))
    return out


def _attach_alerts(conn, attaches: list, now: datetime, events: list) -> list[tuple]:
    """New alerts joining open incidents: recorded (labels narrowed to what all share, the most
    severe severity kept), ONE event per incident with a count and a capped list; no page;
    ``attaches``: (unit, ticket, its new alerts)."""
    if not attaches:
        return []
    rows, meta = [], {}
    for u, t, new in attaches:
        f = _incident_fields(new, u.group_labels)
        meta[t["id"]] = (u, new)
        rows.append({"id": t["id"], "labels": {**episodes.common([t["labels"] or {}, f["labels"]]), **u.group_labels},
                     "annotations": episodes.common([t["annotations"] or {}, f["annotations"]]),
                     "severity": episodes.more_severe(t["severity"], f["lead"].severity)})
    out = []
    for t in conn.execute(_ATTACH_TICKETS, {"now": now, "rows": Jsonb(rows)}).fetchall():
        u, new = meta[t["id"]]
        events.append({"ticket_id": t["id"], "kind": "alert_attached", "details": {
            "count": len(new), "starts_at": new[0].starts_at.isoformat(),
            "alerts": [{"fingerprint": a.fingerprint, "alertname": a.alertname, "starts_at": a.starts_at.isoformat(),
                        "labels": a.labels} for a in new[:ATTACHED_LIST_CAP]],
            "truncated": max(0, len(new) - ATTACHED_LIST_CAP)}})
        out.append((u, t, new))
    return out


def _resolve_many(ctx: Context, conn, ids: list[int], actor: str, reason: str | dict, now: datetime,
                  emits: Emits) -> list[dict]:
    """Resolve these tickets (one statement each for the rows, events, messages); ``reason``: one
    for all, or per ticket id."""
    why = reason if isinstance(reason, dict) else {i: reason for i in ids}
    rows = conn.execute(
        """update tickets set status = 'resolved', resolved_at = %s, resolved_by = %s,
               next_escalation_at = null, updated_at = %s where id = any(%s) and status <> 'resolved'
           returning *""", (now, actor, now, list(ids))).fetchall()
    if rows:
        conn.execute(_INSERT_EVENTS, {"actor": actor, "now": now, "rows": Jsonb(
            [{"ticket_id": t["id"], "kind": "resolved", "details": {"reason": why[t["id"]]}} for t in rows])})
    notify.enqueue_many(ctx, conn, [(t, "resolved") for t in rows])
    for t in rows:
        emits.add("ticket_resolved", **hook_payload(ctx, t, actor, reason=why[t["id"]]))
    emits.stage(conn)  # the hooks' stagers (automation jobs: restore): in this transaction
    return rows


def _resolve(ctx: Context, conn, t: dict, actor: str, reason: str, now: datetime, emits: Emits) -> dict:
    rows = _resolve_many(ctx, conn, [t["id"]], actor, reason, now, emits)
    return rows[0] if rows else t


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


