"""What every ITSM connector shares: the HTTP call, the ticket snapshot, errors."""
from __future__ import annotations

from dataclasses import dataclass

import requests


class DeliveryError(RuntimeError):
    """A delivery failed; it is retried with backoff (retryable) or marked failed."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Link:
    external_id: str
    external_key: str
    url: str = ""


def ticket_key(ticket: dict) -> str:
    return f"OPS-{ticket['id']}"


def call(session: requests.Session, method: str, url: str, timeout: float, ok=(200, 201, 204), **kw) -> requests.Response:
    try:
        r = session.request(method, url, timeout=timeout, **kw)
    except requests.RequestException as exc:
        raise DeliveryError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from None
    if r.status_code not in ok:
        # 4xx other than 408/409/429 will not get better by retrying the same request
        retry = r.status_code >= 500 or r.status_code in (408, 409, 429)
        raise DeliveryError(f"{method} {url} -> {r.status_code}: {r.text[:300]}", retryable=retry)
    return r


def describe(ticket: dict) -> str:
    labels = ticket.get("labels") or {}
    ann = ticket.get("annotations") or {}
    lines = [ann.get("summary") or ticket.get("summary") or ticket.get("alertname", ""),
             ann.get("description", ""),
             "",
             f"Alert: {ticket.get('alertname')}  severity: {ticket.get('severity')}  service: {ticket.get('service')}",
             "Labels: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())),
             f"Started: {ticket.get('starts_at')}"]
    if ann.get("runbook_url"):
        lines.append(f"Runbook: {ann['runbook_url']}")
    if ticket.get("generator_url"):
        lines.append(f"Source: {ticket['generator_url']}")
    return "\n".join(x for x in lines if x is not None)
