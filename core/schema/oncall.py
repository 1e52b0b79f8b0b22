"""`oncall:` people and weekly on-call rotations with handover time and overrides."""
import re
from datetime import datetime

from core.spec import ConfigError, Field, ListOf

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _handover(v):
    m = re.match(r"^(mon|tue|wed|thu|fri|sat|sun) ([01]\d|2[0-3]):([0-5]\d)$", v)
    return None if m else f"expected '<weekday> HH:MM' like 'mon 09:00', got {v!r}"


def _ts(v):
    try:
        d = datetime.fromisoformat(v)
    except (TypeError, ValueError):
        return f"expected an ISO time like 2026-01-05T09:00:00+00:00, got {v!r}"
    return None if d.tzinfo else "needs a UTC offset, e.g. 2026-01-05T09:00:00+00:00"


PERSON = {
    "name": Field("str"),
    "email": Field("str", None, nullable=True),
    "slack": Field("str", None, nullable=True, help="Slack user or handle mentioned in messages"),
    "phone": Field("str", None, nullable=True, help="passed to webhook channels (SMS gateways)"),
}

OVERRIDE = {
    "start": Field("str", check=_ts),
    "end": Field("str", check=_ts),
    "person": Field("str"),
}

SCHEDULE = {
    "name": Field("str"),
    "members": Field("list", help="people in rotation order; one week each"),
    "handover": Field("str", "mon 09:00", check=_handover),
    "timezone": Field("str", "UTC"),
    # the first handover of members[0] (a date; the rotation counts weeks from its handover time)
    "start": Field("str", "2026-01-05"),
    "overrides": ListOf(OVERRIDE),
}

DEFAULT_PEOPLE = [
    {"name": "ops-oncall", "email": "ops-oncall@example.com"},
    {"name": "it-manager", "email": "it-manager@example.com"},
    {"name": "cto", "email": "cto@example.com"},
]
DEFAULT_SCHEDULES = [
    {"name": "ops", "members": ["ops-oncall"]},
    {"name": "it-manager", "members": ["it-manager"]},
    {"name": "cto", "members": ["cto"]},
]

SECTION = {
    "people": ListOf(PERSON, default=DEFAULT_PEOPLE, unique_key="name"),
    "schedules": ListOf(SCHEDULE, default=DEFAULT_SCHEDULES, min_items=1, unique_key="name"),
}


def check(cfg):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    o = cfg["oncall"]
    people = {p["name"] for p in o["people"]}
    for i, s in enumerate(o["schedules"]):
        key = f"oncall.schedules[{i}]"
        if not s["members"]:
            raise ConfigError(f"{key}.members", "needs at least one person")
        for j, m in enumerate(s["members"]):
            if m not in people:
                raise ConfigError(f"{key}.members[{j}]", f"unknown person {m!r} (add it to oncall.people)")
        for j, ov in enumerate(s["overrides"]):
            if ov["person"] not in people:
                raise ConfigError(f"{key}.overrides[{j}].person", f"unknown person {ov['person']!r}")
            if datetime.fromisoformat(ov["end"]) <= datetime.fromisoformat(ov["start"]):
                raise ConfigError(f"{key}.overrides[{j}].end", "must be after start")
        try:
            ZoneInfo(s["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{key}.timezone", f"unknown time zone {s['timezone']!r}") from None
        try:
            datetime.fromisoformat(s["start"])
        except ValueError:
            raise ConfigError(f"{key}.start", f"expected a date like 2026-01-05, got {s['start']!r}") from None
