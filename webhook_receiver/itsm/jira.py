"""JIRA Cloud REST API v3.

- create: ``POST /rest/api/3/issue`` with fields project.key, summary, issuetype.name,
  description (Atlassian Document Format), labels = [<label_prefix><ticket id>, ...extra].
  Before creating, ``GET /rest/api/3/search/jql?jql=labels = "<label>"`` adopts an issue a
  lost answer already created: a retry never makes a second issue.
- comment: ``POST /rest/api/3/issue/{key}/comment`` with an ADF body that carries a marker
  ``[opsstack:<delivery>]``; a retry first looks for the marker in
  ``GET /rest/api/3/issue/{key}/comment``.
- resolve / reopen: ``GET /rest/api/3/issue/{key}/transitions`` then
  ``POST /rest/api/3/issue/{key}/transitions`` with ``{"transition": {"id": ...}}``, chosen
  by the configured name (transition name or target status name); nothing happens when the
  issue already is in that status category.
"""
from __future__ import annotations

import requests

from webhook_receiver.sanitize import header_value

from .base import DeliveryError, Link, call, describe

API = "/rest/api/3"


def adf(text: str) -> dict:
    """Plain text as an Atlassian Document Format document (one paragraph per line)."""
    paras = []
    for line in text.splitlines() or [""]:
        paras.append({"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []})
    return {"type": "doc", "version": 1, "content": paras}


def adf_text(doc) -> str:
    if isinstance(doc, str):
        return doc
    out = []

    def walk(n):
        if isinstance(n, dict):
            if n.get("type") == "text":
                out.append(n.get("text", ""))
            for c in n.get("content", []) or []:
                walk(c)
    walk(doc)
    return " ".join(out)


class Jira:
    system = "jira"

    def __init__(self, settings, timeout: float):
        """``settings``: itsm.jira of the typed itsm view (core.config.view)."""
        self.s = settings
        self.base = settings.url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers.update({"Accept": "application/json", "Content-Type": "application/json"})
        if settings.bearer_token:
            self.http.headers["Authorization"] = f"Bearer {header_value(settings.bearer_token)}"
        else:
            self.http.auth = (settings.email, settings.api_token)

    def label(self, ticket: dict) -> str:
        return f"{self.s.label_prefix}{ticket['id']}"

    def _get(self, path, **params):
        return call(self.http, "GET", self.base + API + path, self.timeout, ok=(200,), params=params).json()

    def find(self, ticket: dict) -> Link | None:
        data = self._get("/search/jql", jql=f'labels = "{self.label(ticket)}" order by created asc',
                         fields="status,summary", maxResults=1)
        issues = data.get("issues") or []
        if not issues:
            return None
        i = issues[0]
        return Link(str(i["id"]), i["key"], f"{self.base}/browse/{i['key']}")

    def create(self, ticket: dict) -> Link:
        found = self.find(ticket)
        if found:
            return found
        # one line (JIRA's summary is a single-line field): no CR/LF or control characters
        summary = header_value(f"[{ticket.get('severity') or 'alert'}] {ticket.get('alertname')}: "
                               f"{(ticket.get('annotations') or {}).get('summary') or ticket.get('summary') or ''}",
                               250)
        labels = [self.label(ticket)] + [str(x) for x in self.s.labels or ()]
        body = {"fields": {"project": {"key": self.s.project}, "summary": summary,
                           "issuetype": {"name": self.s.issue_type},
                           "description": adf(describe(ticket)), "labels": labels}}
        r = call(self.http, "POST", self.base + API + "/issue", self.timeout, ok=(201,), json=body).json()
        return Link(str(r["id"]), r["key"], f"{self.base}/browse/{r['key']}")

    def comment(self, link: Link, text: str, marker: str, retry: bool) -> None:
        if retry and self._has_comment(link, marker):
            return
        call(self.http, "POST", f"{self.base}{API}/issue/{link.external_key}/comment", self.timeout, ok=(201,),
             json={"body": adf(f"{text}\n{marker}")})

    def _has_comment(self, link: Link, marker: str) -> bool:
        start = 0
        while True:
            data = self._get(f"/issue/{link.external_key}/comment", startAt=start, maxResults=100, orderBy="-created")
            comments = data.get("comments") or []
            if any(marker in adf_text(c.get("body")) for c in comments):
                return True
            start += len(comments)
            if not comments or start >= int(data.get("total", 0)):
                return False

    def _transition(self, link: Link, name: str, done: bool) -> str:
        issue = self._get(f"/issue/{link.external_key}", fields="status")
        cat = (((issue.get("fields") or {}).get("status") or {}).get("statusCategory") or {}).get("key")
        if (cat == "done") == done:
            return "already"
        data = self._get(f"/issue/{link.external_key}/transitions")
        want = name.lower()
        for t in data.get("transitions", []):
            if t.get("name", "").lower() == want or ((t.get("to") or {}).get("name", "").lower() == want):
                call(self.http, "POST", f"{self.base}{API}/issue/{link.external_key}/transitions", self.timeout,
                     ok=(204,), json={"transition": {"id": str(t["id"])}})
                return "moved"
        names = ", ".join(t.get("name", "?") for t in data.get("transitions", []))
        raise DeliveryError(f"JIRA issue {link.external_key} has no transition {name!r} (available: {names})",
                            retryable=False)

    def resolve(self, link: Link, text: str, marker: str, retry: bool) -> None:
        self._transition(link, self.s.resolve_transition, done=True)
        self.comment(link, text, marker, retry)

    def reopen(self, link: Link, text: str, marker: str, retry: bool) -> None:
        self._transition(link, self.s.reopen_transition, done=False)
        self.comment(link, text, marker, retry)
