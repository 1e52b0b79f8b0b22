"""Varnish: `varnishstat -j` read at scrape time, both JSON shapes.

- Varnish 6.5 and later: ``{"version": 1, "timestamp": ..., "counters": {"MAIN.cache_hit":
  {"description", "flag", "format", "value"}, ...}}``;
- before 6.5: the counters at the top level next to ``"timestamp"`` (each with ``type`` and
  ``ident`` as well).

``parse_varnishstat`` turns either into {counter name: (value, flag)}; ``facts`` picks what the
CDN board and the cache policy need. The long tail (every MAIN.*, SMA.*, LCK.*, per-backend byte
counters) is prometheus-varnish-exporter's (docs/metrics.md).
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

# MAIN counter -> (our metric suffix, kind, label value) ; kind: counter|gauge
LOOKUPS = {"MAIN.cache_hit": "hit", "MAIN.cache_miss": "miss", "MAIN.cache_hitpass": "hitpass",
           "MAIN.cache_hitmiss": "hitmiss"}
MAIN = {
    "MAIN.cache_hit_grace": "grace_hits_total",
    "MAIN.client_req": "client_requests_total",
    "MAIN.backend_conn": "backend_connections_total",
    "MAIN.backend_fail": "backend_connection_failures_total",
    "MAIN.backend_unhealthy": "backend_unhealthy_total",
    "MAIN.n_object": "objects",
    "MAIN.n_lru_nuked": "lru_nuked_total",
    "MAIN.bans": "bans",
    "MAIN.bans_added": "bans_added_total",
    "MAIN.bans_obj_killed": "bans_objects_killed_total",
    "MAIN.n_obj_purged": "purged_objects_total",
    "MAIN.uptime": "uptime_seconds",
}


class VarnishStatError(RuntimeError):
    pass


def parse_varnishstat(text: str | bytes) -> dict[str, tuple[float, str]]:
    """{counter: (value, flag)} from `varnishstat -j` output of either shape."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise VarnishStatError(f"varnishstat output is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise VarnishStatError("varnishstat output is not a JSON object")
    if isinstance(doc.get("counters"), dict):   # 6.5+: {"version": 1, "counters": {...}}
        counters = doc["counters"]
    else:                                         # older: flat, next to "timestamp"
        counters = {k: v for k, v in doc.items() if isinstance(v, dict)}
    out = {}
    for name, c in counters.items():
        if not isinstance(c, dict) or "value" not in c:
            continue
        try:
            out[str(name)] = (float(c["value"]), str(c.get("flag", "c")))
        except (TypeError, ValueError):
            continue
    if not out:
        raise VarnishStatError("varnishstat output holds no counters")
    return out


@dataclass
class VarnishFacts:
    lookups: dict[str, float]          # hit|miss|hitpass|hitmiss -> count since start
    main: dict[str, float]             # our suffix -> value
    backends: dict[str, dict[str, float]]  # backend -> {req, fail, unhealthy, conn}


def facts(counters: dict[str, tuple[float, str]]) -> VarnishFacts:
    lookups = {label: counters[k][0] for k, label in LOOKUPS.items() if k in counters}
    main = {suffix: counters[k][0] for k, suffix in MAIN.items() if k in counters}
    backends: dict[str, dict[str, float]] = {}
    for name, (value, _flag) in counters.items():
        if not name.startswith("VBE."):
            continue
        # VBE.<vcl>.<backend>.<counter>; the backend is named in the VCL (bounded)
        parts = name.split(".")
        if len(parts) < 4 or parts[-1] not in ("req", "fail", "unhealthy", "conn"):
            continue
        backends.setdefault(parts[-2], {})[parts[-1]] = backends.get(parts[-2], {}).get(parts[-1], 0.0) + value
    return VarnishFacts(lookups, main, backends)


def read(varnishstat: str, workdir: str | None, timeout: float) -> dict[str, tuple[float, str]]:
    """Run `varnishstat -j [-n workdir]` and parse it."""
    argv = [varnishstat, "-j"] + (["-n", workdir] if workdir else [])
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise VarnishStatError(f"varnishstat did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise VarnishStatError(f"cannot run {varnishstat}: {exc.strerror or exc}") from None
    if p.returncode != 0:
        raise VarnishStatError(f"varnishstat exit {p.returncode}: {p.stderr.decode(errors='replace').strip()[:300]}")
    return parse_varnishstat(p.stdout)
