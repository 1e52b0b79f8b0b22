"""Loki's push API as the tests' fake HTTP server sees it (no Grafana Loki binary can be installed
here: docs/logs.md): refuses what Loki refuses and remembers it (the tests fail on it).

    with FakeHTTP({"POST /loki/api/v1/push": push}) as srv: ... lines_of(srv), REFUSED
"""
from __future__ import annotations

import json
import re

LABEL_RX = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


REFUSED: list[str] = []


def push(req):
    """Loki's push API: refuses what Loki would refuse (and remembers it: the tests fail on it)."""
    status, why = _check(req)
    if status != 204:
        REFUSED.append(why)
    return status, why


def _check(req):
    if req.content_type != "application/json":
        return 415, "content type"
    try:
        body = json.loads(req.body.decode("utf-8"))  # strict UTF-8, as Loki
    except (UnicodeDecodeError, ValueError) as exc:
        return 400, f"bad body {exc}"
    for s in body["streams"]:
        labels, values = s["stream"], s["values"]
        if not labels or not all(LABEL_RX.match(k) and isinstance(v, str) and v for k, v in labels.items()):
            return 400, f"bad labels {labels}"
        ts = [int(v[0]) for v in values]
        if any(not isinstance(v[0], str) or not isinstance(v[1], str) or len(v) != 2 for v in values):
            return 400, "bad entry"
        if ts != sorted(ts) or min(ts) < 1_600_000_000 * 10**9:
            return 400, "timestamps"
    return 204, None


def lines_of(srv) -> list[tuple[dict, str]]:
    """[(labels, line)] of every push the server took."""
    out = []
    for r in srv.requests:
        if r.method == "POST" and r.path.endswith("/push"):
            for s in r.json["streams"]:
                out += [(s["stream"], v[1]) for v in s["values"]]
    return out
