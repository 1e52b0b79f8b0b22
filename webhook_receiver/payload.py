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
    try:  # the usual case (what Alertmanager writes), at C speed: Python 3.11 takes "Z" and 9 digits
        t = datetime.fromisoformat(value)
    except ValueError:
        t = _parse_time_slow(value, where)
    if t.tzinfo is None:
        raise PayloadError(f"time without a UTC offset: {value!r}", where)
    return t.astimezone(timezone.utc)


def _parse_time_slow(value: str, where: str) -> datetime:
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
        return datetime.fromisoformat(s)
    except ValueError:
        raise PayloadError(f"not an RFC 3339 time: {value!r}", where) from None


# Validation runs for every webhook request (the intake) and again when a payload is applied, so
# the paths of the happy case build no strings: a field's JSON path (``where``) is made only for
# the error. ``where`` is a str, or an int i for "alerts[i]".
def _at(where, suffix: str = "") -> str:
    return (where if isinstance(where, str) else f"alerts[{where}]") + suffix


def _str_map(value, where, suffix: str = "") -> dict:
    if value is None:
        return {}
    if type(value) is not dict:
        if not isinstance(value, dict):
            raise PayloadError("expected an object of strings", _at(where, suffix))
    for v in value.values():
        if type(v) is not str:
            for k, v2 in value.items():
                if not isinstance(v2, str):
                    raise PayloadError("expected a string value", f"{_at(where, suffix)}.{k}")
    return dict(value)


def _str(obj: dict, key: str, where, required: bool = True) -> str:
    v = obj.get(key)
    if type(v) is str:
        return v
    if v is None and not required:
        return ""
    if not isinstance(v, str):
        raise PayloadError("expected a string" if key in obj else "is required", f"{_at(where)}{key}")
    return v


_ZERO_END = ZERO_TIME_PREFIX + "T00:00:00Z"


def parse_alert(a, where) -> Alert:
    """One alert of ``alerts``; ``where`` its JSON path (or its index in ``alerts``)."""
    if not isinstance(a, dict):
        raise PayloadError("expected an object", _at(where))
    status = a.get("status")
    if status != "firing" and status != "resolved":
        status = _str(a, "status", _at(where, "."))
        raise PayloadError(f"must be 'firing' or 'resolved', got {status!r}", _at(where, ".status"))
    labels = _str_map(a.get("labels"), where, ".labels")
    if not labels.get("alertname"):
        raise PayloadError("is required", _at(where, ".labels.alertname"))
    fp = a.get("fingerprint")
    if type(fp) is not str:
        fp = _str(a, "fingerprint", _at(where, "."))
    if not fp or len(fp) > 64:
        raise PayloadError("must be a non-empty string of at most 64 characters", _at(where, ".fingerprint"))
    try:
        starts = parse_time(a.get("startsAt"), "")
    except PayloadError as exc:
        raise PayloadError(exc.message, _at(where, ".startsAt")) from None
    if starts is None:
        raise PayloadError("must be a real time", _at(where, ".startsAt"))
    try:
        ends = parse_time(a.get("endsAt", _ZERO_END), "")
    except PayloadError as exc:
        raise PayloadError(exc.message, _at(where, ".endsAt")) from None
    gen = a.get("generatorURL")
    if type(gen) is not str:
        gen = _str(a, "generatorURL", _at(where, "."), required=False)
    return Alert(status=status, labels=labels, annotations=_str_map(a.get("annotations"), where, ".annotations"),
                 starts_at=starts, ends_at=ends, generator_url=gen, fingerprint=fp)


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
        alerts=[parse_alert(a, i) for i, a in enumerate(alerts)],
    )


def parse(body: bytes) -> Notification:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None
    return parse_obj(data)
