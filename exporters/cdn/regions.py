"""Cloudflare colo (IATA code) -> region, from the table shipped with the package (colos.json).

Regions are the bounded label set of every per-region CDN series: asia, europe,
north_america, other. A colo the table does not list is "other" (Cloudflare opens new ones).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

REGIONS = ("asia", "europe", "north_america", "other")
TABLE = Path(__file__).with_name("colos.json")


@lru_cache(maxsize=1)
def colo_table() -> dict[str, str]:
    """colo code (upper case) -> region."""
    data = json.loads(TABLE.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for region, colos in data["regions"].items():
        if region not in REGIONS:
            raise ValueError(f"{TABLE}: unknown region {region!r}")
        for c in colos:
            out[str(c).upper()] = region
    return out


def region_of(colo: str | None) -> str:
    return colo_table().get(str(colo or "").upper(), "other")


def colos_of(region: str) -> list[str]:
    """The colos the table puts in ``region`` (sorted)."""
    return sorted(c for c, r in colo_table().items() if r == region)
