"""The demo's fake Cloudflare API: the one faked part of the CDN (like the demo's other fakes).

Serves, on a loopback port, what the CDN exporter and the invalidation actions call:

- ``POST /client/v4/graphql``: the GraphQL Analytics API for the datasets
  ``httpRequestsAdaptiveGroups`` (count; sum edgeResponseBytes, visits; avg sampleInterval,
  edgeTimeToFirstByteMs, originResponseDurationMs; quantiles edgeTimeToFirstByteMsP50/P95/P99,
  originResponseDurationMsP50/P95/P99; dimensions coloCode, cacheStatus, edgeResponseStatus,
  edgeResponseContentTypeName, datetimeMinute; filter datetime_geq/datetime_lt (required),
  coloCode_in/_notin, cacheStatus, edgeResponseStatus) and ``firewallEventsAdaptiveGroups``
  (count; dimensions action, source). Like Cloudflare: HTTP 200 with an ``errors`` array for a
  bad query (unknown node, field or argument, a missing time filter), ``errors`` with
  ``extensions.code = "authz"`` and a null node for what the zone's plan does not give
  (quantiles on the "free" plan), 429 with ``Retry-After`` when the token's query budget (300
  nodes per 5 minutes by default) is spent, 401 without a bearer token and 403 for an unknown one.
- ``POST /client/v4/zones/<zone>/purge_cache``: the purge API (``purge_everything``, ``files``,
  ``tags``, ``prefixes`` or ``hosts``); every purge is kept (``GET /_fake/purges``).

The traffic is deterministic from the seed, the zone and each minute of the asked window:
colos of four regions with the seed's profile (mean edge time to first byte Asia ~180 ms,
Europe ~280, North America ~240, other ~350; about 93% of the requests cached, docs/demo.md "Edge profile"), three content
classes (static css/js/png, api json, dynamic html), a few 4xx and 5xx.

    python -m demo.cloudflare --port 8787 --token-file tok --zone 0123abcd:pro --seed 42
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import deque
from datetime import datetime, timezone

from core.exporter import wait_until_stopped
from core.logs import setup_logging
from demo.http import Listener, Request, Response

log = logging.getLogger("opsstack.demo.cloudflare")

# region -> (colos served, mean edge TTFB ms, share of the traffic)
PROFILE = {
    "asia": (("ICN", "NRT", "SIN", "HKG"), 180.0, 0.45),
    "europe": (("FRA", "LHR", "AMS"), 280.0, 0.2),
    "north_america": (("SJC", "IAD", "ORD"), 240.0, 0.25),
    "other": (("GRU", "SYD", "JNB"), 350.0, 0.1),
}
# class -> (content types, share of requests, cached share, mean bytes, origin ms); every class
# above its hit target (exporters.cdn.classes: 0.95, 0.8, 0.5) and about 93% cached overall
# (target 0.9): a fresh stack raises no cache alert (docs/demo.md "Edge profile")
CLASSES = {
    "static": (("css", "js", "png"), 0.5, 0.98, 40_000, 60.0),
    "api": (("json",), 0.3, 0.93, 2_000, 120.0),
    "dynamic": (("html",), 0.2, 0.80, 15_000, 220.0),
}
REQUESTS_PER_MINUTE = 6000.0
# percentile = the group's mean x factor: Asia's p95 stays under 250 ms (CdnLatencyHigh)
QUANTILE_FACTORS = {"P50": 0.85, "P95": 1.5, "P99": 2.2}
SETTLE = 60.0  # data for a minute appears this long after it ends

NODE_FIELDS = {
    "httpRequestsAdaptiveGroups": {
        "count": None,
        "sum": {"edgeResponseBytes", "visits"},
        "avg": {"sampleInterval", "edgeTimeToFirstByteMs", "originResponseDurationMs"},
        "quantiles": {f"{m}{q}" for m in ("edgeTimeToFirstByteMs", "originResponseDurationMs")
                      for q in QUANTILE_FACTORS},
        "dimensions": {"coloCode", "cacheStatus", "edgeResponseStatus", "edgeResponseContentTypeName",
                       "datetimeMinute"},
    },
    "firewallEventsAdaptiveGroups": {"count": None, "dimensions": {"action", "source", "datetimeMinute"}},
}
FILTERS = {"datetime_geq", "datetime_lt", "coloCode_in", "coloCode_notin", "coloCode", "cacheStatus",
           "edgeResponseStatus", "action"}
PLAN_LIMITS = {"free": {"quantiles"}, "pro": set(), "business": set(), "enterprise": set()}


class GraphQLSyntaxError(ValueError):
    pass


# ---------------------------------------------------------------- a small GraphQL reader
_TOKEN = re.compile(r'\s+|,|#[^\n]*|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_]*|[{}()\[\]:!$=]')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise GraphQLSyntaxError(f"Syntax Error: unexpected character {text[pos]!r} at {pos}")
        t = m.group(0)
        pos = m.end()
        if t.strip() and t != "," and not t.startswith("#"):
            out.append(t)
    return out


class _Parser:
    def __init__(self, text: str, variables: dict):
        self.t = _tokens(text)
        self.i = 0
        self.vars = variables

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise GraphQLSyntaxError(f"Syntax Error: expected {want or 'a token'}, found {tok or 'end of query'}")
        self.i += 1
        return tok

    def document(self) -> list:
        if self.peek() == "query":
            self.take()
            if self.peek() not in ("{", "("):
                self.take()  # operation name
            if self.peek() == "(":
                self.take("(")
                while self.peek() != ")":
                    self.take("$")
                    self.take()
                    self.take(":")
                    self._type()
                    if self.peek() == "=":
                        self.take()
                        self.value()
                self.take(")")
        sel = self.selection_set()
        if self.peek() is not None:
            raise GraphQLSyntaxError(f"Syntax Error: unexpected {self.peek()!r} after the query")
        return sel

    def _type(self):
        if self.peek() == "[":
            self.take("[")
            self._type()
            self.take("]")
        else:
            self.take()
        if self.peek() == "!":
            self.take()

    def selection_set(self) -> list:
        self.take("{")
        out = []
        while self.peek() != "}":
            name = self.take()
            alias = name
            if self.peek() == ":":
                self.take(":")
                name = self.take()
            args = {}
            if self.peek() == "(":
                self.take("(")
                while self.peek() != ")":
                    k = self.take()
                    self.take(":")
                    args[k] = self.value()
                self.take(")")
            sub = self.selection_set() if self.peek() == "{" else None
            out.append((alias, name, args, sub))
        self.take("}")
        return out

    def value(self):
        tok = self.take()
        if tok == "$":
            name = self.take()
            return self.vars.get(name)
        if tok.startswith('"'):
            return json.loads(tok)
        if tok == "[":
            items = []
            while self.peek() != "]":
                items.append(self.value())
            self.take("]")
            return items
        if tok == "{":
            obj = {}
            while self.peek() != "}":
                k = self.take()
                self.take(":")
                obj[k] = self.value()
            self.take("}")
            return obj
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if re.fullmatch(r"-?\d+\.\d+", tok):
            return float(tok)
        return {"true": True, "false": False, "null": None}.get(tok, tok)


def parse_query(text: str, variables: dict | None = None) -> list:
    return _Parser(text, variables or {}).document()


# ---------------------------------------------------------------- the traffic model
def _ts(value) -> float:
    if not isinstance(value, str):
        raise ValueError(f"expected a Time like 2026-01-01T00:00:00Z, got {value!r}")
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def _rng(*parts) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big"))


def minute_rows(seed: int, zone: str, minute: float, traffic_factor: float = 1.0) -> list[dict]:
    """The http request rows of one minute: one per (colo, content type, cacheStatus, status)."""
    rows = []
    for region, (colos, ttfb, share) in PROFILE.items():
        for colo in colos:
            r = _rng(seed, zone, int(minute), colo)
            colo_requests = REQUESTS_PER_MINUTE * share / len(colos) * r.uniform(0.85, 1.15) * traffic_factor
            for cls, (types, cshare, hit, size, origin_ms) in CLASSES.items():
                for ct in types:
                    n = colo_requests * cshare / len(types)
                    hit_share = min(0.999, max(0.0, hit + r.uniform(-0.02, 0.02)))
                    miss_kinds = {"miss": 0.5, "expired": 0.3, "dynamic": 0.2} if cls != "static" else \
                        {"miss": 0.6, "expired": 0.4}
                    parts = {"hit": hit_share}
                    for k, w in miss_kinds.items():
                        parts[k] = (1 - hit_share) * w
                    for status_kind, sshare in parts.items():
                        count = n * sshare
                        err5 = count * 0.004 if status_kind != "hit" else 0.0
                        err4 = count * 0.01
                        for code, c in ((200, count - err4 - err5), (404, err4), (502, err5)):
                            c = int(round(c))
                            if c <= 0:
                                continue
                            cached = status_kind == "hit"
                            rows.append({
                                "coloCode": colo, "cacheStatus": status_kind, "edgeResponseStatus": code,
                                "edgeResponseContentTypeName": ct, "datetimeMinute": _iso(minute),
                                "count": c, "edgeResponseBytes": int(c * size * r.uniform(0.9, 1.1)),
                                "visits": int(c * 0.1),
                                "edgeTimeToFirstByteMs": ttfb * (0.8 if cached else 1.35) * r.uniform(0.95, 1.05),
                                "originResponseDurationMs": 0.0 if cached else origin_ms * r.uniform(0.9, 1.1),
                                "_region": region,
                            })
    return rows


def firewall_rows(seed: int, zone: str, minute: float) -> list[dict]:
    r = _rng(seed, zone, int(minute), "firewall")
    out = []
    for action, source, mean in (("block", "waf", 12), ("managed_challenge", "firewallManaged", 6),
                                 ("block", "ratelimit", 3), ("log", "waf", 20)):
        c = max(0, int(r.gauss(mean, mean * 0.2)))
        if c:
            out.append({"action": action, "source": source, "count": c, "datetimeMinute": _iso(minute)})
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class QueryError(Exception):
    def __init__(self, message: str, path: list, code: str | None = None):
        super().__init__(message)
        self.path = path
        self.code = code


class FakeCloudflare:
    """The fake API's state and request handler; ``serve(host, port)`` listens."""

    def __init__(self, tokens: set[str], zones: dict[str, str], seed: int = 42, budget: int = 300,
                 budget_window: float = 300.0, clock=time.time):
        self.tokens = set(tokens)
        self.zones = dict(zones)           # zone id -> plan
        self.seed = seed
        self.budget = budget
        self.budget_window = budget_window
        self.clock = clock
        self.purges: list[dict] = []
        self.graphql_requests = 0
        self.traffic_factor = 1.0
        self._spent: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._listener: Listener | None = None

    # -------------------------------------------------------------- http
    def __call__(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if req.method == "GET" and path == "/_fake/purges":
            with self._lock:
                return Response(200, {"purges": list(self.purges)})
        if req.method == "GET" and path == "/health":
            return Response(200, {"ok": True})
        token, problem = self._auth(req)
        if problem is not None:
            return problem
        if req.method == "POST" and path == "/client/v4/graphql":
            return self.graphql(token, req)
        m = re.fullmatch(r"/client/v4/zones/([^/]+)/purge_cache", path)
        if req.method == "POST" and m:
            return self.purge(m.group(1), req)
        return Response(404, _rest_error(7000, "No route for that URI"))

    def _auth(self, req: Request):
        h = req.headers.get("Authorization") or ""
        if not h.startswith("Bearer ") or not h[7:].strip():
            return None, Response(401, _rest_error(10000, "Authentication error"))
        tok = h[7:].strip()
        if tok not in self.tokens:
            return None, Response(403, _rest_error(9109, "Invalid access token"))
        return tok, None

    def _charge(self, token: str, nodes: int) -> float | None:
        """Spend ``nodes`` queries of the token's budget; the seconds to wait when it is spent."""
        now = self.clock()
        with self._lock:
            q = self._spent.setdefault(token, deque())
            while q and q[0] <= now - self.budget_window:
                q.popleft()
            if len(q) + nodes > self.budget:
                return max(1.0, q[0] + self.budget_window - now) if q else self.budget_window
            q.extend([now] * nodes)
        return None

    def graphql(self, token: str, req: Request) -> Response:
        with self._lock:
            self.graphql_requests += 1
        try:
            body = json.loads(req.body or b"{}")
            query, variables = body["query"], body.get("variables") or {}
            if not isinstance(query, str) or not isinstance(variables, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return Response(400, {"data": None, "errors": [_gql_error("failed to parse the request body", [])]})
        try:
            sel = parse_query(query, variables)
        except GraphQLSyntaxError as exc:
            return Response(200, {"data": None, "errors": [_gql_error(str(exc), [])]})
        zones_sel = [(a, n, args, sub) for a, n, args, sub in _only(sel, "viewer")]
        nodes = sum(len(sub or []) for _, n, _, sub in zones_sel if n == "zones")
        wait = self._charge(token, max(1, nodes))
        if wait is not None:
            return Response(429, {"data": None, "errors": [{
                "message": "rate limiter budget depleted, try again after 5 minutes",
                "path": None, "extensions": {"code": "ratelimit", "timestamp": _iso(self.clock())}}]},
                headers={"Retry-After": str(int(wait) + 1)})
        data, errors = self._viewer(zones_sel)
        return Response(200, {"data": data if data is not None else None, "errors": errors or None})

    def purge(self, zone: str, req: Request) -> Response:
        if zone not in self.zones:
            return Response(404, _rest_error(7003, "Could not route to /zones/" + zone[:40] + "/purge_cache, "
                                                   "perhaps your object identifier is invalid?"))
        try:
            body = req.json()
        except ValueError:
            return Response(400, _rest_error(1012, "Request must contain one of \"purge_everything\", \"files\", "
                                                   "\"tags\", \"hosts\" or \"prefixes\""))
        kinds = [k for k in ("purge_everything", "files", "tags", "hosts", "prefixes") if k in body]
        if len(kinds) != 1 or (kinds[0] != "purge_everything" and not (isinstance(body[kinds[0]], list)
                                                                         and body[kinds[0]])):
            return Response(400, _rest_error(1012, "Request must contain one of \"purge_everything\", \"files\", "
                                                   "\"tags\", \"hosts\" or \"prefixes\""))
        if kinds[0] != "purge_everything" and len(body[kinds[0]]) > 30:
            return Response(400, _rest_error(1019, "Only 30 items may be purged per request"))
        with self._lock:
            self.purges.append({"zone": zone, kinds[0]: body[kinds[0]], "at": self.clock()})
        return Response(200, {"success": True, "errors": [], "messages": [], "result": {"id": zone}})

    # -------------------------------------------------------------- GraphQL evaluation
    def _viewer(self, zones_sel):
        if not zones_sel:
            return None, [_gql_error("the query must select viewer { zones(...) { ... } }", ["viewer"])]
        out_zones, errors = [], []
        for alias, name, args, sub in zones_sel:
            if name != "zones":
                return None, [_gql_error(f"unknown field \"{name}\" on type \"viewer\"", ["viewer", alias])]
            flt = args.get("filter") or {}
            ids = [flt["zoneTag"]] if "zoneTag" in flt else list(flt.get("zoneTag_in") or [])
            if not ids:
                return None, [_gql_error("zones needs a filter with zoneTag or zoneTag_in", ["viewer", alias])]
            for zi, zid in enumerate(ids):
                if zid not in self.zones:
                    return None, [_gql_error(f"zone '{zid}' does not exist or the token has no access to it",
                                             ["viewer", alias, zi], "authz")]
                zone_out = {}
                for nalias, node, nargs, nsub in sub or []:
                    try:
                        zone_out[nalias] = self._node(zid, node, nargs, nsub, ["viewer", alias, zi, nalias])
                    except QueryError as exc:
                        if exc.code == "authz":  # plan limit: this node is null, the rest answers
                            zone_out[nalias] = None
                            errors.append(_gql_error(str(exc), exc.path, exc.code))
                        else:
                            return None, [_gql_error(str(exc), exc.path, exc.code)]
                out_zones.append(zone_out)
        return {"viewer": {"zones": out_zones}}, errors

    def _node(self, zid: str, node: str, args: dict, sel, path: list):
        if node not in NODE_FIELDS:
            raise QueryError(f"unknown field \"{node}\" on type \"zone\"", path)
        fields = NODE_FIELDS[node]
        for a in args:
            if a not in ("limit", "filter", "orderBy"):
                raise QueryError(f"unknown argument \"{a}\" on field \"{node}\"", path)
        limit = args.get("limit")
        if not isinstance(limit, int) or not 0 < limit <= 10000:
            raise QueryError("limit must be between 1 and 10000", path)
        flt = args.get("filter") or {}
        for k in flt:
            if k not in FILTERS:
                raise QueryError(f"unknown filter \"{k}\" on \"{node}\"", path)
        try:
            start, end = _ts(flt.get("datetime_geq")), _ts(flt.get("datetime_lt"))
        except ValueError as exc:
            raise QueryError(f"filter needs datetime_geq and datetime_lt: {exc}", path) from None
        if end <= start or end - start > 86400:
            raise QueryError("the time range must be positive and at most 1 day", path)
        if start < self.clock() - 30 * 86400:
            raise QueryError("cannot request data older than 30 days", path)
        wanted: dict[str, set | None] = {}
        for _a, f, _args, fsub in sel or []:
            if f not in fields:
                raise QueryError(f"unknown field \"{f}\" on type \"{node}\"", path)
            names = {x[1] for x in (fsub or [])}
            allowed = fields[f]
            if allowed is not None:
                bad = names - allowed
                if bad or not names:
                    raise QueryError(f"unknown field \"{sorted(bad)[0] if bad else f}\" on \"{node}.{f}\"", path)
            wanted[f] = names if allowed is not None else None
        if "quantiles" in wanted and "quantiles" in PLAN_LIMITS.get(self.zones[zid], set()):
            raise QueryError(f"zone '{zid}' does not have access to the path", path, "authz")
        rows = self._rows(zid, node, start, end, flt)
        dims = sorted(wanted.get("dimensions") or ())
        groups: dict[tuple, list] = {}
        for row in rows:
            groups.setdefault(tuple(row[d] for d in dims), []).append(row)
        out = []
        for key, members in sorted(groups.items(), key=lambda kv: -sum(m["count"] for m in kv[1])):
            n = sum(m["count"] for m in members)
            g: dict = {}
            if "count" in wanted:
                g["count"] = n
            if "dimensions" in wanted:
                g["dimensions"] = dict(zip(dims, key))
            if "sum" in wanted:
                g["sum"] = {f: sum(m[f] for m in members) for f in wanted["sum"]}
            if "avg" in wanted:
                g["avg"] = {f: (1 if f == "sampleInterval" else
                                round(sum(m[f] * m["count"] for m in members) / n, 3) if n else 0)
                            for f in wanted["avg"]}
            if "quantiles" in wanted:
                q = {}
                for f in wanted["quantiles"]:
                    base = "edgeTimeToFirstByteMs" if f.startswith("edge") else "originResponseDurationMs"
                    src = [m for m in members if base == "edgeTimeToFirstByteMs" or m[base] > 0]
                    w = sum(m["count"] for m in src)
                    mean = sum(m[base] * m["count"] for m in src) / w if w else 0.0
                    q[f] = round(mean * QUANTILE_FACTORS[f[-3:]], 3)
                g["quantiles"] = q
            out.append(g)
            if len(out) >= limit:
                break
        return out

    def _rows(self, zid: str, node: str, start: float, end: float, flt: dict) -> list[dict]:
        settled = self.clock() - SETTLE
        rows = []
        m = start - start % 60
        while m < end:
            if m >= start and m + 60 <= settled:
                rows += (minute_rows(self.seed, zid, m, self.traffic_factor) if node == "httpRequestsAdaptiveGroups"
                         else firewall_rows(self.seed, zid, m))
            m += 60
        if "coloCode_in" in flt:
            keep = set(flt["coloCode_in"] or [])
            rows = [r for r in rows if r.get("coloCode") in keep]
        if "coloCode_notin" in flt:
            drop = set(flt["coloCode_notin"] or [])
            rows = [r for r in rows if r.get("coloCode") not in drop]
        for k in ("coloCode", "cacheStatus", "edgeResponseStatus", "action"):
            if k in flt:
                rows = [r for r in rows if r.get(k) == flt[k]]
        return rows

    # -------------------------------------------------------------- process
    def serve(self, host: str, port: int) -> Listener:
        self._listener = Listener("cloudflare", host, port, self)
        self._listener.open()
        return self._listener

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def _only(sel: list, name: str) -> list:
    for _alias, n, _args, sub in sel:
        if n == name:
            return sub or []
    return []


def _gql_error(message: str, path: list, code: str | None = None) -> dict:
    e = {"message": message, "path": path or None, "extensions": {"timestamp": _iso(time.time())}}
    if code:
        e["extensions"]["code"] = code
    return e


def _rest_error(code: int, message: str) -> dict:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - process entry
    p = argparse.ArgumentParser(prog="python -m demo.cloudflare")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token-file", required=True, help="the accepted API token")
    p.add_argument("--zone", action="append", default=[], help="ZONE_ID[:PLAN] (plan free|pro|business|enterprise)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--budget", type=int, default=300, help="GraphQL queries per 5 minutes per token")
    a = p.parse_args(argv)
    setup_logging("INFO")
    token = open(a.token_file, encoding="utf-8").read().strip()
    zones = dict((z.split(":", 1) + ["pro"])[:2] for z in a.zone) or {"0" * 32: "pro"}
    fake = FakeCloudflare({token}, zones, seed=a.seed, budget=a.budget)
    fake.serve(a.host, a.port)
    try:
        wait_until_stopped()
    finally:
        fake.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
