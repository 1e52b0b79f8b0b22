"""The pure decisions of the event-request API (demo/eventreq.py): classification, tiers,
priority, the duplicate key, intake validation, resources from a template."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.config import defaults, load_data, view
from demo import approver
from demo import eventreq as E

NOW = datetime(2027, 3, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize("attendees,tier,size", [(1, "auto", "small"), (100, "auto", "small"),
                                                 (101, "manager", "medium"), (500, "manager", "medium"),
                                                 (501, "executive", "large"), (50_000, "executive", "large")])
def test_tier_and_size_follow_the_attendees(attendees, tier, size):
    assert E.tier_of(attendees) == tier and E.size_of(attendees) == size


@pytest.mark.parametrize("size,days,priority", [("small", 60, "low"), ("small", 20, "normal"),
                                                ("small", 3, "normal"), ("medium", 60, "normal"),
                                                ("medium", 3, "high"), ("large", 60, "normal"),
                                                ("large", 20, "high"), ("large", -1, "high")])
def test_priority_grows_with_size_and_closeness_of_the_start(size, days, priority):
    assert E.priority_of(size, NOW + timedelta(days=days), NOW) == priority


@pytest.mark.parametrize("title,typ", [("Seoul Summer Festival", "festival"), ("K-Pop Live Tour 2027", "concert"),
                                       ("Cup final: Seoul vs Busan", "sports"), ("AI Summit", "conference"),
                                       ("Python meetup #12", "meetup"), ("Book Expo", "exhibition"),
                                       ("Quarterly gathering", "other")])
def test_the_type_comes_from_title_words_unless_given(title, typ):
    assert E.event_type(None, title) == typ
    assert E.event_type("sports", title) == "sports"


def test_the_duplicate_key_folds_case_width_punctuation_and_spacing():
    assert E.normalise("  Spring   TECH-Conference!! ") == E.normalise("spring tech conference") \
        == E.normalise("ＳＰＲＩＮＧ tech conference")
    assert E.normalise("Spring Tech Conference 2") != E.normalise("Spring Tech Conference")


def good(**kw) -> dict:
    b = {"customer": "ACME", "title": "Summit", "attendees": 40, "starts_at": "2027-05-01T18:00:00+09:00",
         "contact_email": "ops@acme.example", "channel": "web"}
    b.update(kw)
    return b


def test_intake_cleans_a_good_request_and_reads_the_time_as_utc():
    r = E.check_intake(good(venue="  Hall B ", starts_at="2027-05-01"))
    assert r["venue"] == "Hall B" and r["starts_at"] == datetime(2027, 5, 1, tzinfo=timezone.utc)
    assert E.check_intake(good())["starts_at"] == datetime(2027, 5, 1, 9, tzinfo=timezone.utc)


def test_intake_lists_missing_and_invalid_fields():
    with pytest.raises(E.Invalid) as exc:
        E.check_intake({"title": " ", "attendees": "many", "channel": "fax", "contact_email": "nobody"})
    assert sorted(exc.value.body["missing"]) == ["customer", "starts_at", "title"]
    assert set(exc.value.body["invalid"]) == {"attendees", "channel", "contact_email"}
    with pytest.raises(E.BadRequest):
        E.check_intake(["not", "an", "object"])


@pytest.mark.parametrize("field,value", [("title", "a\nb"), ("title", "x" * 201), ("customer", "\u202eevil"),
                                         ("contact_email", "a@b.example\r\nBcc: c@d.example"),
                                         ("contact_email", "a@b.example, c@d.example"), ("attendees", 0),
                                         ("attendees", True), ("starts_at", "1999-12-31"),
                                         ("event_type", "party"), ("inject_failure", "confirm")])
def test_intake_refuses_hostile_values(field, value):
    with pytest.raises(E.Invalid) as exc:
        E.check_intake(good(**{field: value}))
    assert field in exc.value.body["invalid"]


def test_resources_scale_with_the_attendees_and_keep_the_template_minimum():
    res = [{"kind": "staff", "per_attendees": 30, "min": 5}, {"kind": "gates", "per_attendees": 300, "min": 2}]
    assert E.resources_for(res, 40) == [("staff", 5), ("gates", 2)]
    assert E.resources_for(res, 3001) == [("staff", 101), ("gates", 11)]


def test_the_event_schema_name_is_made_from_the_id_only():
    assert E.schema_name(42) == "evt_42"
    with pytest.raises(ValueError):
        E.schema_name("1; drop schema public")  # type: ignore[arg-type]


def test_header_text_is_one_bounded_line():
    assert E._header("Subject\r\nBcc: x@y.example" + "z" * 500) == ("SubjectBcc: x@y.example" + "z" * 500)[:200]


def test_the_approver_finds_event_management_and_runs_only_with_airflow():
    cfg = defaults()
    assert cfg["demo"]["airflow_approver_delay"] == 20.0
    assert approver.launcher_programs(cfg) == []
    assert approver.base_url(view(cfg, "demo"), view(cfg, "platform"), view(cfg, "stack")) is None
    cfg = load_data({"demo": {"airflow": True, "ports": {"event-management": {"admin": 9301, "seoul": 9302,
                                                                               "singapore": 9303, "tokyo": 9304}}}})
    assert [p["name"] for p in approver.launcher_programs(cfg)] == ["demo-approver"]
    assert approver.base_url(view(cfg, "demo"), view(cfg, "platform"), view(cfg, "stack")) == "http://127.0.0.1:9301"
