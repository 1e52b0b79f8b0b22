"""Pure functions of the database exporter: no server needed, unit-tested on their own."""
from __future__ import annotations

import datetime as dt
import re
from typing import Iterable

# pg_settings units -> (kind, factor to the base unit)
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {"B": 1, "kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def setting_value(setting: str | None, unit: str | None, vartype: str) -> tuple[str, float] | None:
    """One pg_settings row -> (kind, value in base units), kind in {'', 'seconds', 'bytes'}.

    Booleans become 1/0; enums and strings are skipped (None). A unit like '8kB' multiplies.
    """
    if setting is None:
        return None
    if vartype == "bool":
        return "", 1.0 if setting == "on" else 0.0
    if vartype not in ("integer", "real"):
        return None
    try:
        value = float(setting)
    except ValueError:
        return None
    if not unit:
        return "", value
    m = re.match(r"^(\d*)\s*([a-zA-Z]+)$", unit)
    if not m:
        return "", value
    mult = float(m.group(1)) if m.group(1) else 1.0
    u = m.group(2)
    if u in _TIME_UNITS:
        # -1 means "disabled" for many time settings; keep it as is
        return "seconds", value if value < 0 else value * mult * _TIME_UNITS[u]
    if u in _SIZE_UNITS:
        return "bytes", value if value < 0 else value * mult * _SIZE_UNITS[u]
    return "", value


def ratio(part: float, whole: float) -> float | None:
    """part/whole, or None when whole is 0 (no traffic: no ratio, not 0)."""
    return part / whole if whole else None


def index_usage_ratio(seq_scan: int | None, idx_scan: int | None) -> float | None:
    """idx_scan / (seq_scan + idx_scan); None for a table that was never scanned."""
    return ratio(float(idx_scan or 0), float((seq_scan or 0) + (idx_scan or 0)))


def heavy_seq_scan(seq_scan: int | None, seq_tup_read: int | None, idx_scan: int | None,
                   min_rows: int) -> bool:
    """A table read mostly by sequential scans that read many rows: an index candidate."""
    return bool(seq_scan) and (seq_tup_read or 0) >= min_rows and (seq_scan or 0) > (idx_scan or 0)


def weighted_mean(total: float, calls: float) -> float | None:
    """Mean execution time weighted by calls (sum of time / sum of calls)."""
    return ratio(total, calls)


def truncate(text: str, limit: int) -> str:
    """Collapse whitespace and cut to `limit` characters (an ellipsis marks the cut)."""
    t = " ".join((text or "").split())
    return t if len(t) <= limit else t[: max(1, limit - 1)] + "\u2026"


def split_table(name: str) -> tuple[str, str]:
    """'schema.table' -> (schema, table); a bare name is in 'public'."""
    if "." in name:
        s, t = name.split(".", 1)
        return s, t
    return "public", name


# ----------------------------------------------------------------------------- partitions
def period_start(t: dt.datetime, period: str) -> dt.datetime:
    """Start of the period (day|week|month|year) that contains t (same tzinfo)."""
    d = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return d
    if period == "week":
        return d - dt.timedelta(days=d.weekday())
    if period == "month":
        return d.replace(day=1)
    if period == "year":
        return d.replace(month=1, day=1)
    raise ValueError(f"unknown period {period!r}")


def next_period_start(t: dt.datetime, period: str) -> dt.datetime:
    s = period_start(t, period)
    if period == "day":
        return s + dt.timedelta(days=1)
    if period == "week":
        return s + dt.timedelta(days=7)
    if period == "month":
        return s.replace(year=s.year + 1, month=1) if s.month == 12 else s.replace(month=s.month + 1)
    return s.replace(year=s.year + 1)


def covered(bounds: Iterable[tuple[dt.datetime | None, dt.datetime | None]], t: dt.datetime) -> bool:
    """True when some range partition [lo, hi) contains t (None = MINVALUE/MAXVALUE)."""
    for lo, hi in bounds:
        if (lo is None or lo <= t) and (hi is None or t < hi):
            return True
    return False


def partition_health(bounds: list[tuple[dt.datetime | None, dt.datetime | None]], now: dt.datetime,
                     period: str) -> dict[str, bool]:
    """{'current': bool, 'next': bool}: does a partition cover now and the next period's start?"""
    return {"current": covered(bounds, now), "next": covered(bounds, next_period_start(now, period))}


_BOUND = re.compile(r"FOR VALUES FROM \((.+?)\) TO \((.+?)\)$")


def parse_range_bound(expr: str) -> tuple[str | None, str | None] | None:
    """pg_get_expr(relpartbound) of a single-column range partition -> (lo, hi) literals.

    MINVALUE/MAXVALUE -> None; DEFAULT, list/hash partitions and multi-column bounds -> None.
    """
    m = _BOUND.match(expr.strip())
    if not m:
        return None

    def lit(s: str) -> str | None:
        s = s.strip()
        if s in ("MINVALUE", "MAXVALUE"):
            return None
        if s.startswith("'") and s.endswith("'") and "', '" not in s:
            return s[1:-1].replace("''", "'")
        if re.match(r"^-?\d+(\.\d+)?$", s):
            return s
        return "\x00"  # not something we can compare (multi-column...)

    lo, hi = lit(m.group(1)), lit(m.group(2))
    if lo == "\x00" or hi == "\x00":
        return None
    return lo, hi
