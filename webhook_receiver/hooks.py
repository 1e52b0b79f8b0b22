"""In-process ticket hooks: other parts of the receiver subscribe to ticket changes.

    from webhook_receiver.state import state
    state(app).hooks.subscribe("ticket_opened", fn)   # fn(event="ticket_opened", ticket_id=..., db_url=..., ...)

Events: ticket_opened, ticket_updated, ticket_resolved, ticket_reopened. ticket_updated carries
``change`` = acknowledged | escalated | comment | reassigned | alert_attached. They are emitted after the database commit, in the process that made the
change, with keyword arguments ``event``, ``ticket_id``, ``db_url`` (a libpq URL the
subscriber may connect to), ``actor`` and event-specific extras (``alertname``, ``service``,
``severity``, ``level``...; ticket_opened and ticket_reopened carry ``alert_labels``, the labels of
the incident's alerts, and alert_attached ``attached_labels``, those of the alerts that joined:
what Automation.wanted_jobs matches playbooks on; not forwarded to ITSM). A subscriber that raises is logged and ignored: it never breaks
ticket handling. Subscribers run synchronously in the request thread, so slow work belongs in
a thread or queue of the subscriber's own.

Stagers (``hooks.add_stager(fn)``) see the same events BEFORE the commit, inside the transaction
that makes the change: ``fn(conn, calls)`` with ``calls`` a list of ``(event, payload)``, writing
on ``conn`` only (e.g. the automation jobs a change queues: committed atomically with it, or rolled
back with it). It may return a callable run after the commit (e.g. wake a pool). A stager that
raises fails the change (its transaction rolls back): stagers write only what must go with it.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)

EVENTS = ("ticket_opened", "ticket_updated", "ticket_resolved", "ticket_reopened")

class Hooks:
    """The subscribers of one receiver app (State.hooks, also ``tickets.Context.hooks``): two apps
    in one process never see each other's ticket changes."""

    def __init__(self):
        self._subscribers: dict[str, list[Callable[..., object]]] = {}
        self._stagers: list[Callable[..., object]] = []
        self._lock = threading.Lock()

    def add_stager(self, fn: Callable[..., object]) -> Callable[..., object]:
        """Call ``fn(conn, calls)`` inside each ticket transaction with its hook calls (see above)."""
        with self._lock:
            if fn not in self._stagers:
                self._stagers.append(fn)
        return fn

    def remove_stager(self, fn: Callable[..., object]) -> None:
        with self._lock:
            if fn in self._stagers:
                self._stagers.remove(fn)

    def stagers(self) -> list[Callable[..., object]]:
        with self._lock:
            return list(self._stagers)

    def subscribe(self, event_name: str, fn: Callable[..., object]) -> Callable[..., object]:
        """Call ``fn(**payload)`` after every ``event_name``; returns fn (usable as a decorator)."""
        if event_name not in EVENTS:
            raise ValueError(f"unknown ticket event {event_name!r} (known: {', '.join(EVENTS)})")
        with self._lock:
            lst = self._subscribers.setdefault(event_name, [])
            if fn not in lst:
                lst.append(fn)
        return fn

    def unsubscribe(self, event_name: str, fn: Callable[..., object]) -> None:
        with self._lock:
            try:
                self._subscribers.get(event_name, []).remove(fn)
            except ValueError:
                pass

    def subscribers(self, event_name: str) -> list[Callable[..., object]]:
        with self._lock:
            return list(self._subscribers.get(event_name, ()))

    def clear(self) -> None:
        """Forget every subscriber."""
        with self._lock:
            self._subscribers.clear()
            self._stagers.clear()

    def emit(self, event_name: str, **payload) -> int:
        """Call the subscribers of ``event_name``; returns how many succeeded."""
        ok = 0
        for fn in self.subscribers(event_name):
            try:
                fn(event=event_name, **payload)
                ok += 1
            except Exception:  # noqa: BLE001 - a subscriber never breaks ticket handling
                log.exception("event=hook_failed hook=%s subscriber=%s ticket_id=%s", event_name,
                              getattr(fn, "__qualname__", repr(fn)), payload.get("ticket_id"))
        return ok
