"""Cache policy per content class: the verdict and its reason (exporters/cdn/policy.py)."""
from __future__ import annotations

from core.config import defaults, view
from exporters.cdn.policy import ClassPolicy, judge, overall, policies

API = ClassPolicy("api", 300.0, 0.8, frozenset({"json"}))


def test_default_classes_follow_the_seed():
    ps = {p.name: p for p in policies(view(defaults(), "exporters.cdn").classes, 0.9)}
    assert {n: p.ttl for n, p in ps.items()} == {"static": 7 * 86400, "api": 300, "dynamic": 60}
    assert "json" in ps["api"].content_types and "css" in ps["static"].content_types


def test_meeting_the_target_is_ok_and_too_little_traffic_is_not_judged():
    v = judge(API, 1000, 900, {"hit": 900, "miss": 100}, 0, 100)
    assert v.judged and not v.below and v.reason is None
    v = judge(API, 50, 0, {"miss": 50}, 0, 100)
    assert not v.judged and not v.below and "not judged" in v.text


def test_the_dominant_miss_kind_is_the_reason():
    v = judge(API, 1000, 500, {"hit": 500, "expired": 400, "miss": 100}, 0, 100)
    assert v.below and v.reason == "ttl_too_short" and "raise the TTL above 5m" in v.text
    v = judge(API, 1000, 500, {"hit": 500, "bypass": 300, "dynamic": 100, "miss": 100}, 0, 100)
    assert v.reason == "uncacheable" and "Cache-Control" in v.text
    v = judge(API, 1000, 500, {"hit": 500, "miss": 450, "expired": 50}, 0, 100)
    assert v.reason == "cold_misses"
    v = judge(API, 1000, 500, {"hit": 500, "miss": 500}, 200, 100)
    assert v.reason == "origin_errors"


def test_overall_names_the_classes_below():
    a = judge(API, 1000, 500, {"hit": 500, "expired": 500}, 0, 100)
    o = overall([a], 1500, 2000, 0.9, 100)
    assert o.below and o.cls == "all" and "api" in o.text
    assert not overall([a], 1900, 2000, 0.9, 100).below
