"""Incidents from the receiver's REST API (docs/receiver.md, docs/remediation.md), read with a read
token: the automation rate of incidents and the response time, over the exporter's window.

The receiver's own rule (webhook_receiver/kpis.py, ``CLOSED_BY_AUTOMATION``) applied to its API's
data (a component does not import another, and the API is the receiver's contract):

- a ticket resolved in the window was **closed by automation** when its alert resolved it
  (``resolved_by`` = ``alertmanager``) after a playbook action ran (a ladder attempt, not a dry
  run, status ok) in its current episode, and before any person acknowledged, resolved,
  reassigned or commented on it. The rate is those / the tickets resolved in the window.
- **response time** of a ticket whose episode began in the window: from that start to the
  first person action or playbook action; a ticket nobody answered counts with the time it
  waited (until it resolved, or until now).

Reads: ``GET /api/v1/tickets?limit=1000&offset=..`` (newest opened first; until the tickets opened
before the window for the open ones, ``max_tickets`` in all), then for each ticket that needs
its timeline (opened in the window, or resolved by its alert in the window; at most
``max_details``) ``GET /api/v1/tickets/{id}`` (events) and ``GET /api/v1/tickets/{id}/remediation``
(runs and attempts). A resolved ticket's timeline is kept while its ``updated_at`` and status do
not change, so a steady state costs the listing only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import requests

from exporters.automation.http import SourceError, parse_time, request_json

log = logging.getLogger("opsstack.exporter.automation")

SYSTEM_ACTOR = "alertmanager"        # webhook_receiver.ticket_store.SYSTEM_ACTOR
SYSTEM_ACTORS = (SYSTEM_ACTOR, "remediation")
PERSON_KINDS = ("acknowledged", "resolved", "reassigned", "comment")
PAGE = 1000                          # the API's largest limit


@dataclass(frozen=True)
class Timeline:
    episode_start: float
    person_at: list                  # times of person actions since the episode began
    playbook_ok_at: list             # ladder attempts (not dry run) with status ok
    playbook_any_at: list            # ladder attempts (not dry run) of any outcome


@dataclass(frozen=True)
class IncidentKpis:
    resolved: int
    auto: int
    responses: list                  # seconds, one per ticket whose episode began in the window
    left_out: int                    # tickets past max_details (not counted)


def timeline(ticket: dict, detail: dict, remediation: dict) -> Timeline:
    opened = parse_time(ticket.get("opened_at")) or 0.0
    events = detail.get("events") if isinstance(detail, dict) else None
    events = events if isinstance(events, list) else []
    start = opened
    for e in events:
        if isinstance(e, dict) and e.get("kind") == "reopened":
            at = parse_time(e.get("at"))
            if at is not None and at > start:
                start = at
    person = [parse_time(e.get("at")) for e in events if isinstance(e, dict)
              and e.get("kind") in PERSON_KINDS and e.get("actor") not in SYSTEM_ACTORS]
    ok, any_ = [], []
    runs = remediation.get("runs") if isinstance(remediation, dict) else None
    for run in runs if isinstance(runs, list) else []:
        atts = run.get("attempts") if isinstance(run, dict) else None
        for a in atts if isinstance(atts, list) else []:
            if not isinstance(a, dict) or a.get("phase") != "ladder" or a.get("dry_run") is not False:
                continue
            at = parse_time(a.get("started_at"))
            if at is None or at < start:
                continue
            if a.get("status") != "dry_run":
                any_.append(at)
            if a.get("status") == "ok":
                ok.append(at)
    return Timeline(start, [t for t in person if t is not None and t >= start], ok, any_)


def closed_by_automation(ticket: dict, tl: Timeline) -> bool:
    resolved_at = parse_time(ticket.get("resolved_at"))
    if ticket.get("status") != "resolved" or ticket.get("resolved_by") != SYSTEM_ACTOR or resolved_at is None:
        return False
    return any(t <= resolved_at for t in tl.playbook_ok_at) and not any(t <= resolved_at for t in tl.person_at)


def response_seconds(ticket: dict, tl: Timeline, now: float) -> float:
    first = min(tl.person_at + tl.playbook_any_at, default=None)
    if first is None:
        resolved_at = parse_time(ticket.get("resolved_at"))
        first = resolved_at if ticket.get("status") == "resolved" and resolved_at is not None else now
    return max(0.0, first - tl.episode_start)


class ReceiverSource:
    """``settings``: the view of exporters.automation; ``url``/``token``: the resolved receiver."""

    def __init__(self, settings, url: str, token: str | None, session: requests.Session | None = None):
        self.s = settings
        self.url = url.rstrip("/")
        self.token = token
        self.http = session or requests.Session()
        self._cache: dict[int, tuple[tuple, Timeline]] = {}

    def _get(self, path: str, params=None):
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        status, body = request_json(self.http, "GET", self.url + path, params=params or {}, headers=headers,
                                    timeout=self.s.timeout, max_bytes=self.s.max_response_bytes)
        if status != 200:
            raise SourceError(f"receiver GET {path.split('?')[0][:60]} answered {status}")
        return body

    def tickets(self, since: float) -> list[dict]:
        out: list[dict] = []
        cap, offset = self.s.receiver.max_tickets, 0
        while offset < cap:
            limit = min(PAGE, cap - offset)
            page = self._get("/api/v1/tickets", {"limit": limit, "offset": offset})
            if not isinstance(page, list):
                raise SourceError("receiver /api/v1/tickets: not a JSON list")
            out.extend(t for t in page[:limit] if isinstance(t, dict) and isinstance(t.get("id"), int)
                       and not isinstance(t.get("id"), bool))
            offset += limit
            if len(page) < limit:
                break  # the last page
        return list({t["id"]: t for t in out}.values())  # a ticket opened while paging shifts the pages

    def read(self, now: float, since: float) -> IncidentKpis:
        tickets = self.tickets(since)
        need = []
        for t in tickets:
            opened, resolved = parse_time(t.get("opened_at")), parse_time(t.get("resolved_at"))
            began = opened is not None and opened >= since
            auto_candidate = (t.get("status") == "resolved" and resolved is not None and resolved >= since
                              and t.get("resolved_by") == SYSTEM_ACTOR)
            # a reopened ticket's episode may begin in the window although it opened before
            reopened = (t.get("reopened_count") or 0) > 0 and (parse_time(t.get("updated_at")) or 0.0) >= since
            if began or auto_candidate or reopened:
                need.append(t)
        left_out = max(0, len(need) - self.s.receiver.max_details)
        need = need[:self.s.receiver.max_details]
        lines: dict[int, Timeline] = {}
        keep: dict[int, tuple[tuple, Timeline]] = {}
        for t in need:
            key = (t.get("updated_at"), t.get("status"), t.get("resolved_at"))
            hit = self._cache.get(t["id"])
            if hit is not None and hit[0] == key and t.get("status") == "resolved":
                tl = hit[1]
            else:
                tid = int(t["id"])
                tl = timeline(t, self._get(f"/api/v1/tickets/{tid}"), self._get(f"/api/v1/tickets/{tid}/remediation"))
            lines[t["id"]] = tl
            keep[t["id"]] = (key, tl)
        self._cache = keep
        resolved = auto = 0
        responses = []
        for t in tickets:
            r_at = parse_time(t.get("resolved_at"))
            if t.get("status") == "resolved" and r_at is not None and r_at >= since:
                if t.get("resolved_by") == SYSTEM_ACTOR and t["id"] not in lines:
                    continue  # past max_details: left out, not guessed
                resolved += 1
                auto += t["id"] in lines and closed_by_automation(t, lines[t["id"]])
            tl = lines.get(t["id"])
            if tl is not None and tl.episode_start >= since:
                responses.append(response_seconds(t, tl, now))
        if left_out:
            log.warning("event=receiver_details_capped left_out=%d max_details=%d", left_out,
                        self.s.receiver.max_details)
        return IncidentKpis(resolved, auto, responses, left_out)
