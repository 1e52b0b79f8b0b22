"""Payload parsing (Alertmanager webhook v4) and notification helpers: pure functions."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from core.config import defaults, load_data, view
from tests.support import receiver as T
from webhook_receiver import notify
from webhook_receiver.auth import ApiTokens, bearer, token_matches
from webhook_receiver.payload import PayloadError, parse, parse_time, parse_tier


def test_parses_a_real_v4_payload():
    body = {
        "receiver": "opsstack-critical", "status": "firing", "version": "4", "truncatedAlerts": 0,
        "groupKey": "{}/{severity=\"critical\"}:{alertname=\"ServiceDown\", service=\"user-app\"}",
        "groupLabels": {"alertname": "ServiceDown", "service": "user-app"},
        "commonLabels": {"alertname": "ServiceDown"}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": "ServiceDown", "tier": "2"},
                    "annotations": {"summary": "Down."}, "startsAt": "2026-11-26T09:00:00.123456789Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://p/graph",
                    "fingerprint": "a1b2c3d4e5f60718"}],
    }
    n = parse(json.dumps(body).encode())
    a = n.alerts[0]
    assert a.starts_at == datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=timezone.utc)
    assert a.ends_at is None and a.tier == 2 and a.summary == "Down."
    assert n.group_labels == {"alertname": "ServiceDown", "service": "user-app"}


@pytest.mark.parametrize("value,expected", [
    ("2026-11-26T09:00:00Z", datetime(2026, 11, 26, 9, tzinfo=timezone.utc)),
    ("2026-11-26T18:00:00+09:00", datetime(2026, 11, 26, 9, tzinfo=timezone.utc)),
    ("2026-11-26T09:00:00.5Z", datetime(2026, 11, 26, 9, 0, 0, 500000, tzinfo=timezone.utc)),
    ("0001-01-01T00:00:00Z", None),
    # what Go writes (nanoseconds) and what the fast path leaves to the careful one
    ("2026-11-26T09:00:00.123456789Z", datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2026-11-26T09:00:00.123456789123Z", datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=timezone.utc)),
    (" 2026-11-26T09:00:00z ", datetime(2026, 11, 26, 9, tzinfo=timezone.utc)),
    ("2026-11-26T09:00:00.Z", datetime(2026, 11, 26, 9, tzinfo=timezone.utc)),
    ("2026-11-26T10:00:00.5+01:00", datetime(2026, 11, 26, 9, 0, 0, 500000, tzinfo=timezone.utc)),
])
def test_times(value, expected):
    assert parse_time(value, "x") == expected


@pytest.mark.parametrize("value", ["2026-11-26T09:00:00", "soon", "", 5])
def test_bad_times(value):
    with pytest.raises(PayloadError):
        parse_time(value, "x")


@pytest.mark.parametrize("v,t", [("1", 1), ("2", 2), ("3", 3), (None, 1), ("x", 1), ("9", 3), ("0", 1)])
def test_tier(v, t):
    assert parse_tier(v) == t


@pytest.mark.parametrize("mutate,where", [
    (lambda p: p.update(version="3"), "version"),
    (lambda p: p.update(status="maybe"), "status"),
    (lambda p: p.update(alerts={}), "alerts"),
    (lambda p: p.update(truncatedAlerts=-1), "truncatedAlerts"),
    (lambda p: p.update(groupKey=None), "groupKey"),
    (lambda p: p["alerts"][0].update(status="x"), "alerts[0].status"),
    (lambda p: p["alerts"][0]["labels"].update(tier=3), "alerts[0].labels.tier"),
    (lambda p: p["alerts"][0].update(fingerprint="f" * 65), "alerts[0].fingerprint"),
    (lambda p: p["alerts"][0].update(startsAt="0001-01-01T00:00:00Z"), "alerts[0].startsAt"),
    (lambda p: p.update(commonLabels=[]), "commonLabels"),
    (lambda p: p["alerts"][1].update(endsAt="yesterday"), "alerts[1].endsAt"),
    (lambda p: p["alerts"][2].update(startsAt=None), "alerts[2].startsAt"),
    (lambda p: p["alerts"][2]["annotations"].update(summary=["x"]), "alerts[2].annotations.summary"),
    (lambda p: p["alerts"][1].update(labels="x"), "alerts[1].labels"),
    (lambda p: p["alerts"][1]["labels"].pop("alertname"), "alerts[1].labels.alertname"),
    (lambda p: p["alerts"][2].pop("fingerprint"), "alerts[2].fingerprint"),
    (lambda p: p["alerts"][1].update(generatorURL=5), "alerts[1].generatorURL"),
    (lambda p: p["alerts"].append("x"), "alerts[3]"),
    (lambda p: p["alerts"][2].pop("status"), "alerts[2].status"),
])
def test_invalid_payloads_name_the_field(mutate, where):
    p = T.payload([T.alert(fp="a1"), T.alert(fp="a2"), T.alert(fp="a3")])
    mutate(p)
    with pytest.raises(PayloadError) as e:
        parse(json.dumps(p).encode())
    assert e.value.where == where


def test_not_json():
    with pytest.raises(PayloadError):
        parse(b"\xff\xfe")


def test_bearer_and_constant_time_compare():
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer(None) is None and bearer("Bearer ") is None
    assert token_matches("abc", "abc") and not token_matches("abc", "abd") and not token_matches("", "")
    assert not token_matches("abc", None)


def test_api_tokens_plain_and_hashed():
    import hashlib

    cfg = load_data({"receiver": {"api": {"tokens": [
        {"name": "ci", "token": "s3cret", "scopes": ["read"]},
        {"name": "bot", "token": "sha256:" + hashlib.sha256(b"hidden").hexdigest(), "scopes": ["read", "write"]}]}}})
    toks = ApiTokens(view(cfg, "receiver").api.tokens)
    assert toks.client("s3cret").name == "ci"
    assert toks.client("hidden").scopes == frozenset({"read", "write"})
    assert toks.client("nope") is None


def test_channels_by_severity_and_level():
    cfg = load_data({"notifications": {
        "channels": [{"name": "mail", "type": "smtp"}, {"name": "chat", "type": "slack", "url": "http://127.0.0.1:1/"},
                     {"name": "sms", "type": "webhook", "url": "http://127.0.0.1:1/"}],
        "rules": [{"severities": ["critical"], "levels": [1, 2, 3], "channels": ["chat", "sms"]},
                  {"severities": ["warning", "critical"], "levels": [2, 3], "channels": ["mail"]},
                  {"severities": ["warning"], "levels": [1], "channels": ["chat"]}]}})
    n = view(cfg, "notifications")
    assert notify.channels_for(n, "critical", 1) == ["chat", "sms"]
    assert notify.channels_for(n, "critical", 3) == ["chat", "sms", "mail"]
    assert notify.channels_for(n, "warning", 1) == ["chat"]
    assert notify.channels_for(n, "info", 1) == []


def test_backoff_is_exponential_and_capped():
    n = view(defaults(), "notifications")
    assert [notify.backoff(n, i) for i in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert notify.backoff(n, 30) == 600


def test_message_text():
    p = {"kind": "escalated", "level": 2, "level_name": "L2 IT manager", "reason": "not acknowledged in time",
         "actor": None, "console_url": "http://127.0.0.1:9095/",
         "person": {"name": "it-manager", "email": "m@example.com"},
         "ticket": {"id": 7, "alertname": "ServiceDown", "service": "user-app", "severity": "critical",
                    "status": "open", "summary": "Down.", "annotations": {"runbook_url": "http://r/ServiceDown.md"}}}
    assert notify.subject(p) == "[CRITICAL] #7 ServiceDown on user-app (escalated, L2 IT manager)"
    body = notify.text(p)
    assert "Owner: it-manager" in body and "http://127.0.0.1:9095/console/tickets/7" in body
    assert notify.subject({**p, "kind": "resolved"}).startswith("[RESOLVED]")
