"""Alertmanager webhook payload (version "4") parsing: pure functions, no I/O.

`parse(body: bytes) -> Notification` raises PayloadError (-> HTTP 400 with a JSON body)
for anything that is not a well-formed v4 payload.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

ZERO_TIME_PREFIX = "0001-01-01"


class PayloadError(ValueError):
    """Bad input; ``field`` names where (a JSON path)."""

    def __init__(self, message: str, where: str = ""):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class Alert:
    status: str  # firing | resolved
    labels: dict
    annotations: dict
    starts_at: datetime
    ends_at: datetime | None  # None = Go's zero time (still firing, no end known)
    generator_url: str
    fingerprint: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def service(self) -> str:
        return self.labels.get("service", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def team(self) -> str:
        return self.labels.get("team", "")

    @property
    def tier(self) -> int:
        return parse_tier(self.labels.get("tier"))

    @property
    def summary(self) -> str:
        return self.annotations.get("summary", "")


@dataclass(frozen=True)
class Notification:
    version: str
    group_key: str
    status: str
    receiver: str
    group_labels: dict
    common_labels: dict
    common_annotations: dict
    external_url: str
    truncated_alerts: int
    alerts: list[Alert] = field(default_factory=list)


def parse_tier(value) -> int:
    """The `tier` label -> 1..3 (missing or odd values mean 1, the ops team)."""
    try:
        t = int(str(value).strip())
    except (TypeError, ValueError):
        return 1
    return min(max(t, 1), 3)


def parse_time(value, where: str) -> datetime | None:
    """RFC 3339 from Go (nanoseconds allowed) -> aware datetime; Go's zero time -> None."""
    if not isinstance(value, str) or not value:
        raise PayloadError("expected an RFC 3339 time string", where)
    if value.startswith(ZERO_TIME_PREFIX):
        return None
    s = value.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    # Go writes up to 9 fractional digits; Python takes at most 6.
    if "." in s:
        head, rest = s.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, tz = rest[:i], rest[i:]
        s = f"{head}.{(frac + '000000')[:6]}{tz}" if frac else head + tz
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise PayloadError(f"not an RFC 3339 time: {value!r}", where) from None
    if t.tzinfo is None:
        raise PayloadError(f"time without a UTC offset: {value!r}", where)
    return t.astimezone(timezone.utc)


def _str_map(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError("expected an object of strings", where)
    for k, v in value.items():
        if not isinstance(v, str):
            raise PayloadError("expected a string value", f"{where}.{k}")
    return dict(value)


def _str(obj: dict, key: str, where: str, required: bool = True) -> str:
    v = obj.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str):
        raise PayloadError("expected a string" if key in obj else "is required", f"{where}{key}")
    return v


def parse_alert(a, where: str) -> Alert:
    if not isinstance(a, dict):
        raise PayloadError("expected an object", where)
    status = _str(a, "status", f"{where}.")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"must be 'firing' or 'resolved', got {status!r}", f"{where}.status")
    labels = _str_map(a.get("labels"), f"{where}.labels")
    if not labels.get("alertname"):
        raise PayloadError("is required", f"{where}.labels.alertname")
    fp = _str(a, "fingerprint", f"{where}.")
    if not fp or len(fp) > 64:
        raise PayloadError("must be a non-empty string of at most 64 characters", f"{where}.fingerprint")
    starts = parse_time(a.get("startsAt"), f"{where}.startsAt")
    if starts is None:
        raise PayloadError("must be a real time", f"{where}.startsAt")
    ends = parse_time(a.get("endsAt", ZERO_TIME_PREFIX + "T00:00:00Z"), f"{where}.endsAt")
    return Alert(status=status, labels=labels, annotations=_str_map(a.get("annotations"), f"{where}.annotations"),
                 starts_at=starts, ends_at=ends,
                 generator_url=_str(a, "generatorURL", f"{where}.", required=False), fingerprint=fp)


def parse_obj(data) -> Notification:
    if not isinstance(data, dict):
        raise PayloadError("the body must be a JSON object")
    version = data.get("version")
    if version != "4":
        raise PayloadError(f"unsupported payload version {version!r}; only Alertmanager webhook version \"4\"",
                           "version")
    status = _str(data, "status", "")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"must be 'firing' or 'resolved', got {status!r}", "status")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("expected a list", "alerts")
    truncated = data.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("expected a whole number >= 0", "truncatedAlerts")
    return Notification(
        version=version,
        group_key=_str(data, "groupKey", ""),
        status=status,
        receiver=_str(data, "receiver", "", required=False),
        group_labels=_str_map(data.get("groupLabels"), "groupLabels"),
        common_labels=_str_map(data.get("commonLabels"), "commonLabels"),
        common_annotations=_str_map(data.get("commonAnnotations"), "commonAnnotations"),
        external_url=_str(data, "externalURL", "", required=False),
        truncated_alerts=truncated,
        alerts=[parse_alert(a, f"alerts[{i}]") for i, a in enumerate(alerts)],
    )


def parse(body: bytes) -> Notification:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None
    return parse_obj(data)
