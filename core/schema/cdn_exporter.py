"""The `exporters.cdn` config section (registered as the "cdn" key in core/schema/exporters.py):
Cloudflare, Varnish, Redis sources of the CDN exporter, the cache policy per content class, and
the rate limits of the cache invalidation actions (remediation backends cloudflare, varnish,
redis). Metrics: docs/metrics.md, "CDN and cache"."""
from __future__ import annotations

import re

from core.spec import ConfigError, Field, ListOf

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def _name(v):
    return None if _NAME.match(v) else f"must be lowercase letters, digits, '-' or '_', got {v!r}"


def _zone_id(v):
    if re.fullmatch(r"[A-Za-z0-9]{1,64}", v):
        return None
    return f"must be a Cloudflare zone id (letters and digits), got {v!r}"


def _key_prefix(v):
    if v and not any(ch in v for ch in "*?[]\\"):
        return None
    return f"must be a literal key prefix (no * ? [ ] \\), got {v!r}"


RATE = {
    "max_calls": Field("int", 10, minimum=1, help="invalidation calls to this provider per `per`"),
    "per": Field("duration", "1m", minimum=1),
}

SECTION = {
    "enabled": Field("bool", True),
    "cloudflare": {
        "enabled": Field("bool", False),
        # GraphQL at <api_url>/graphql, purges at <api_url>/zones/<id>/purge_cache (the demo's fake
        # Cloudflare server sets its own URL)
        "api_url": Field("url", "https://api.cloudflare.com/client/v4"),
        "token": Field("str", None, nullable=True, secret=True,
                       help="API token (Analytics Read, and Cache Purge for invalidation)"),
        "token_file": Field("str", None, nullable=True, help="the API token, read from this file (wins over token)"),
        "zones": ListOf({
            "name": Field("str", check=_name),
            "id": Field("str", check=_zone_id),
        }, unique_key="name"),
        "window": Field("duration", "5m", minimum=60, help="width of the window each fetch covers"),
        "offset": Field("duration", "3m", minimum=0, help="the window ends this long before now (data settles late)"),
        "min_interval": Field("duration", "1m", minimum=1,
                              help="query the API at most this often per zone, whatever the scrape rate"),
        "timeout": Field("duration", "10s", minimum=0.1),
        "quantiles": Field("bool", True, help="ask for percentiles (plans without them: exported as unavailable)"),
        "firewall": Field("bool", True, help="ask the firewall events dataset"),
        "plan_recheck": Field("duration", "1h", minimum=1,
                              help="ask again for a field the zone's plan refused after this long"),
    },
    "varnish": {
        "varnishstat": Field("str", "varnishstat", help="the varnishstat binary"),
        "varnishncsa": Field("str", "varnishncsa", help="the varnishncsa binary (requests per content class)"),
        "class_counts": Field("bool", True, help="count requests per class and handling with a long-lived "
                                                 "varnishncsa per instance (while the exporter serves)"),
        "timeout": Field("duration", "5s", minimum=0.1),
        "instances": ListOf({
            "name": Field("str", check=_name),
            "workdir": Field("str", None, nullable=True, help="varnishd -n directory (null: the default)"),
            # where invalidation sends PURGE (xkey) and BAN requests (the VCL handles them)
            "url": Field("url", None, nullable=True),
        }, unique_key="name"),
    },
    "redis": {
        "timeout": Field("duration", "2s", minimum=0.1),
        "instances": ListOf({
            "name": Field("str", check=_name),
            "url": Field("url", "redis://127.0.0.1:6379/0"),  # a password in it shows as ***
            # invalidation deletes only keys under these literal prefixes
            "key_prefixes": Field("list", ["cache:"]),
        }, unique_key="name"),
    },
    # content classes: the Cloudflare content type names each holds; unmatched -> default_class
    "classes": ListOf({
        "name": Field("str", check=_name),
        "ttl": Field("duration", minimum=0),
        "hit_target": Field("float", None, nullable=True, minimum=0, maximum=1,
                            help="null: the overall hit_target"),
        "content_types": Field("list", []),
    }, default=[
        {"name": "static", "ttl": "7d", "hit_target": 0.95,
         "content_types": ["css", "js", "javascript", "png", "jpeg", "jpg", "gif", "svg", "webp", "avif", "ico",
                           "woff", "woff2", "ttf", "otf", "mp4", "webm", "pdf", "zip", "wasm"]},
        {"name": "api", "ttl": "5m", "hit_target": 0.8, "content_types": ["json", "xml"]},
        {"name": "dynamic", "ttl": "1m", "hit_target": 0.5, "content_types": ["html", "txt", "plain"]},
    ], min_items=1, unique_key="name"),
    "default_class": Field("str", "dynamic"),
    "hit_target": Field("float", 0.9, minimum=0, maximum=1, help="overall cached share target"),
    "min_requests": Field("int", 100, minimum=1, help="a class is judged only above this many requests in a window"),
    # invalidation actions (remediation backends cloudflare, varnish, redis), rate-limited per provider
    "invalidation": {
        "cloudflare": {**RATE, "allow_purge_everything": Field("bool", False)},
        "varnish": dict(RATE),
        "redis": {**RATE, "scan_count": Field("int", 500, minimum=1, maximum=100000),
                  "max_keys": Field("int", 100000, minimum=1, help="keys one delete may remove at most")},
    },
}


def check(cfg):
    c = cfg["exporters"]["cdn"]
    names = [k["name"] for k in c["classes"]]
    if c["default_class"] not in names:
        raise ConfigError("exporters.cdn.default_class", f"must be one of the classes ({', '.join(names)}), "
                                                          f"got {c['default_class']!r}")
    seen: dict[str, str] = {}
    for i, k in enumerate(c["classes"]):
        for t in k["content_types"]:
            if not isinstance(t, str) or not t:
                raise ConfigError(f"exporters.cdn.classes[{i}].content_types", f"expected names, got {t!r}")
            if t.lower() in seen:
                raise ConfigError(f"exporters.cdn.classes[{i}].content_types",
                                  f"{t!r} is also in class {seen[t.lower()]!r}")
            seen[t.lower()] = k["name"]
    cf = c["cloudflare"]
    if cf["enabled"]:
        if not cf["zones"]:
            raise ConfigError("exporters.cdn.cloudflare.zones", "needs at least one zone when cloudflare is enabled")
        if not cf["token"] and not cf["token_file"]:
            raise ConfigError("exporters.cdn.cloudflare.token", "set token or token_file when cloudflare is enabled")
    if cf["offset"] + cf["window"] > 7 * 86400:
        raise ConfigError("exporters.cdn.cloudflare.window", "window + offset must stay within 7 days")
    for part in ("varnish", "redis"):  # read at scrape time (only matters when there is something to read)
        if c[part]["instances"] and c[part]["timeout"] >= cfg["stack"]["scrape_timeout"]:
            raise ConfigError(f"exporters.cdn.{part}.timeout", "must be shorter than stack.scrape_timeout "
                                                               "(read at scrape time)")
    for i, inst in enumerate(c["redis"]["instances"]):
        if not inst["url"].startswith("redis://"):
            raise ConfigError(f"exporters.cdn.redis.instances[{i}].url", "must be a redis:// URL")
        if not inst["key_prefixes"]:
            raise ConfigError(f"exporters.cdn.redis.instances[{i}].key_prefixes", "needs at least one prefix")
        for p in inst["key_prefixes"]:
            problem = _key_prefix(p) if isinstance(p, str) else f"expected a string, got {p!r}"
            if problem:
                raise ConfigError(f"exporters.cdn.redis.instances[{i}].key_prefixes", problem)
