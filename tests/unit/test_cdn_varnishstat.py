"""`varnishstat -j` in both shapes gives the same facts. The fixtures are one real varnishd 7.1
run (tests/unit/fixtures/cdn/varnishstat-7.1.json, the 6.5+ {"version": 1, "counters": ...}
shape, trimmed to MAIN/VBE) and the same counters in the flat pre-6.5 shape (type/ident per
counter, next to "timestamp")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporters.cdn.varnish import VarnishStatError, facts, parse_varnishstat
from exporters.cdn.varnish_log import parse_line

FIX = Path(__file__).parent / "fixtures" / "cdn"


@pytest.fixture(params=["varnishstat-7.1.json", "varnishstat-6.0-flat.json"])
def shape(request):
    return (FIX / request.param).read_text()


def test_both_shapes_give_the_same_facts(shape):
    f = facts(parse_varnishstat(shape))
    assert f.lookups == {"hit": 16, "miss": 5, "hitpass": 0, "hitmiss": 0}
    assert f.main["objects"] == 5 and f.main["backend_connections_total"] == 1
    assert f.main["backend_connection_failures_total"] == 0 and f.main["backend_unhealthy_total"] == 0
    assert {"grace_hits_total", "lru_nuked_total", "bans", "bans_added_total", "purged_objects_total",
            "uptime_seconds", "client_requests_total"} <= set(f.main)
    assert f.backends["default"]["req"] == 5


def test_flags_are_kept(shape):
    c = parse_varnishstat(shape)
    assert c["MAIN.cache_hit"][1] == "c" and c["MAIN.n_object"][1] == "g"


@pytest.mark.parametrize("text", ["not json", "[]", '{"version": 1, "counters": {}}', '{"timestamp": "x"}'])
def test_garbage_is_an_error(text):
    with pytest.raises(VarnishStatError):
        parse_varnishstat(text)


def test_flat_and_nested_agree_counter_by_counter():
    new = parse_varnishstat((FIX / "varnishstat-7.1.json").read_text())
    old = parse_varnishstat((FIX / "varnishstat-6.0-flat.json").read_text())
    assert new == old and json.loads((FIX / "varnishstat-7.1.json").read_text())["version"] == 1


def test_varnishncsa_lines_have_bounded_labels():
    classes = frozenset({"static", "api", "dynamic"})
    assert parse_line("static hit\n", classes, "dynamic") == ("static", "hit")
    assert parse_line("- miss\n", classes, "dynamic") == ("dynamic", "miss")  # no X-Cache-Class header
    assert parse_line("evil$class weird\n", classes, "dynamic") == ("dynamic", "other")
    assert parse_line("too many fields here\n", classes, "dynamic") is None
