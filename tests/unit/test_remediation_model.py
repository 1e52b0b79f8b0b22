"""Playbooks without servers: templates, matching, validation, the shipped demo file, verify logic."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from core.config import ConfigError, defaults, load_data
from webhook_receiver.remediation import model
from webhook_receiver.remediation.template import TemplateError, render, render_str
from webhook_receiver.remediation.verify import belongs, expr_from_generator_url


def cfg_with(playbooks=None, **remediation):
    return load_data({"remediation": {"playbooks": playbooks or [], **remediation}})


def test_template_placeholders_defaults_and_braces():
    ctx = {"service": "user-app", "region": "seoul", "healthy_regions": ["tokyo", "singapore"]}
    assert render_str("demo-{service}", ctx) == "demo-user-app"
    assert render_str("{healthy_regions}", ctx) == ["tokyo", "singapore"]      # whole string: the value
    assert render_str("to {healthy_regions}", ctx) == "to tokyo,singapore"
    assert render_str("{tag|events}", ctx) == "events"
    assert render_str("{missing|}", ctx) == ""
    assert render_str('up{{service="{service}"}} == 0', ctx) == 'up{service="user-app"} == 0'
    # PromQL selectors are not placeholders
    assert render_str('up{job="x",service="{service}"}', ctx) == 'up{job="x",service="user-app"}'
    assert render({"json": {"healthy": "{healthy_regions}"}, "n": 3}, ctx) == \
        {"json": {"healthy": ["tokyo", "singapore"]}, "n": 3}
    with pytest.raises(TemplateError, match="missing"):
        render_str("{missing}", ctx)


def test_playbook_matching_exact_and_regex():
    cfg = cfg_with([{"name": "a", "match": {"alertname": "ServiceDown", "service": "~user-.*"},
                     "actions": [{"name": "r", "backend": "supervisor", "params": {"program": "x"}}]},
                    {"name": "b", "match": {"alertname": "ServiceDown"},
                     "actions": [{"name": "r", "backend": "http", "params": {"url": "http://x"}}]}])
    pbs = model.load_playbooks(cfg)
    assert model.find(pbs, {"alertname": "ServiceDown", "service": "user-app"}).name == "a"
    assert model.find(pbs, {"alertname": "ServiceDown", "service": "gate"}).name == "b"
    assert model.find(pbs, {"alertname": "Other"}) is None
    a = pbs[0]
    # defaults from the section, operation defaulted per backend
    assert (a.cooldown, a.max_attempts, a.attempt_window) == (600.0, 3, 3600.0)
    assert a.actions[0].operation == "restart" and pbs[1].actions[0].operation == "request"
    assert a.actions[0].timeout == 30.0 and a.actions[0].verify_window == 120.0


@pytest.mark.parametrize("pb,key,words", [
    ({"name": "x", "match": {}, "actions": [{"name": "a", "backend": "http", "params": {"url": "u"}}]},
     "remediation.playbooks[0].match", "at least one"),
    ({"name": "x", "match": {"a": "b"}, "actions": []}, "remediation.playbooks[0].actions", "at least 1"),
    ({"name": "x", "match": {"a": "b"}, "actions": [{"name": "a", "backend": "ssh"}]},
     "remediation.playbooks[0].actions[0].backend", "one of"),
    ({"name": "x", "match": {"a": "b"}, "actions": [{"name": "a", "backend": "supervisor"}]},
     "remediation.playbooks[0].actions[0].params.program", "required"),
    ({"name": "x", "match": {"a": "b"}, "actions": [{"name": "a", "backend": "docker", "operation": "scale",
                                                     "params": {"container": "c"}}]},
     "remediation.playbooks[0].actions[0].operation", "restart"),
    ({"name": "x", "match": {"a": "b"}, "actions": [{"name": "a", "backend": "command", "params": {"argv": "rm"}}]},
     "remediation.playbooks[0].actions[0].params.argv", "list"),
    ({"name": "x", "match": {"a": "~("}, "actions": [{"name": "a", "backend": "http", "params": {"url": "u"}}]},
     "remediation.playbooks[0].match.a", "regular expression"),
    ({"name": "x", "match": {"a": "b"}, "actions": [{"name": "a", "backend": "kubernetes",
                                                     "operation": "delete_pod", "params": {}}]},
     "remediation.playbooks[0].actions[0].params", "pod"),
    ({"name": "X Y", "match": {"a": "b"}, "actions": [{"name": "a", "backend": "http", "params": {"url": "u"}}]},
     "remediation.playbooks[0].name", "lowercase"),
])
def test_bad_playbooks_name_the_key(pb, key, words):
    with pytest.raises(ConfigError) as ei:
        cfg_with([pb])
    msg = str(ei.value)
    assert "\n" not in msg and f"{key}:" in msg and words in msg, msg


def test_playbook_file_loading_and_duplicates(tmp_path):
    f = tmp_path / "pb.yaml"
    f.write_text("playbooks:\n  - name: extra\n    match: {alertname: X}\n    actions:\n"
                 "      - {name: run, backend: command, params: {argv: [\"true\"]}}\n")
    cfg = cfg_with(playbook_files=[str(f)])
    assert [p.name for p in model.load_playbooks(cfg)] == ["extra"]
    with pytest.raises(ConfigError, match="also defined"):
        cfg_with([{"name": "extra", "match": {"a": "b"}, "actions": [{"name": "a", "backend": "http",
                                                                      "params": {"url": "u"}}]}],
                 playbook_files=[str(f)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: b\n  match: {alertname: X}\n  actions: [{name: a, backend: nope}]\n")
    with pytest.raises(ConfigError) as ei:
        cfg_with(playbook_files=[str(bad)])
    assert str(bad) in str(ei.value) and "playbooks[0].actions[0].backend" in str(ei.value)


def test_demo_playbooks_cover_the_issue_ladder():
    cfg = defaults()
    assert model.load_playbooks(cfg) == []          # not resolved: no demo ports, no demo playbooks
    cfg["demo"]["ports"] = {"user-app": {"admin": 4001, "seoul": 4002, "singapore": 4003, "tokyo": 4004}}
    pbs = {p.name: p for p in model.load_playbooks(cfg)}
    assert set(pbs) == {"memory-leak", "scheduled-restart", "service-down", "region-outage", "cache-miss-storm",
                        "disk-filling", "scale-out", "scale-in", "scale-ahead", "cdn-cache-miss-storm"}
    assert pbs["scheduled-restart"].schedule and pbs["scheduled-restart"].match == {
        "alertname": "MemoryLeakOomPredicted"}
    assert [(a.backend, a.operation) for a in pbs["memory-leak"].actions] == [("supervisor", "restart")]
    assert [a.name for a in pbs["service-down"].actions] == ["restart", "replace"]
    assert pbs["region-outage"].on_resolved and pbs["region-outage"].actions[0].backend == "http"
    assert pbs["disk-filling"].actions[0].backend == "command"
    found = model.find(list(pbs.values()), {"alertname": "CacheHitRatioLow", "service": "user-app", "region": "tokyo"})
    assert found.name == "cache-miss-storm"
    assert model.find(list(pbs.values()), {"alertname": "PostgresCacheHitRatioLow", "service": "postgres"}) is None
    cdn = model.find(list(pbs.values()), {"alertname": "CdnCacheHitRatioLow", "zone": "main", "class": "all"})
    assert cdn.name == "cdn-cache-miss-storm"
    # inside out (Redis, Varnish, then the edge), the inner purges not waited for, each through a cache backend
    assert [(a.backend, a.operation, a.verify_window) for a in cdn.actions] == [
        ("redis", "delete_pattern", 0.0), ("varnish", "purge_tag", 0.0), ("cloudflare", "purge", 720.0)]
    cctx = model.context(cfg, {"alertname": "CdnCacheHitRatioLow", "zone": "main", "class": "all"})
    assert render(cdn.target, cctx) == "cdn-main"
    assert [render(a.params, cctx) for a in cdn.actions] == [
        {"pattern": "cache:events:*"}, {"tag": "events"}, {"zone": "main", "tags": ["events"]}]
    labels = {"alertname": "RegionDown", "region": "seoul", "service": "platform"}
    ctx = model.context(cfg, labels)
    params = render(pbs["region-outage"].actions[0].params, ctx)
    assert params["json"] == {"healthy": ["singapore", "tokyo"]}
    assert params["url"] == ["http://127.0.0.1:4001"] and params["path"] == "/admin/route"
    ctx = model.context(cfg, {"alertname": "ServiceMemoryHigh", "service": "user-app"})
    assert render(pbs["memory-leak"].target, ctx) == "demo-user-app"
    assert render(pbs["service-down"].actions[1].params, {**ctx, "region": "tokyo"}) == \
        {"url": "http://127.0.0.1:4001/admin/replace", "json": {"region": "tokyo"}}


def test_expression_from_generator_url():
    url = "http://prom:9090/graph?g0.expr=max+by+%28service%29+%28x%29+%3E+0.85&g0.tab=1"
    assert expr_from_generator_url(url) == "max by (service) (x) > 0.85"
    assert expr_from_generator_url("http://prom:9090/graph") is None
    assert expr_from_generator_url("") is None


def test_a_series_belongs_to_the_alert_when_its_labels_agree():
    alert = {"alertname": "A", "service": "a", "instance": "i:1", "severity": "warning"}
    assert belongs({"service": "a", "instance": "i:1"}, alert)
    assert belongs({"__name__": "x", "service": "a"}, alert)
    assert not belongs({"service": "b", "instance": "i:1"}, alert)
    assert not belongs({"service": "a", "region": "seoul"}, alert)


def test_enrichment_window_and_step():
    from webhook_receiver.enrichment import step_for, window

    now = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc).timestamp()
    fresh = datetime(2026, 11, 26, 9, 58, tzinfo=timezone.utc)
    assert window(fresh, now, 3600) == (now - 3600, now)
    old = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)
    s, e = window(old, now, 3600)
    assert s == old.timestamp() - 1800 and e == old.timestamp() + 1800
    assert step_for(0, 3600) == 15.0 and step_for(0, 10) == 1.0


def test_itsm_change_text_and_adf():
    from webhook_receiver.itsm import change_text
    from webhook_receiver.itsm.jira import adf, adf_text

    assert change_text("ticket_updated", {"change": "escalated", "actor": "scheduler", "level": 2}) == \
        "opsstack: escalated by scheduler. level: 2."
    assert change_text("ticket_resolved", {"actor": "alertmanager"}).startswith("Resolved by alertmanager")
    doc = adf("line one\n\nline three")
    assert doc["type"] == "doc" and doc["version"] == 1 and len(doc["content"]) == 3
    assert doc["content"][0] == {"type": "paragraph", "content": [{"type": "text", "text": "line one"}]}
    assert adf_text(doc) == "line one line three"


def test_graph_shows_the_whole_curve_and_the_threshold():
    from webhook_receiver.enrichment import split_threshold

    assert split_threshold("max by (service) (x) > 0.85") == ("max by (service) (x)", 0.85)
    assert split_threshold('opsstack_probe_up{job="a"} == 0') == ('opsstack_probe_up{job="a"}', 0.0)
    both = "a > 0.05\nand on (service, region)\nb >= 1"
    assert split_threshold(both) == (both, None)
    assert split_threshold("rate(x[5m])") == ("rate(x[5m])", None)
