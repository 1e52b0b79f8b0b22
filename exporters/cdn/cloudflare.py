"""Cloudflare GraphQL Analytics API: one closed, offset window per zone, exported as gauges.

Each fetch asks, in one GraphQL request (POST <api_url>/graphql, bearer token), for the window
[end - window, end) where end = now - offset rounded down to the minute (Cloudflare's adaptive
datasets settle a few minutes late):

- ``traffic``: ``httpRequestsAdaptiveGroups`` by coloCode, cacheStatus, edgeResponseStatus and
  edgeResponseContentTypeName: ``count``, ``sum.edgeResponseBytes``, ``avg.edgeTimeToFirstByteMs``
  and ``avg.originResponseDurationMs``;
- ``latency_<region>``: the same dataset filtered to the region's colos (coloCode_in, "other":
  coloCode_notin every listed colo) with ``quantiles`` (edgeTimeToFirstByteMsP50/P95/P99,
  originResponseDurationMsP50/P95/P99): percentiles do not add up, so each region gets its own;
- ``firewall``: ``firewallEventsAdaptiveGroups`` by action and source.

An answer whose ``errors`` is not empty is an error even with HTTP 200. An error that names a
path under ``latency_*`` or ``firewall`` and says the zone has no access to it (code ``authz``,
or "does not have access") is the zone's plan: that part is marked unavailable (exported as
``opsstack_cdn_cloudflare_available{field} 0`` and no value series), left out of the next
queries, and asked again after ``plan_recheck``. Any other error fails the whole window: the
error is exported with its reason and nothing of the window is (the last good values are never
re-exported as fresh).

The API allows 300 GraphQL queries per 5 minutes per user; a fetch is at most 6 queries (nodes)
and happens at most once every ``min_interval`` whatever the scrape rate: in the exporter a
background thread fetches (CdnCollector.start), scrapes serve the kept result (``kept()``; a
fetch swaps in a whole new State), whose age is exported. A 429 waits for Retry-After (at least
min_interval) before the next try.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests

from exporters.cdn.regions import REGIONS, colo_table, colos_of, region_of

log = logging.getLogger("opsstack.exporter.cdn")

# cacheStatus values that were answered from Cloudflare's cache
CACHED = frozenset({"hit", "stale", "updating", "revalidated"})
QUANTILES = (("P50", "0.5"), ("P95", "0.95"), ("P99", "0.99"))
# optional parts of the query a plan may refuse -> the `field` label of ..._available
OPTIONAL = ("quantiles", "firewall")


class CloudflareError(RuntimeError):
    """A fetch that failed; ``reason`` is a bounded label value."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


def window_for(now: float, offset: float, width: float) -> tuple[float, float]:
    """The closed window [start, end) ending ``offset`` before now, on whole minutes."""
    end = math.floor((now - offset) / 60.0) * 60.0
    return end - width, end


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _gql_list(items) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def build_query(quantiles: bool, firewall: bool, limit: int = 10000) -> str:
    """The GraphQL query text (variables: zoneTag, start, end)."""
    win = "datetime_geq: $start, datetime_lt: $end"
    parts = [f"""      traffic: httpRequestsAdaptiveGroups(limit: {limit}, filter: {{{win}}}) {{
        count
        sum {{ edgeResponseBytes }}
        avg {{ sampleInterval edgeTimeToFirstByteMs originResponseDurationMs }}
        dimensions {{ coloCode cacheStatus edgeResponseStatus edgeResponseContentTypeName }}
      }}"""]
    if quantiles:
        listed = sorted(colo_table())
        for region in REGIONS:
            flt = (f"coloCode_in: {_gql_list(colos_of(region))}" if region != "other"
                   else f"coloCode_notin: {_gql_list(c for c in listed if region_of(c) != 'other')}")
            parts.append(f"""      latency_{region}: httpRequestsAdaptiveGroups(limit: 1, filter: {{{win}, {flt}}}) {{
        count
        quantiles {{ edgeTimeToFirstByteMsP50 edgeTimeToFirstByteMsP95 edgeTimeToFirstByteMsP99
                    originResponseDurationMsP50 originResponseDurationMsP95 originResponseDurationMsP99 }}
      }}""")
    if firewall:
        parts.append(f"""      firewall: firewallEventsAdaptiveGroups(limit: 1000, filter: {{{win}}}) {{
        count
        dimensions {{ action source }}
      }}""")
    body = "\n".join(parts)
    return ("query CdnWindow($zoneTag: string!, $start: Time!, $end: Time!) {\n  viewer {\n"
            "    zones(filter: {zoneTag: $zoneTag}) {\n" + body + "\n    }\n  }\n}\n")


@dataclass
class Agg:
    """Sums over a window for one (region, class)."""
    requests: float = 0.0
    cached: float = 0.0
    bytes: float = 0.0
    cached_bytes: float = 0.0
    status_4xx: float = 0.0
    status_5xx: float = 0.0
    edge_ms: float = 0.0        # sum of avg * count
    origin_ms: float = 0.0      # over requests that went to the origin
    origin_requests: float = 0.0
    statuses: dict = field(default_factory=dict)  # cacheStatus -> requests

    def add(self, other: "Agg") -> None:
        for k in ("requests", "cached", "bytes", "cached_bytes", "status_4xx", "status_5xx", "edge_ms",
                  "origin_ms", "origin_requests"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0.0) + v


@dataclass
class Window:
    """What one fetch learned about [start, end) of a zone."""
    start: float
    end: float
    traffic: dict[tuple[str, str], Agg]             # (region, class) -> sums
    quantiles: dict[str, dict[str, float]] | None    # region -> {edge_p95: seconds, ...}; None: unavailable
    firewall: dict[tuple[str, str], float] | None    # (action, source) -> events; None: unavailable

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _plan_limited(err: dict) -> bool:
    code = str((err.get("extensions") or {}).get("code", "")).lower()
    msg = str(err.get("message", "")).lower()
    return code == "authz" or "does not have access" in msg or "not available" in msg and "plan" in msg


def _optional_of(err: dict) -> str | None:
    """The optional part an error's path points at (quantiles|firewall), else None."""
    for p in err.get("path") or []:
        if isinstance(p, str) and p.startswith("latency_"):
            return "quantiles"
        if p == "firewall":
            return "firewall"
    return None


def classify(content_type: str | None, classes: list[tuple[str, frozenset]], default: str) -> str:
    ct = str(content_type or "").lower()
    for name, types in classes:
        if ct in types:
            return name
    return default


def parse(data: dict, start: float, end: float, classes, default_class: str,
          asked: dict[str, bool]) -> tuple[Window, dict[str, str]]:
    """(the window, {optional part: why unavailable}) from a GraphQL answer's JSON whose
    ``errors`` are only plan limits on optional parts (``check_errors`` ran first)."""
    try:
        zones = data["data"]["viewer"]["zones"]
        zone = zones[0] if zones else {}
    except (KeyError, TypeError, IndexError):
        raise CloudflareError("bad_response", "no data.viewer.zones in the answer") from None
    if not isinstance(zone, dict) or not isinstance(zone.get("traffic"), list):
        raise CloudflareError("bad_response", "no traffic groups in the answer")
    traffic: dict[tuple[str, str], Agg] = {}
    for g in zone["traffic"]:
        dims = g.get("dimensions") or {}
        n = float(g.get("count") or 0)
        avg = g.get("avg") or {}
        status = str(dims.get("cacheStatus") or "unknown").lower()
        code = int(dims.get("edgeResponseStatus") or 0)
        key = (region_of(dims.get("coloCode")),
               classify(dims.get("edgeResponseContentTypeName"), classes, default_class))
        a = traffic.setdefault(key, Agg())
        b = float((g.get("sum") or {}).get("edgeResponseBytes") or 0)
        a.requests += n
        a.bytes += b
        a.statuses[status] = a.statuses.get(status, 0.0) + n
        if status in CACHED:
            a.cached += n
            a.cached_bytes += b
        elif avg.get("originResponseDurationMs") is not None:
            a.origin_ms += float(avg["originResponseDurationMs"]) * n
            a.origin_requests += n
        if 400 <= code < 500:
            a.status_4xx += n
        elif code >= 500:
            a.status_5xx += n
        if avg.get("edgeTimeToFirstByteMs") is not None:
            a.edge_ms += float(avg["edgeTimeToFirstByteMs"]) * n
    missing: dict[str, str] = {}
    quantiles = None
    if asked.get("quantiles"):
        quantiles = {}
        for region in REGIONS:
            rows = zone.get(f"latency_{region}")
            if rows is None:
                missing["quantiles"] = "field missing from the answer"
                quantiles = None
                break
            q = (rows[0].get("quantiles") if rows else None) or {}
            if rows and not q:
                missing["quantiles"] = "no quantiles in the answer"
                quantiles = None
                break
            if rows and float(rows[0].get("count") or 0) > 0:
                vals = {}
                for src, name in (("edgeTimeToFirstByteMs", "edge"), ("originResponseDurationMs", "origin")):
                    for suffix, qv in QUANTILES:
                        v = q.get(src + suffix)
                        if v is not None:
                            vals[f"{name}:{qv}"] = float(v) / 1000.0
                quantiles[region] = vals
    firewall = None
    if asked.get("firewall"):
        rows = zone.get("firewall")
        if rows is None:
            missing["firewall"] = "field missing from the answer"
        else:
            firewall = {}
            for g in rows:
                d = g.get("dimensions") or {}
                k = (str(d.get("action") or "unknown"), str(d.get("source") or "unknown"))
                firewall[k] = firewall.get(k, 0.0) + float(g.get("count") or 0)
    return Window(start, end, traffic, quantiles, firewall), missing


def check_errors(data: dict) -> dict[str, str]:
    """{optional part: message} for plan-limit errors on optional parts; raises CloudflareError
    for any other error (an HTTP 200 carrying ``errors`` is an error)."""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return {}
    limited: dict[str, str] = {}
    for e in errors:
        e = e if isinstance(e, dict) else {"message": str(e)}
        part = _optional_of(e)
        if part and _plan_limited(e):
            limited[part] = str(e.get("message", ""))[:200]
            continue
        code = str((e.get("extensions") or {}).get("code", "")).lower()
        if code in ("quota", "ratelimit", "rate_limit"):  # the 5-minute query budget: wait it out
            raise CloudflareError("graphql_quota", str(e.get("message", ""))[:300], retry_after=300.0)
        raise CloudflareError("graphql_error", str(e.get("message", ""))[:300])
    return limited


@dataclass
class State:
    window: Window | None = None
    error: CloudflareError | None = None
    fetched_at: float = 0.0     # monotonic time of the last attempt
    fetched_wall: float = 0.0   # wall time of the last good fetch
    duration: float = 0.0
    next_allowed: float = 0.0   # monotonic
    unavailable: dict = field(default_factory=dict)   # part -> (reason, until monotonic)
    queries: dict = field(default_factory=dict)       # result -> count (API calls)


class CloudflareZone:
    """Fetches and keeps one zone's window; ``current()`` is what a scrape exports."""

    def __init__(self, settings, zone, token, classes, default_class: str,
                 clock=time.time, monotonic=time.monotonic, session: requests.Session | None = None):
        self.s = settings
        self.name = zone.name
        self.zone_id = zone.id
        self.token = token  # the token, or a function reading it (a token file, read at each fetch)
        self.classes = classes
        self.default_class = default_class
        self.clock = clock
        self.monotonic = monotonic
        self.http = session or requests.Session()
        self.state = State()
        self._lock = threading.Lock()

    def asked(self, now_mono: float) -> dict[str, bool]:
        want = {"quantiles": bool(self.s.quantiles), "firewall": bool(self.s.firewall)}
        for part, (_, until) in list(self.state.unavailable.items()):
            if now_mono < until:
                want[part] = False
        return want

    def current(self) -> State:
        """The kept state, refreshed first when ``min_interval`` has passed since the last try
        (the exporter's refresher thread does that instead, then scrapes use ``kept()``)."""
        with self._lock:
            now = self.monotonic()
            if self.due(now):
                self._fetch(now)
            return self.state

    def kept(self) -> State:
        """The kept state as it is (no fetch, no wait: a fetch swaps in a whole new State)."""
        return self.state

    def due(self, now_mono: float) -> bool:
        return self.state.fetched_at == 0.0 or now_mono >= self.state.next_allowed

    def refresh_if_due(self) -> float:
        """Fetch when due; the seconds until the next fetch is due."""
        with self._lock:
            now = self.monotonic()
            if self.due(now):
                self._fetch(now)
            return max(0.0, self.state.next_allowed - self.monotonic())

    def _fetch(self, now_mono: float) -> None:
        old = self.state
        st = State(window=old.window, error=old.error, fetched_at=old.fetched_at, fetched_wall=old.fetched_wall,
                   duration=old.duration, next_allowed=old.next_allowed, unavailable=dict(old.unavailable),
                   queries=dict(old.queries))
        try:
            self._fetch_into(st, now_mono)
        finally:
            self.state = st

    def _fetch_into(self, st: State, now_mono: float) -> None:
        asked = self.asked(now_mono)
        start, end = window_for(self.clock(), float(self.s.offset), float(self.s.window))
        t0 = time.perf_counter()
        st.fetched_at = now_mono
        st.next_allowed = now_mono + float(self.s.min_interval)
        try:
            data = self._post(build_query(asked["quantiles"], asked["firewall"]),
                              {"zoneTag": self.zone_id, "start": iso(start), "end": iso(end)})
            limited = check_errors(data)
            if limited and not isinstance(data.get("data"), dict):
                for part, msg in limited.items():  # the whole answer refused: ask without it next time
                    st.unavailable[part] = (msg or "refused by the zone's plan", now_mono + float(self.s.plan_recheck))
                raise CloudflareError("plan_limited", f"the zone's plan refused {', '.join(sorted(limited))} "
                                                      "and the answer holds no data")
            for part, msg in limited.items():
                asked[part] = False
                st.unavailable[part] = (msg or "refused by the zone's plan", now_mono + float(self.s.plan_recheck))
                log.info("event=cloudflare_field_unavailable zone=%s field=%s reason=%r", self.name, part, msg)
            win, missing = parse(data, start, end, self.classes, self.default_class, asked)
            for part, msg in missing.items():
                st.unavailable[part] = (msg, now_mono + float(self.s.plan_recheck))
            for part in OPTIONAL:  # asked and answered: available again
                if asked.get(part) and part not in missing and part not in limited:
                    st.unavailable.pop(part, None)
            st.window, st.error = win, None
            st.fetched_wall = self.clock()
            st.queries["ok"] = st.queries.get("ok", 0) + 1
        except CloudflareError as exc:
            st.window, st.error = None, exc
            st.queries[exc.reason] = st.queries.get(exc.reason, 0) + 1
            if exc.retry_after:
                st.next_allowed = max(st.next_allowed, now_mono + exc.retry_after)
            log.warning("event=cloudflare_fetch_failed zone=%s reason=%s error=%r", self.name, exc.reason, str(exc))
        finally:
            st.duration = time.perf_counter() - t0

    def _post(self, query: str, variables: dict) -> dict:
        url = str(self.s.api_url).rstrip("/") + "/graphql"
        try:
            token = self.token() if callable(self.token) else self.token
        except OSError as exc:
            raise CloudflareError("token_unreadable", f"cannot read the token file: {exc.strerror or exc}") from None
        try:
            r = self.http.post(url, json={"query": query, "variables": variables}, timeout=float(self.s.timeout),
                               headers={"Authorization": f"Bearer {token}"})
        except requests.Timeout:
            raise CloudflareError("timeout", f"no answer within {float(self.s.timeout):g}s") from None
        except requests.RequestException as exc:
            raise CloudflareError("connection", f"{type(exc).__name__}: {exc}") from None
        if r.status_code == 429:
            try:
                ra = float(r.headers.get("Retry-After", "0"))
            except ValueError:
                ra = 0.0
            raise CloudflareError("rate_limited", "HTTP 429 from the API",
                                  retry_after=max(ra, float(self.s.min_interval)))
        if r.status_code in (401, 403):
            raise CloudflareError(f"http_{r.status_code}", _first_error(r) or f"HTTP {r.status_code}")
        if r.status_code != 200:
            raise CloudflareError("http_5xx" if r.status_code >= 500 else "http_error",
                                  f"HTTP {r.status_code}: {_first_error(r) or r.text[:200]}")
        try:
            data = r.json()
        except ValueError:
            raise CloudflareError("bad_response", "the answer is not JSON") from None
        if not isinstance(data, dict):
            raise CloudflareError("bad_response", "the answer is not a JSON object")
        return data


def _first_error(r) -> str:
    try:
        errs = r.json().get("errors") or []
        return str(errs[0].get("message", ""))[:200] if errs else ""
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
