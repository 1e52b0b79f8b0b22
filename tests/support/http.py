"""One JSON call over HTTP with the standard library (tests and benches that talk to the demo's
event-request API and to Airflow's REST API): ``(status, parsed body)``, an error status too.

An error body that is not JSON comes back as ``{"raw": <its first 500 characters>}``; a refused
connection raises (urllib's URLError), as a server that is not there should."""
from __future__ import annotations

import json
import urllib.error
import urllib.request


def json_call(method: str, url: str, body: dict | None = None, token: str | None = None,
              timeout: float = 30) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"{}")
        except ValueError:
            return e.code, {"raw": raw[:500].decode(errors="replace")}
