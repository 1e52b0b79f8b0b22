"""Dead-pipeline detection: heartbeat alerts (Watchdog) must keep arriving.

Alertmanager re-sends the always-firing Watchdog every ``alertmanager.watchdog_repeat_interval``;
the receiver records when it last came. When it stops for ``receiver.heartbeat_timeout``,
a critical ticket ``AlertingPipelineDown`` opens (and escalates like any other); it resolves
when the heartbeat comes back (tickets records each arrival: ticket_store.heartbeat_seen).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from webhook_receiver import tickets
from webhook_receiver.payload import Alert
from webhook_receiver.ticket_store import Emits

ALERTNAME = "AlertingPipelineDown"


def _alert(name: str, status: str, starts: datetime, ends: datetime | None) -> Alert:
    fp = "hb" + hashlib.sha256(f"heartbeat:{name}".encode()).hexdigest()[:14]
    return Alert(status=status, starts_at=starts, ends_at=ends, generator_url="", fingerprint=fp,
                 labels={"alertname": ALERTNAME, "heartbeat": name, "severity": "critical", "tier": "1",
                         "service": "alerting", "team": "ops"},
                 annotations={"summary": "The alerting pipeline is silent.",
                              "description": f"No {name} heartbeat from Alertmanager since the time in the ticket: "
                                             "Prometheus, Alertmanager or the route to the receiver is broken."})


def check(ctx, conn, now: datetime, timeout: float, watching_since: datetime | None = None) -> list[int]:
    """Open an alarm ticket for every heartbeat silent for ``timeout``; returns their ids.

    ``watching_since``: when this receiver started watching. A heartbeat is only overdue once
    the receiver itself has been up for ``timeout``: after the stack was down, Alertmanager gets
    one full timeout to deliver the next heartbeat before the pipeline is called silent.
    """
    if timeout <= 0:
        return []
    if watching_since is not None and now - timedelta(seconds=timeout) < watching_since:
        return []
    opened = []
    emits = Emits(ctx.hooks)
    try:
        _check(ctx, conn, now, timeout, emits, opened)
    except tickets.LocksBusy:  # an ingest holds the alarm's incident: the next pass opens it
        return []
    emits.fire()
    return opened


def _check(ctx, conn, now: datetime, timeout: float, emits: Emits, opened: list) -> None:
    with conn.transaction():
        rows = conn.execute("""select * from ticket_heartbeats where alarm_ticket_id is null and last_seen < %s
                               for update skip locked""", (now - timedelta(seconds=timeout),)).fetchall()
        for r in rows:
            a = _alert(r["alertname"], "firing", r["last_seen"] + timedelta(seconds=timeout), None)
            res = tickets.IngestResult()
            # only tries the ingest locks: this transaction holds ticket_heartbeats rows, which an
            # ingest holding those locks may wait for (tickets.lock_incidents: no deadlock)
            tickets.apply_alerts(ctx, conn, [a], None, now, res, emits, wait=False)
            tid = (res.opened or res.reopened or res.attached or [None])[0]
            if tid is None:
                active = conn.execute("select id from tickets where fingerprint = %s and status <> 'resolved'",
                                      (a.fingerprint,)).fetchone()
                tid = active["id"] if active else None
            conn.execute("update ticket_heartbeats set alarm_ticket_id = %s where alertname = %s", (tid, r["alertname"]))
            if tid:
                opened.append(tid)
