"""Dead-pipeline detection: heartbeat alerts (Watchdog) must keep arriving.

Alertmanager re-sends the always-firing Watchdog every ``alertmanager.watchdog_repeat_interval``;
the receiver records when it last came. When it stops for ``receiver.heartbeat_timeout``,
a critical ticket ``AlertingPipelineDown`` opens (and escalates like any other); it resolves
when the heartbeat comes back.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from webhook_receiver.payload import Alert

ALERTNAME = "AlertingPipelineDown"


def _alert(name: str, status: str, starts: datetime, ends: datetime | None) -> Alert:
    fp = "hb" + hashlib.sha256(f"heartbeat:{name}".encode()).hexdigest()[:14]
    return Alert(status=status, starts_at=starts, ends_at=ends, generator_url="", fingerprint=fp,
                 labels={"alertname": ALERTNAME, "heartbeat": name, "severity": "critical", "tier": "1",
                         "service": "alerting", "team": "ops"},
                 annotations={"summary": "The alerting pipeline is silent.",
                              "description": f"No {name} heartbeat from Alertmanager since the time in the ticket: "
                                             "Prometheus, Alertmanager or the route to the receiver is broken."})


def seen(ctx, conn, name: str, now: datetime, emits) -> None:
    """A heartbeat arrived (inside the ingest transaction)."""
    from webhook_receiver import tickets

    row = conn.execute(
        """insert into ticket_heartbeats (alertname, last_seen) values (%s, %s)
           on conflict (alertname) do update set last_seen = greatest(ticket_heartbeats.last_seen, excluded.last_seen)
           returning alarm_ticket_id""", (name, now)).fetchone()
    if row["alarm_ticket_id"]:
        t = tickets.lock_ticket(conn, row["alarm_ticket_id"])
        if t is not None and t["status"] != "resolved":
            tickets._resolve(ctx, conn, t, tickets.SYSTEM_ACTOR, f"the {name} heartbeat is back", now, emits)
        conn.execute("update ticket_heartbeats set alarm_ticket_id = null where alertname = %s", (name,))


def check(ctx, conn, now: datetime, timeout: float, watching_since: datetime | None = None) -> list[int]:
    """Open an alarm ticket for every heartbeat silent for ``timeout``; returns their ids.

    ``watching_since``: when this receiver started watching. A heartbeat is only overdue once
    the receiver itself has been up for ``timeout``: after the stack was down, Alertmanager gets
    one full timeout to deliver the next heartbeat before the pipeline is called silent.
    """
    from webhook_receiver import tickets

    if timeout <= 0:
        return []
    if watching_since is not None and now - timedelta(seconds=timeout) < watching_since:
        return []
    opened = []
    emits = tickets.Emits()
    with conn.transaction():
        rows = conn.execute("""select * from ticket_heartbeats where alarm_ticket_id is null and last_seen < %s
                               for update skip locked""", (now - timedelta(seconds=timeout),)).fetchall()
        for r in rows:
            a = _alert(r["alertname"], "firing", r["last_seen"] + timedelta(seconds=timeout), None)
            res = tickets.IngestResult()
            tickets.apply_alerts(ctx, conn, [a], None, now, res, emits)
            tid = (res.opened or res.reopened or res.attached or [None])[0]
            if tid is None:
                active = conn.execute("select id from tickets where fingerprint = %s and status <> 'resolved'",
                                      (a.fingerprint,)).fetchone()
                tid = active["id"] if active else None
            conn.execute("update ticket_heartbeats set alarm_ticket_id = %s where alertname = %s", (tid, r["alertname"]))
            if tid:
                opened.append(tid)
    emits.fire()
    return opened
