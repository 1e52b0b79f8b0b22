"""Who is on call: weekly rotations with a handover time, and overrides. Pure functions."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
WEEK = timedelta(days=7)


def first_handover(schedule: dict) -> datetime:
    """The handover at or after schedule['start'] (a date) in the schedule's time zone, as UTC."""
    tz = ZoneInfo(schedule.get("timezone", "UTC"))
    day, hhmm = schedule.get("handover", "mon 09:00").split()
    hh, mm = (int(x) for x in hhmm.split(":"))
    start = date.fromisoformat(str(schedule.get("start", "2026-01-05"))[:10])
    start += timedelta(days=(_DAYS[day] - start.weekday()) % 7)
    return datetime.combine(start, time(hh, mm), tzinfo=tz).astimezone(timezone.utc)


def rotation_person(schedule: dict, at: datetime) -> str:
    """The member whose week covers ``at`` (before the first handover: the first member).

    Weeks are counted in the schedule's local time, so a handover stays at the same wall
    time across daylight-saving changes.
    """
    members = schedule["members"]
    tz = ZoneInfo(schedule.get("timezone", "UTC"))
    first = first_handover(schedule).astimezone(tz)
    local = at.astimezone(tz)
    if local < first:
        return members[0]
    # naive local wall-clock arithmetic keeps the handover at e.g. 09:00 after DST shifts
    weeks = int((local.replace(tzinfo=None) - first.replace(tzinfo=None)) // WEEK)
    return members[weeks % len(members)]


def on_call(schedule: dict, at: datetime) -> str:
    """The person on call for ``schedule`` at ``at`` (an override wins over the rotation)."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    chosen = None
    for ov in schedule.get("overrides", ()):  # the last matching override wins
        if datetime.fromisoformat(ov["start"]) <= at < datetime.fromisoformat(ov["end"]):
            chosen = ov["person"]
    return chosen or rotation_person(schedule, at)


def next_handover(schedule: dict, at: datetime) -> datetime:
    tz = ZoneInfo(schedule.get("timezone", "UTC"))
    first = first_handover(schedule).astimezone(tz)
    local = at.astimezone(tz).replace(tzinfo=None)
    base = first.replace(tzinfo=None)
    if local < base:
        return first.astimezone(timezone.utc)
    weeks = int((local - base) // WEEK) + 1
    return (base + weeks * WEEK).replace(tzinfo=tz).astimezone(timezone.utc)


class Directory:
    """People and schedules from config (cfg['oncall'])."""

    def __init__(self, oncall_cfg: dict):
        self.people = {p["name"]: p for p in oncall_cfg["people"]}
        self.schedules = {s["name"]: s for s in oncall_cfg["schedules"]}

    def who(self, schedule: str, at: datetime) -> str | None:
        s = self.schedules.get(schedule)
        return on_call(s, at) if s else None

    def person(self, name: str | None) -> dict:
        return self.people.get(name or "", {"name": name, "email": None, "slack": None, "phone": None})
