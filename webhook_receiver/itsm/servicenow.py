"""ServiceNow Table API, table ``incident``.

- create: ``POST /api/now/table/incident`` with short_description, description, urgency,
  impact, correlation_id (= the ticket key, OPS-<id>), correlation_display "opsstack" and the
  optional caller_id / assignment_group / category. Before creating,
  ``GET /api/now/table/incident?sysparm_query=correlation_id=<key>`` adopts an incident a
  lost answer already created.
- work notes: ``PATCH /api/now/table/incident/{sys_id}`` with ``work_notes`` holding a marker
  ``[opsstack:<delivery>]``; a retry first looks for it in ``sys_journal_field``.
- resolve: PATCH with state (6 = Resolved), close_code, close_notes; reopen: PATCH with
  state (2 = In Progress) and a work note.
"""
from __future__ import annotations

import requests

from webhook_receiver.sanitize import header_value

from .base import Link, call, describe, ticket_key

API = "/api/now/table"


class ServiceNow:
    system = "servicenow"

    def __init__(self, settings, timeout: float):
        """``settings``: itsm.servicenow of the typed itsm view (core.config.view)."""
        self.s = settings
        self.base = settings.url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.auth = (settings.username, settings.password)
        self.http.headers.update({"Accept": "application/json", "Content-Type": "application/json"})

    def _link(self, rec: dict) -> Link:
        return Link(rec["sys_id"], rec.get("number") or rec["sys_id"],
                    f"{self.base}/nav_to.do?uri=incident.do?sys_id={rec['sys_id']}")

    def find(self, ticket: dict) -> Link | None:
        r = call(self.http, "GET", f"{self.base}{API}/incident", self.timeout, ok=(200,),
                 params={"sysparm_query": f"correlation_id={ticket_key(ticket)}", "sysparm_limit": "1",
                         "sysparm_fields": "sys_id,number,state"}).json()
        res = r.get("result") or []
        return self._link(res[0]) if res else None

    def create(self, ticket: dict) -> Link:
        found = self.find(ticket)
        if found:
            return found
        sev = ticket.get("severity") or "warning"
        level = (self.s.urgency or {}).get(sev, "2")
        summary = header_value(f"[{sev}] {ticket.get('alertname')}: "
                               f"{(ticket.get('annotations') or {}).get('summary') or ticket.get('summary') or ''}",
                               160)
        body = {"short_description": summary, "description": describe(ticket), "urgency": str(level),
                "impact": str(level), "correlation_id": ticket_key(ticket), "correlation_display": "opsstack"}
        for k in ("caller_id", "assignment_group", "category"):
            if getattr(self.s, k):
                body[k] = getattr(self.s, k)
        r = call(self.http, "POST", f"{self.base}{API}/incident", self.timeout, ok=(201,),
                 params={"sysparm_fields": "sys_id,number,state"}, json=body).json()
        return self._link(r["result"])

    def _has_note(self, link: Link, marker: str) -> bool:
        r = call(self.http, "GET", f"{self.base}{API}/sys_journal_field", self.timeout, ok=(200,),
                 params={"sysparm_query": f"element_id={link.external_id}^element=work_notes^valueLIKE{marker}",
                         "sysparm_limit": "1", "sysparm_fields": "sys_id"}).json()
        return bool(r.get("result"))

    def _patch(self, link: Link, body: dict) -> None:
        call(self.http, "PATCH", f"{self.base}{API}/incident/{link.external_id}", self.timeout, ok=(200,),
             params={"sysparm_fields": "sys_id,number,state"}, json=body)

    def comment(self, link: Link, text: str, marker: str, retry: bool) -> None:
        if retry and self._has_note(link, marker):
            return
        self._patch(link, {"work_notes": f"{text}\n{marker}"})

    def resolve(self, link: Link, text: str, marker: str, retry: bool) -> None:
        self._patch(link, {"state": self.s.resolved_state, "close_code": self.s.close_code,
                           "close_notes": text})

    def reopen(self, link: Link, text: str, marker: str, retry: bool) -> None:
        if retry and self._has_note(link, marker):
            return
        self._patch(link, {"state": self.s.reopen_state, "work_notes": f"{text}\n{marker}"})
