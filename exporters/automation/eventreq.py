"""Event requests from the Event Management service's event-request API (demo/eventreq.py,
docs/automation.md): the automation rate of event requests and the approval queue.

Reads ``GET <url>/api/v1/event-requests?status=completed&limit=N`` (newest first; ``{"requests":
[...]}``, each request with ``id, status, approval_tier, approval: {state, requested_at},
created_at, completed_at, manual_steps, steps: [{step, state, started_at}]``) and the counts the
API keeps for this exporter, ``GET <url>/api/v1/event-requests/stats`` (``{"approvals_pending":
{tier: {count, oldest_seconds}}, ...}``); an API without /stats (404) has its pending approvals
read from ``?status=awaiting_approval&limit=N`` instead.

- rate: the requests completed in the window with ``manual_steps == 0`` / the requests completed
  in the window (none completed: no sample);
- approvals pending per tier (``auto``, ``manager``, ``executive``; 0 when none) and the wait of the
  oldest (from the listing: since ``approval.requested_at``, else its ``approve`` step's start,
  else its creation).
"""
from __future__ import annotations

from dataclasses import dataclass

import requests

from exporters.automation.http import SourceError, parse_time, request_json

TIERS = ("auto", "manager", "executive")


@dataclass(frozen=True)
class EventRequestKpis:
    completed: int
    without_person: int
    pending: dict          # tier -> count
    oldest: dict           # tier -> seconds (tiers with a pending request)


def _requests(body) -> list[dict]:
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise SourceError("event-requests: no 'requests' list in the answer")
    return [r for r in items if isinstance(r, dict)]


def _waiting_since(r: dict) -> float | None:
    appr = r.get("approval")
    at = parse_time(appr.get("requested_at")) if isinstance(appr, dict) else None
    if at is not None:
        return at
    steps = r.get("steps")
    for s in steps if isinstance(steps, list) else []:
        if isinstance(s, dict) and s.get("step") == "approve":
            at = parse_time(s.get("started_at"))
            if at is not None:
                return at
    return parse_time(r.get("created_at"))


def compute(completed: list[dict], waiting: list[dict], now: float, since: float) -> EventRequestKpis:
    done = [r for r in completed if r.get("status") == "completed"
            and (parse_time(r.get("completed_at")) or 0.0) >= since]
    auto = sum(1 for r in done if r.get("manual_steps") == 0 and not isinstance(r.get("manual_steps"), bool))
    pending = {t: 0 for t in TIERS}
    oldest: dict[str, float] = {}
    for r in waiting:
        tier = r.get("approval_tier")
        if r.get("status") != "awaiting_approval" or tier not in TIERS:
            continue
        pending[tier] += 1
        since_at = _waiting_since(r)
        if since_at is not None:
            oldest[tier] = max(oldest.get(tier, 0.0), max(0.0, now - since_at))
    return EventRequestKpis(len(done), auto, pending, oldest)


class EventRequestSource:
    """``settings``: the view of exporters.automation; ``url``: the resolved API base URL."""

    def __init__(self, settings, url: str, session: requests.Session | None = None):
        self.s = settings
        self.url = url.rstrip("/")
        self.http = session or requests.Session()

    def _get(self, path: str, params: dict | None = None) -> tuple[int, object]:
        return request_json(self.http, "GET", self.url + path, params=params or {},
                            headers={"Accept": "application/json"},
                            timeout=self.s.timeout, max_bytes=self.s.max_response_bytes)

    def _list(self, status: str) -> list[dict]:
        code, body = self._get("/api/v1/event-requests", {"status": status, "limit": self.s.event_requests.limit})
        if code != 200:
            raise SourceError(f"GET /api/v1/event-requests answered {code}")
        return _requests(body)

    def read(self, now: float, since: float) -> EventRequestKpis:
        completed = self._list("completed")
        code, stats = self._get("/api/v1/event-requests/stats")
        pending = stats.get("approvals_pending") if code == 200 and isinstance(stats, dict) else None
        if not isinstance(pending, dict):  # an API without /stats: from the listing
            return compute(completed, self._list("awaiting_approval"), now, since)
        k = compute(completed, [], now, since)
        for tier in TIERS:
            p = pending.get(tier)
            if not isinstance(p, dict):
                continue
            n, age = p.get("count"), p.get("oldest_seconds")
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                k.pending[tier] = n
                if n > 0 and isinstance(age, (int, float)) and not isinstance(age, bool) and age >= 0:
                    k.oldest[tier] = float(age)
        return k
