"""http: call an admin hook (the demo platform's traffic router, a cache purge, ...).

params: url (required; a list calls each, e.g. every service's admin API), path (appended to
each url), method (POST), json (body), headers, expect (accepted status codes; default any
2xx). With several urls the action is ok only when every call is.
"""
from __future__ import annotations

import requests

from .base import Backend, BackendError, BackendTimeout, Result, check_url, truncate


def _urls(params: dict) -> list[str]:
    urls = params["url"] if isinstance(params["url"], list) else [params["url"]]
    if not urls:
        raise BackendError("no url to call")
    path = str(params.get("path", ""))
    return [check_url(str(u).rstrip("/") + path if path else str(u)) for u in urls]


class HttpBackend(Backend):
    name = "http"

    def describe(self, operation, params):
        try:
            urls = _urls(params)
        except BackendError as exc:
            urls = [f"refused: {exc}"]
        d = {"backend": "http", "method": str(params.get("method", "POST")).upper(), "url": urls}
        if "json" in params:
            d["json"] = params["json"]
        return d

    def run(self, operation, params, timeout):
        method = str(params.get("method", "POST")).upper()
        headers = {**self.settings.get("headers", {}), **params.get("headers", {})}
        expect = params.get("expect")
        lines, statuses, ok = [], [], True
        for url in _urls(params):
            try:
                r = requests.request(method, url, json=params.get("json"), headers=headers,
                                     timeout=timeout, allow_redirects=False)
            except requests.Timeout:
                raise BackendTimeout(f"{method} {url}: timed out after {timeout:g}s") from None
            except requests.RequestException as exc:
                raise BackendError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from None
            good = r.status_code in expect if expect else 200 <= r.status_code < 300
            ok = ok and good
            statuses.append(r.status_code)
            lines.append(f"{method} {url} -> {r.status_code} {truncate(r.text.strip(), 500)}")
        return Result(ok, truncate("\n".join(lines)), {"status": statuses})
