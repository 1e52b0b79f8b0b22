"""Reconciling open tickets with Alertmanager's active alerts (receiver.reconcile).

Alertmanager sends a resolved notification once; if the receiver (or the whole stack) was down
then, the episode stays 'firing' and its ticket keeps escalating. At start and every
``interval`` (a scheduler Job, so in the one process that runs background jobs), this module
asks EVERY configured Alertmanager cluster member for its active alerts in every state
(``/api/v2/alerts?active&silenced&inhibited&unprocessed``: a silenced or inhibited alert still
counts) and closes the firing episodes of unresolved tickets whose fingerprint none of them
has, through the ordinary ingest path (tickets.apply_alerts with a resolved alert): the
episode ends, and the ticket resolves when none of its episodes is firing any more.

Safety: a round where any member fails (error, timeout, non-200, malformed JSON) closes
nothing; nor does one where any member has been up for less than ``min_uptime`` (Alertmanager
keeps alerts in memory only: after a restart it knows an alert again only when Prometheus
re-sends it); episodes first seen less than ``grace`` ago are left alone (their notification may
be in flight); heartbeat alerts and the receiver's own heartbeat alarms are never reconciled.
Alertmanager's fingerprint in /api/v2/alerts is the webhook's fingerprint (checked against the
real binary in tests/integration/test_receiver_reconcile.py).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import requests

from core.clock import utcnow
from core.logs import first_line
from webhook_receiver import heartbeat, tickets
from webhook_receiver.metrics import RECONCILE_CLOSED, RECONCILE_RUNS
from webhook_receiver.payload import Alert, PayloadError, parse_time
from webhook_receiver.ticket_store import SYSTEM_ACTOR, Emits, add_event

log = logging.getLogger(__name__)

REASON = "alert no longer active in Alertmanager"
EVENT_KIND = "alert_reconciled"
RECONCILE_LOCK = 7_215_004   # one reconciliation at a time (workers, replicas)
LISTED = 20                  # episodes listed in one event (its count says how many)
# every state: an alert that is silenced, inhibited or not yet processed is still active
ALERT_PARAMS = {"active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"}


class MemberError(Exception):
    """An Alertmanager member could not be queried (the round closes nothing)."""


def urls(settings) -> tuple[str, ...]:
    """The members to ask; empty when reconciliation is off or no member is known."""
    if not settings.enabled or not settings.alertmanager_urls:
        return ()
    return tuple(u.rstrip("/") for u in settings.alertmanager_urls)


def _get_json(url: str, timeout: float, params: dict | None = None):
    try:
        r = requests.get(url, params=params, timeout=timeout)
    except requests.RequestException as exc:
        raise MemberError(f"{url}: {first_line(exc)}") from exc
    if r.status_code != 200:
        raise MemberError(f"{url}: HTTP {r.status_code}")
    try:
        return r.json()
    except ValueError as exc:
        raise MemberError(f"{url}: not JSON") from exc


def member_state(base: str, timeout: float) -> tuple[set[str], datetime]:
    """(fingerprints of the member's active alerts in any state, when the member started)."""
    status = _get_json(base + "/api/v2/status", timeout)
    try:
        started = parse_time(status["uptime"], "uptime") if isinstance(status, dict) else None
    except (PayloadError, KeyError) as exc:
        raise MemberError(f"{base}: bad /api/v2/status uptime") from exc
    if started is None:
        raise MemberError(f"{base}: /api/v2/status has no uptime")
    got = _get_json(base + "/api/v2/alerts", timeout, ALERT_PARAMS)
    if not isinstance(got, list):
        raise MemberError(f"{base}: /api/v2/alerts is not a list")
    fps = set()
    for a in got:
        fp = a.get("fingerprint") if isinstance(a, dict) else None
        if not isinstance(fp, str) or not fp:
            raise MemberError(f"{base}: an alert without a fingerprint")
        fps.add(fp)
    return fps, started


_CANDIDATES = """
    select a.id, a.ticket_id, a.fingerprint, a.starts_at, a.labels, a.annotations, t.incident_key
    from ticket_alerts a join tickets t on t.id = a.ticket_id
    where a.status = 'firing' and t.status <> 'resolved' and a.first_seen <= %s
      and coalesce(a.labels->>'alertname', '') <> all(%s)
      and not (coalesce(a.labels->>'alertname', '') = %s and a.labels ? 'heartbeat')
    order by a.ticket_id, a.fingerprint, a.starts_at"""


def candidates(ctx, conn, now: datetime, grace: float) -> list[dict]:
    """Firing episodes of unresolved tickets first seen at least ``grace`` ago (heartbeats left out)."""
    return conn.execute(_CANDIDATES, (now - timedelta(seconds=grace), sorted(ctx.heartbeats),
                                      heartbeat.ALERTNAME)).fetchall()


def _lock_keys(rows: list[dict]) -> set[tuple[int, int]]:
    """The ingest locks (tickets.lock_incidents) of these episodes: their tickets' incident keys,
    their fingerprints, and the keys apply_alerts computes without a notification (the
    fingerprint), so that apply_alerts below runs with all of them held."""
    return tickets.lock_keys({r["incident_key"] for r in rows} | {r["fingerprint"] for r in rows},
                             {r["fingerprint"] for r in rows})


def run(ctx, conn, settings, now: datetime | None = None) -> dict:
    """One reconciliation round on ``conn`` (autocommit); returns {'outcome', 'closed', ...}."""
    try:
        out = _run(ctx, conn, settings, now or utcnow())
    except Exception:
        RECONCILE_RUNS.labels("error").inc()  # the database: the scheduler logs it, the next round retries
        raise
    RECONCILE_RUNS.labels(out["outcome"]).inc()
    if out.get("closed"):
        RECONCILE_CLOSED.inc(out["closed"])
    return out


def _run(ctx, conn, settings, now: datetime) -> dict:
    members = urls(settings)
    if not members:
        return {"outcome": "disabled", "closed": 0}
    # read the episodes BEFORE asking Alertmanager: whatever it answers is at least as new
    cands = candidates(ctx, conn, now, settings.grace)
    if not cands:
        return {"outcome": "ok", "closed": 0, "candidates": 0}
    active: set[str] = set()
    for base in members:
        try:
            fps, started = member_state(base, settings.timeout)
        except MemberError as exc:
            log.warning("event=reconcile_member_failed url=%s error=%r closed=0", base, str(exc))
            return {"outcome": "member_error", "closed": 0, "error": str(exc)}
        if started > now - timedelta(seconds=settings.min_uptime):
            log.info("event=reconcile_waiting url=%s started=%s min_uptime=%s", base, started.isoformat(),
                     settings.min_uptime)
            return {"outcome": "young_alertmanager", "closed": 0}
        active |= fps
    gone = [c for c in cands if c["fingerprint"] not in active]
    if not gone:
        return {"outcome": "ok", "closed": 0, "candidates": len(cands)}
    emits = Emits(ctx.hooks)
    res = tickets.IngestResult()
    with conn.transaction():
        if not conn.execute("select pg_try_advisory_xact_lock(%s) ok", (RECONCILE_LOCK,)).fetchone()["ok"]:
            return {"outcome": "busy", "closed": 0}
        # the first and only waiting lock statement of this transaction, in the global order
        tickets.lock_incidents(conn, _lock_keys(gone))
        # under the ingest locks: the ones a notification has not ended meanwhile
        still = {r["id"] for r in conn.execute("select id from ticket_alerts where id = any(%s) and status = 'firing'",
                                               ([c["id"] for c in gone],))}
        gone = [c for c in gone if c["id"] in still]
        by_ticket: dict[int, list[dict]] = {}
        for c in gone:
            by_ticket.setdefault(c["ticket_id"], []).append(c)
        for tid, eps in by_ticket.items():  # written before the ticket's resolved event (same time, lower id)
            add_event(conn, tid, EVENT_KIND, SYSTEM_ACTOR, {
                "reason": REASON, "count": len(eps),
                "alerts": [{"fingerprint": c["fingerprint"], "alertname": (c["labels"] or {}).get("alertname", ""),
                            "starts_at": c["starts_at"].isoformat()} for c in eps[:LISTED]]}, at=now)
        alerts = [Alert(status="resolved", labels=dict(c["labels"] or {}), annotations=dict(c["annotations"] or {}),
                        starts_at=c["starts_at"], ends_at=now, generator_url="", fingerprint=c["fingerprint"])
                  for c in gone]
        if alerts:
            tickets.apply_alerts(ctx, conn, alerts, None, now, res, emits, reason=REASON, locked=True)
    emits.fire()
    if gone:
        log.info("event=reconciled episodes_closed=%s tickets_resolved=%s", len(gone), len(res.resolved))
    return {"outcome": "ok", "closed": len(gone), "resolved": res.resolved, "candidates": len(cands)}
