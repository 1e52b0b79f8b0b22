"""Forwarding tickets to JIRA and ServiceNow through an outbox in PostgreSQL.

Ticket hooks enqueue a row per enabled system (``ticket_itsm_outbox``): create when a ticket
opens, comment on each change, resolve, reopen. ``Forwarder.deliver_due()`` (run by a daemon
thread every ``itsm.poll_interval``, and by the receiver's scheduler) runs the shared outbox
(core/outbox.py): due rows with ``for update skip locked`` (several receiver
processes share the work, none delivers a row twice at once), in order per ticket and system.
A delivery that fails for any reason is retried with exponential backoff up to
``itsm.max_attempts``, then marked failed (at once when not retryable); every error is kept on its row (``GET /api/v1/tickets/<id>/itsm``) and counted in
``opsstack_itsm_outbox{system,status}``. Every operation is idempotent on retries (see
jira.py / servicenow.py): a delivery whose answer was lost is not made twice.
"""
from __future__ import annotations

import logging
import threading
import uuid

from psycopg.types.json import Jsonb

from core import outbox
from webhook_receiver.db import connect

from .base import DeliveryError, Link
from .jira import Jira
from .servicenow import ServiceNow

log = logging.getLogger(__name__)


def systems(it) -> list[str]:
    """The enabled systems of ``it``, the typed itsm view (core.config.view(cfg, "itsm"))."""
    return [s for s in ("jira", "servicenow") if getattr(it, s).enabled]


def connector(it, system: str):
    if system == "jira":
        return Jira(it.jira, it.timeout)
    return ServiceNow(it.servicenow, it.timeout)


def change_text(event: str, payload: dict) -> str:
    actor = payload.get("actor") or "opsstack"
    if event == "ticket_resolved":
        return f"Resolved by {actor} in opsstack."
    if event == "ticket_reopened":
        return f"The alert fired again: reopened in opsstack (by {actor})."
    change = payload.get("change") or "updated"
    parts = [f"opsstack: {change} by {actor}"]
    for k in ("level", "assignee", "reason", "text", "comment"):
        if payload.get(k) not in (None, ""):
            parts.append(f"{k}: {payload[k]}")
    return ". ".join(str(p) for p in parts) + "."


class Forwarder:
    def __init__(self, it, db_url: str):
        """``it``: the typed itsm view (core.config.view(cfg, "itsm"))."""
        self.it = it
        self.db_url = db_url
        self.systems = systems(it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._connectors: dict[str, object] = {}

    # ---------------------------------------------------------------- enqueue (hooks)
    def enqueue(self, event: str, ticket_id: int, payload: dict | None = None) -> int:
        payload = {k: v for k, v in (payload or {}).items() if isinstance(v, (str, int, float, bool, type(None)))}
        op = {"ticket_opened": "create", "ticket_updated": "comment", "ticket_resolved": "resolve",
              "ticket_reopened": "reopen"}[event]
        n = 0
        with connect(self.db_url, autocommit=True) as conn:
            if payload.get("change") == "comment" and not payload.get("text"):
                ev = conn.execute("select details from ticket_events where ticket_id = %s and kind = 'comment' "
                                  "order by id desc limit 1", (ticket_id,)).fetchone()
                if ev and isinstance(ev["details"], dict):
                    payload["text"] = str(ev["details"].get("text") or ev["details"].get("comment") or "")[:4000]
            text = change_text(event, payload)
            for system in self.systems:
                key = f"{system}:{ticket_id}:create" if op == "create" else f"{system}:{ticket_id}:{op}:{uuid.uuid4().hex}"
                row = conn.execute("""insert into ticket_itsm_outbox (ticket_id, system, op, dedup_key, payload)
                                      values (%s, %s, %s, %s, %s) on conflict (dedup_key) do nothing returning id""",
                                   (ticket_id, system, op, key, Jsonb({**payload, "message": text}))).fetchone()
                n += row is not None
        if n:
            self._wake.set()
        return n

    # ---------------------------------------------------------------- delivery
    def _conn_for(self, system: str):
        if system not in self._connectors:
            self._connectors[system] = connector(self.it, system)
        return self._connectors[system]

    def queue(self) -> outbox.Queue:
        return outbox.Queue(name="itsm", table="ticket_itsm_outbox", key=("ticket_id", "system"),
                            info=("ticket_id", "system", "op"), done_status="done", done_at="done_at",
                            max_attempts=self.it.max_attempts, initial_backoff=self.it.retry_interval,
                            max_backoff=self.it.max_retry_interval)

    def deliver_due(self, limit: int = 20) -> int:
        """Deliver what is due now; returns how many rows were handled (done, retried or failed)."""
        with connect(self.db_url, autocommit=True) as conn:
            return self.run_due(conn, limit=limit)

    def run_due(self, conn, now=None, limit: int = 20) -> int:
        return outbox.run_due(conn, self.queue(), self._deliver, now=now, batch=limit, on_failed=self._failed)

    def _deliver(self, conn, row: dict) -> None:
        system = row["system"]
        c = self._conn_for(system)
        ticket = conn.execute("select * from tickets where id = %s", (row["ticket_id"],)).fetchone()
        if ticket is None:
            raise DeliveryError("ticket is gone", retryable=False)
        link = self._link(conn, row["ticket_id"], system)
        if link is None:
            link = c.create(ticket)
            conn.execute("""insert into ticket_itsm_links (ticket_id, system, external_id, external_key, url)
                            values (%s, %s, %s, %s, %s)
                            on conflict (ticket_id, system) do update set external_id = excluded.external_id,
                                external_key = excluded.external_key, url = excluded.url, updated_at = now()""",
                         (row["ticket_id"], system, link.external_id, link.external_key, link.url))
            log.info("event=itsm_linked system=%s ticket_id=%s key=%s", system, row["ticket_id"], link.external_key)
        if row["op"] != "create":
            marker = f"[opsstack:{row['dedup_key'].rsplit(':', 1)[-1][:12]}-{row['id']}]"
            getattr(c, row["op"])(link, row["payload"].get("message", ""), marker, row["attempts"] > 0)
        log.info("event=itsm_delivered system=%s ticket_id=%s op=%s key=%s", system, row["ticket_id"],
                 row["op"], link.external_key)

    @staticmethod
    def _failed(conn, row: dict, error: str, attempts: int, final: bool) -> None:
        log.warning("event=itsm_delivery_failed system=%s ticket_id=%s op=%s attempts=%s final=%s error=%r",
                    row["system"], row["ticket_id"], row["op"], attempts, final, error[:300])

    @staticmethod
    def _link(conn, ticket_id: int, system: str) -> Link | None:
        r = conn.execute("select external_id, external_key, url from ticket_itsm_links where ticket_id = %s "
                         "and system = %s", (ticket_id, system)).fetchone()
        return Link(r["external_id"], r["external_key"], r["url"]) if r else None

    # ---------------------------------------------------------------- thread
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="itsm-forwarder", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while self.deliver_due() and not self._stop.is_set():
                    pass
            except Exception as exc:  # noqa: BLE001 - database away: try again next round
                log.warning("event=itsm_loop_error error=%r", str(exc).splitlines()[0] if str(exc) else repr(exc))
            self._wake.wait(self.it.poll_interval)
            self._wake.clear()


def status(conn, ticket_id: int) -> dict:
    # deliveries first: a delivery seen done has its link committed with it (same transaction)
    rows = conn.execute("""select id, system, op, status, attempts, last_error, next_attempt_at, created_at, done_at
                           from ticket_itsm_outbox where ticket_id = %s order by id""", (ticket_id,)).fetchall()
    links = conn.execute("select system, external_id, external_key, url, created_at from ticket_itsm_links "
                         "where ticket_id = %s order by system", (ticket_id,)).fetchall()

    def iso(r):
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
    return {"links": [iso(r) for r in links], "deliveries": [iso(r) for r in rows]}
