"""`platform:` the monitored services and regions.

In production each service lists its endpoints per region; with the demo platform
(the default) the launcher fills endpoints in from the demo processes it starts.
"""
import re

from core.spec import ConfigError, Field, ListOf

_SLUG = re.compile(r"^[a-z][a-z0-9-]*$")


def _slug(v):
    return None if _SLUG.match(v) else f"must be lowercase letters, digits and '-', got {v!r}"


SERVICE = {
    "name": Field("str", check=_slug),
    "display_name": Field("str", None, nullable=True),
    "team": Field("str", "ops"),
    # region -> base URL of the instance (health path appended); {} = demo instances
    "endpoints": Field("dict", {}),
    "health_path": Field("str", "/health"),
    "memory_limit_bytes": Field("int", 512 * 1024 * 1024, minimum=1),
    "cpu_limit_cores": Field("float", 1.0, minimum=0.01),
    # share of the platform's users (sessions, demo traffic) relative to the other services
    "traffic_weight": Field("float", 1.0, minimum=0),
}

DEFAULT_SERVICES = [
    {"name": "gate-management", "display_name": "Gate Management"},
    {"name": "user-app", "display_name": "User App"},
    {"name": "event-management", "display_name": "Event Management"},
    {"name": "integrated-platform", "display_name": "Integrated Platform"},
]

SECTION = {
    "name": Field("str", "Integrated Platform"),
    "regions": Field("list", ["seoul", "singapore", "tokyo"]),
    "services": ListOf(SERVICE, default=DEFAULT_SERVICES, min_items=1, unique_key="name"),
}


def check(cfg):
    p = cfg["platform"]
    if not p["regions"]:
        raise ConfigError("platform.regions", "needs at least one region")
    for i, r in enumerate(p["regions"]):
        if not isinstance(r, str) or not _SLUG.match(r):
            raise ConfigError(f"platform.regions[{i}]", f"must be a lowercase name, got {r!r}")
    for i, s in enumerate(p["services"]):
        if s["display_name"] is None:
            s["display_name"] = s["name"].replace("-", " ").title()
        for region, url in s["endpoints"].items():
            if region not in p["regions"]:
                raise ConfigError(f"platform.services[{i}].endpoints.{region}",
                                  f"unknown region (regions: {', '.join(p['regions'])})")
            if not isinstance(url, str) or not re.match(r"^https?://", url):
                raise ConfigError(f"platform.services[{i}].endpoints.{region}",
                                  f"expected an http(s) URL, got {url!r}")
