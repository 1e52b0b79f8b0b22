"""The CDN exporter's collector: Cloudflare windows, Varnish and Redis, cache policy.

Varnish (`varnishstat -j`) and Redis (INFO) are read at scrape time. Cloudflare windows are
fetched at most every min_interval per zone: in the served exporter by a background thread
(``start()``; scrapes serve the kept window and never wait for the API), otherwise (tests,
`opsstack cdn report`) in the scrape that finds a fetch due. ``start()`` also runs one
varnishncsa per Varnish instance for the requests per content class (exporters/cdn/varnish_log.py).

Sources (``opsstack_exporter_up{exporter="cdn",source}``): ``cloudflare:<zone>``,
``varnish:<instance>``, ``redis:<instance>``. A source that fails exports its ``..._up 0`` (and for
Cloudflare the error's reason) and none of its value series. Names: docs/metrics.md.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core.config import view
from core.exporter import ExporterCollector, Scrape
from core.resp import RedisConn, parse_info
from exporters.cdn import varnish as varnish_mod
from exporters.cdn.cloudflare import OPTIONAL, Agg, CloudflareZone
from exporters.cdn.policy import judge, overall, policies
from exporters.cdn.regions import REGIONS
from exporters.cdn.varnish_log import ClassLog


def token_source(cf):
    """The Cloudflare token: a function reading token_file (at each fetch: a rotated token is
    picked up, a missing file is a fetch error, not a crash) when set, else token."""
    if cf.token_file:
        path = Path(cf.token_file)
        return lambda: path.read_text(encoding="utf-8").strip()
    return cf.token or ""


def _g(name, doc, labels):
    return GaugeMetricFamily(name, doc, labels=labels)


class CdnCollector(ExporterCollector):
    exporter = "cdn"

    def __init__(self, settings, clock=time.time, monotonic=time.monotonic):
        """``settings``: the view of exporters.cdn (core.config.view)."""
        self.s = settings
        self.classes = policies(settings.classes, settings.hit_target)
        self.class_types = [(p.name, p.content_types) for p in self.classes]
        self.zones: list[CloudflareZone] = []
        if settings.cloudflare.enabled:
            token = token_source(settings.cloudflare)
            self.zones = [CloudflareZone(settings.cloudflare, z, token, self.class_types, settings.default_class,
                                         clock=clock, monotonic=monotonic) for z in settings.cloudflare.zones]
        self.clock = clock
        self.monotonic = monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.class_logs: dict[str, ClassLog] = {}

    # ------------------------------------------------------------------ background refresh
    def start(self, first_wait: float = 5.0) -> None:
        """Refresh the Cloudflare zones in a thread of their own (each at most every min_interval);
        scrapes then serve the kept windows and never wait for the API. Waits up to
        ``first_wait`` seconds for the first fetch of every zone. Starts the varnishncsa of each
        Varnish instance too (varnish.class_counts)."""
        vs = self.s.varnish
        if vs.class_counts and not self.class_logs:
            for inst in vs.instances:
                self.class_logs[inst.name] = ClassLog(vs.varnishncsa, inst.workdir, [p.name for p in self.classes],
                                                      self.s.default_class)
                self.class_logs[inst.name].start()
        if not self.zones or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._refresh_loop, name="cdn-cloudflare", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + first_wait
        while time.monotonic() < deadline and any(z.kept().fetched_at == 0.0 for z in self.zones):
            self._stop.wait(0.05)

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            wait = min(z.refresh_if_due() for z in self.zones)
            self._stop.wait(min(max(0.5, wait), 1.0))  # cheap: a due check per second

    def close(self) -> None:
        self._stop.set()
        for cl in self.class_logs.values():
            cl.stop()
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

    @classmethod
    def from_config(cls, cfg: dict, **kw) -> "CdnCollector":
        return cls(view(cfg, "exporters.cdn"), **kw)

    # ------------------------------------------------------------------ policy (also for the report)
    def verdicts(self, agg: dict[tuple[str, str], Agg]):
        per_class: dict[str, Agg] = {p.name: Agg() for p in self.classes}
        for (_region, cls), a in agg.items():
            per_class.setdefault(cls, Agg()).add(a)
        out = [judge(p, per_class[p.name].requests, per_class[p.name].cached, per_class[p.name].statuses,
                     per_class[p.name].status_5xx, float(self.s.min_requests)) for p in self.classes]
        total = Agg()
        for a in per_class.values():
            total.add(a)
        return out, overall(out, total.cached, total.requests, float(self.s.hit_target), float(self.s.min_requests))

    # ------------------------------------------------------------------ collection
    def collect_sources(self, scrape: Scrape):
        yield from self._policy_config()
        if self.zones:
            yield from self._cloudflare(scrape)
        if self.s.varnish.instances:
            yield from self._varnish(scrape)
        if self.s.redis.instances:
            yield from self._redis(scrape)

    def _policy_config(self):
        ttl = _g("opsstack_cdn_cache_policy_ttl_seconds", "Configured cache TTL of the content class.", ["class"])
        tgt = _g("opsstack_cdn_cache_policy_hit_target_ratio", "Configured cached-share target of the content "
                 "class (class=\"all\": the overall target).", ["class"])
        for p in self.classes:
            ttl.add_metric([p.name], p.ttl)
            tgt.add_metric([p.name], p.hit_target)
        tgt.add_metric(["all"], float(self.s.hit_target))
        return [ttl, tgt]

    def _cloudflare(self, scrape: Scrape):
        up = _g("opsstack_cdn_cloudflare_up", "1 if the last Cloudflare GraphQL fetch of the zone succeeded.", ["zone"])
        err = _g("opsstack_cdn_cloudflare_error", "1 for the reason the last fetch of the zone failed "
                 "(http_401, http_403, rate_limited, graphql_error, graphql_quota, timeout, connection, "
                 "bad_response, http_5xx, http_error, plan_limited, token_unreadable; pending: no fetch finished "
                 "yet).", ["zone", "reason"])
        avail = _g("opsstack_cdn_cloudflare_available", "1 if the zone's plan answers this part of the query "
                   "(quantiles, firewall), 0 if it refused it (no value series then).", ["zone", "field"])
        age = _g("opsstack_cdn_cloudflare_fetch_age_seconds", "Seconds since the zone's last good fetch "
                 "(fetches are at most every min_interval).", ["zone"])
        fdur = _g("opsstack_cdn_cloudflare_fetch_duration_seconds", "Duration of the zone's last fetch (fetches "
                  "run in the background, never in a scrape).", ["zone"])
        calls = CounterMetricFamily("opsstack_cdn_cloudflare_api_requests", "GraphQL requests sent for the zone, "
                                    "by result (ok or the error reason).", labels=["zone", "result"])
        wstart = _g("opsstack_cdn_window_start_timestamp_seconds", "Start of the closed window the zone's CDN "
                    "gauges cover (unix time).", ["zone"])
        wend = _g("opsstack_cdn_window_end_timestamp_seconds", "End of the closed window the zone's CDN gauges "
                  "cover (unix time; now minus the offset).", ["zone"])
        rps = _g("opsstack_cdn_requests_per_second", "Requests per second at the edge over the window.",
                 ["zone", "region", "class"])
        hit = _g("opsstack_cdn_cache_hit_ratio", "Share of the window's requests answered from the edge cache "
                 "(hit, stale, updating, revalidated).", ["zone", "region", "class"])
        bps = _g("opsstack_cdn_response_bytes_per_second", "Bytes per second sent by the edge over the window.",
                 ["zone", "region", "class"])
        saved = _g("opsstack_cdn_saved_bytes_per_second", "Bytes per second served from the edge cache (not "
                   "fetched from the origin) over the window.", ["zone", "region", "class"])
        errr = _g("opsstack_cdn_error_ratio", "Share of the window's requests answered 4xx or 5xx.",
                  ["zone", "region", "class", "code_class"])
        edge = _g("opsstack_cdn_edge_response_seconds", "Mean edge time to first byte over the window's requests.",
                  ["zone", "region"])
        origin = _g("opsstack_cdn_origin_response_seconds", "Mean origin response duration over the window's "
                    "requests that went to the origin.", ["zone", "region"])
        edge_q = _g("opsstack_cdn_edge_response_quantile_seconds", "Edge time to first byte percentile over the "
                    "window (where the plan gives percentiles).", ["zone", "region", "quantile"])
        origin_q = _g("opsstack_cdn_origin_response_quantile_seconds", "Origin response duration percentile over "
                      "the window (where the plan gives percentiles).", ["zone", "region", "quantile"])
        fw = _g("opsstack_cdn_firewall_events_per_second", "Firewall events per second over the window, by action "
                "and source.", ["zone", "action", "source"])
        cls_hit = _g("opsstack_cdn_class_cache_hit_ratio", "Cached share of the window's requests of the content "
                     "class, all regions (class=\"all\": every class).", ["zone", "class"])
        cls_below = _g("opsstack_cdn_class_below_target", "1 if the class was judged (enough requests) and its "
                       "cached share is below its target.", ["zone", "class"])
        rec = _g("opsstack_cdn_cache_policy_recommendation", "1 for the reason a class misses its target "
                 "(ttl_too_short, uncacheable, cold_misses, origin_errors); text: `opsstack cdn report`.",
                 ["zone", "class", "reason"])
        for z in self.zones:
            st = z.kept() if self._thread is not None else z.current()
            ok = st.error is None and st.window is not None
            reason = "pending" if st.error is None else st.error.reason  # pending: no fetch finished yet
            scrape.set_up(f"cloudflare:{z.name}", ok, None if ok else f"{reason}: {st.error or 'no fetch yet'}")
            up.add_metric([z.name], 1.0 if ok else 0.0)
            fdur.add_metric([z.name], st.duration)
            for result, n in sorted(st.queries.items()):
                calls.add_metric([z.name, result], float(n))
            if st.fetched_wall:
                age.add_metric([z.name], max(0.0, self.clock() - st.fetched_wall))
            if not ok:
                err.add_metric([z.name, reason], 1.0)
                continue
            w = st.window
            for part in OPTIONAL:
                asked = getattr(z.s, part)
                if asked:
                    avail.add_metric([z.name, part], 0.0 if part in st.unavailable else 1.0)
            wstart.add_metric([z.name], w.start)
            wend.add_metric([z.name], w.end)
            secs = max(w.seconds, 1.0)
            per_region: dict[str, Agg] = {}
            for (region, cls), a in sorted(w.traffic.items()):
                lv = [z.name, region, cls]
                rps.add_metric(lv, a.requests / secs)
                bps.add_metric(lv, a.bytes / secs)
                saved.add_metric(lv, a.cached_bytes / secs)
                if a.requests > 0:
                    hit.add_metric(lv, a.cached / a.requests)
                    errr.add_metric(lv + ["4xx"], a.status_4xx / a.requests)
                    errr.add_metric(lv + ["5xx"], a.status_5xx / a.requests)
                per_region.setdefault(region, Agg()).add(a)
            for region in REGIONS:
                a = per_region.get(region)
                if a is None or a.requests <= 0:
                    continue
                edge.add_metric([z.name, region], a.edge_ms / a.requests / 1000.0)
                if a.origin_requests > 0:
                    origin.add_metric([z.name, region], a.origin_ms / a.origin_requests / 1000.0)
            if w.quantiles is not None:
                for region, vals in sorted(w.quantiles.items()):
                    for key, v in sorted(vals.items()):
                        which, q = key.split(":")
                        (edge_q if which == "edge" else origin_q).add_metric([z.name, region, q], v)
            if w.firewall is not None:
                for (action, source), n in sorted(w.firewall.items()):
                    fw.add_metric([z.name, action, source], n / secs)
            verdicts, all_v = self.verdicts(w.traffic)
            for v in verdicts + [all_v]:
                if v.hit_ratio is not None:
                    cls_hit.add_metric([z.name, v.cls], v.hit_ratio)
                if v.judged:
                    cls_below.add_metric([z.name, v.cls], 1.0 if v.below else 0.0)
                if v.reason:
                    rec.add_metric([z.name, v.cls, v.reason], 1.0)
        return [up, err, avail, age, fdur, calls, wstart, wend, rps, hit, bps, saved, errr, edge, origin, edge_q,
                origin_q, fw, cls_hit, cls_below, rec]

    def _varnish(self, scrape: Scrape):
        vs = self.s.varnish
        up = _g("opsstack_varnish_up", "1 if varnishstat answered for the instance.", ["instance"])
        lookups = CounterMetricFamily("opsstack_varnish_cache_lookups", "Cache lookups by result (hit, miss, "
                                      "hitpass, hitmiss; MAIN.cache_*).", labels=["instance", "result"])
        fams = {}
        docs = {
            "grace_hits_total": ("counter", "Hits on objects past their TTL, in grace (MAIN.cache_hit_grace)."),
            "client_requests_total": ("counter", "Client requests received (MAIN.client_req)."),
            "backend_connections_total": ("counter", "Backend connections opened (MAIN.backend_conn)."),
            "backend_connection_failures_total": ("counter", "Backend connections that failed (MAIN.backend_fail)."),
            "backend_unhealthy_total": ("counter", "Fetches not tried because the backend was unhealthy "
                                                   "(MAIN.backend_unhealthy)."),
            "objects": ("gauge", "Objects in the cache (MAIN.n_object)."),
            "lru_nuked_total": ("counter", "Objects evicted to make room (MAIN.n_lru_nuked)."),
            "bans": ("gauge", "Bans in the ban list (MAIN.bans)."),
            "bans_added_total": ("counter", "Bans added (MAIN.bans_added)."),
            "bans_objects_killed_total": ("counter", "Objects removed by bans (MAIN.bans_obj_killed)."),
            "purged_objects_total": ("counter", "Objects purged, xkey purges too (MAIN.n_obj_purged)."),
            "uptime_seconds": ("counter", "Child process uptime (MAIN.uptime)."),
        }
        for suffix, (kind, doc) in docs.items():
            name = "opsstack_varnish_" + suffix
            if kind == "counter":
                fams[suffix] = CounterMetricFamily(name[:-6] if name.endswith("_total") else name, doc,
                                                   labels=["instance"])
            else:
                fams[suffix] = _g(name, doc, ["instance"])
        be_req = CounterMetricFamily("opsstack_varnish_backend_requests", "Backend requests per backend (VBE.*.req).",
                                     labels=["instance", "backend"])
        be_fail = CounterMetricFamily("opsstack_varnish_backend_failures", "Backend connection failures per "
                                      "backend (VBE.*.fail).", labels=["instance", "backend"])
        for inst in vs.instances:
            try:
                counters = varnish_mod.read(vs.varnishstat, inst.workdir, float(vs.timeout))
            except varnish_mod.VarnishStatError as exc:
                scrape.set_up(f"varnish:{inst.name}", False, exc)
                up.add_metric([inst.name], 0.0)
                continue
            scrape.set_up(f"varnish:{inst.name}", True)
            up.add_metric([inst.name], 1.0)
            f = varnish_mod.facts(counters)
            for result, v in sorted(f.lookups.items()):
                lookups.add_metric([inst.name, result], v)
            for suffix, v in f.main.items():
                fams[suffix].add_metric([inst.name], v)
            for be, vals in sorted(f.backends.items()):
                if "req" in vals:
                    be_req.add_metric([inst.name, be], vals["req"])
                if "fail" in vals:
                    be_fail.add_metric([inst.name, be], vals["fail"])
        out = [up, lookups, *fams.values(), be_req, be_fail]
        if self.class_logs:
            cup = _g("opsstack_varnish_class_log_up", "1 while the instance's varnishncsa (requests per class) runs.",
                     ["instance"])
            creq = CounterMetricFamily("opsstack_varnish_class_requests", "Client requests seen by varnishncsa since "
                                       "the exporter started, by content class (X-Cache-Class) and handling (hit, "
                                       "miss, pass, pipe, synth, other).", labels=["instance", "class", "handling"])
            for name, cl in sorted(self.class_logs.items()):
                cup.add_metric([name], 1.0 if cl.running else 0.0)
                for (cls, handling), n in sorted(cl.counts().items()):
                    creq.add_metric([name, cls, handling], float(n))
            out += [cup, creq]
        return out

    def _redis(self, scrape: Scrape):
        rs = self.s.redis
        up = _g("opsstack_redis_up", "1 if the Redis instance answered INFO.", ["instance"])
        hits = CounterMetricFamily("opsstack_redis_keyspace_hits", "Successful key lookups (keyspace_hits).",
                                   labels=["instance"])
        misses = CounterMetricFamily("opsstack_redis_keyspace_misses", "Failed key lookups (keyspace_misses).",
                                     labels=["instance"])
        evicted = CounterMetricFamily("opsstack_redis_evicted_keys", "Keys evicted by maxmemory (evicted_keys).",
                                      labels=["instance"])
        expired = CounterMetricFamily("opsstack_redis_expired_keys", "Keys expired (expired_keys).",
                                      labels=["instance"])
        used = _g("opsstack_redis_memory_used_bytes", "Memory used by Redis (used_memory).", ["instance"])
        maxm = _g("opsstack_redis_memory_max_bytes", "maxmemory; absent when Redis has no limit (0).", ["instance"])
        ratio = _g("opsstack_redis_memory_used_ratio", "used_memory / maxmemory; absent without a limit.",
                   ["instance"])
        policy = _g("opsstack_redis_maxmemory_policy_info", "The eviction policy (value 1).", ["instance", "policy"])
        clients = _g("opsstack_redis_connected_clients", "Client connections (connected_clients).", ["instance"])
        blocked = _g("opsstack_redis_blocked_clients", "Clients blocked in a blocking call (blocked_clients).",
                     ["instance"])
        rejected = CounterMetricFamily("opsstack_redis_rejected_connections", "Connections refused at maxclients "
                                       "(rejected_connections).", labels=["instance"])
        for inst in rs.instances:
            try:
                with RedisConn(inst.url, timeout=float(rs.timeout)) as r:
                    info = parse_info(r.command("INFO", "all"))
            except Exception as exc:  # noqa: BLE001 - any failure marks the source down
                scrape.set_up(f"redis:{inst.name}", False, f"{type(exc).__name__}: {exc}")
                up.add_metric([inst.name], 0.0)
                continue
            scrape.set_up(f"redis:{inst.name}", True)
            up.add_metric([inst.name], 1.0)
            n = inst.name

            def num(key):
                try:
                    return float(info[key])
                except (KeyError, ValueError):
                    return None
            for fam, key in ((hits, "keyspace_hits"), (misses, "keyspace_misses"), (evicted, "evicted_keys"),
                             (expired, "expired_keys"), (used, "used_memory"), (clients, "connected_clients"),
                             (blocked, "blocked_clients"), (rejected, "rejected_connections")):
                v = num(key)
                if v is not None:
                    fam.add_metric([n], v)
            mm, um = num("maxmemory"), num("used_memory")
            if mm:
                maxm.add_metric([n], mm)
                if um is not None:
                    ratio.add_metric([n], um / mm)
            if "maxmemory_policy" in info:
                policy.add_metric([n, info["maxmemory_policy"]], 1.0)
        return [up, hits, misses, evicted, expired, used, maxm, ratio, policy, clients, blocked, rejected]
