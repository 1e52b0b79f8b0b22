"""Pure parts of the security exporter: access log lines, user-agent classes, bounded vhost
labels, ModSecurity audit records, pgBackRest info JSON, the config section's checks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import load_data
from core.spec import ConfigError
from exporters.security.access import OTHER, AccessCounts, Bounded, agent_class, status_label
from exporters.security.pgbackrest import parse_info
from exporters.security.waf import WafCounts, parse_transaction

FIX = Path(__file__).parent / "fixtures" / "security"


def jline(vhost="shop", status=200, ua="Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", addr="192.0.2.1"):
    ua = json.dumps(ua)[1:-1]
    return (f'{{"time":"2026-11-29T10:00:00+00:00","vhost":"{vhost}","status":{status},"method":"GET",'
            f'"bytes":12,"rt":0.003,"ua":"{ua}","addr":"{addr}"}}')


def block(*lines):
    return "".join(x + "\n" for x in lines), len(lines)


def test_json_access_lines_fast_path():
    c = AccessCounts()
    text, n = block(jline(status=401), jline(status=401), jline(status=200), jline(status=503),
                    jline(vhost="api", status=429, ua="sqlmap/1.7.2#stable (https://sqlmap.org)"),
                    jline(vhost="api", status=403, ua='curl/8.5 "quoted"'))
    c.add_block("edge", "json", text, n)
    responses, agents, unparsed = c.snapshot()
    assert responses == {("shop", "401"): 2, ("shop", "2xx"): 1, ("shop", "5xx"): 1, ("api", "429"): 1,
                         ("api", "403"): 1}
    assert agents == {("shop", "browser"): 4, ("api", "scanner"): 1, ("api", "tool"): 1}
    assert unparsed == {}


def test_json_lines_in_another_key_order_and_garbage():
    c = AccessCounts()
    other_order = json.dumps({"status": 403, "vhost": "shop", "ua": "Googlebot/2.1 (+http://www.google.com/bot.html)"})
    text, n = block(jline(status=401), other_order, "not json at all", "")
    c.add_block("edge", "json", text, n)
    responses, agents, unparsed = c.snapshot()
    assert responses == {("shop", "401"): 1, ("shop", "403"): 1}
    assert agents[("shop", "bot")] == 1
    assert unparsed == {"edge": 2}


def test_combined_format_uses_the_configured_vhost():
    c = AccessCounts()
    text, n = block(
        '192.0.2.9 - - [29/Nov/2026:10:00:00 +0000] "GET /login HTTP/1.1" 401 12 "-" "python-requests/2.31"',
        '192.0.2.9 - bob [29/Nov/2026:10:00:01 +0000] "GET /a\\x22b HTTP/1.1" 200 5 "http://x/" "Mozilla/5.0 (Mac)"',
        '192.0.2.9 - - [29/Nov/2026:10:00:02 +0000] "\\x16\\x03\\x01" 400 157 "-" "-"',
        'garbage')
    c.add_block("legacy", "combined", text, n, vhost="legacy.test")
    responses, agents, unparsed = c.snapshot()
    assert responses == {("legacy.test", "401"): 1, ("legacy.test", "2xx"): 1, ("legacy.test", "4xx"): 1}
    assert agents == {("legacy.test", "tool"): 1, ("legacy.test", "browser"): 1, ("legacy.test", "empty"): 1}
    assert unparsed == {"legacy": 1}


@pytest.mark.parametrize("ua,cls", [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537.36", "browser"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bot"),
    ("Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)", "scanner"),
    ("Nikto/2.5.0", "scanner"),
    ("Go-http-client/1.1", "tool"),
    ("opsstack-prober/1", "monitor"),
    ("Blackbox Exporter/0.24.0", "monitor"),
    ("-", "empty"),
    ("", "empty"),
    ("SomethingElse/1.0", "other"),
])
def test_agent_classes(ua, cls):
    assert agent_class(ua) == cls


def test_vhost_labels_are_bounded_and_host_like():
    b = Bounded(2)
    assert b("Shop.Example:8443") == "shop.example"
    assert b("api") == "api"
    assert b("third") == OTHER                      # over the budget
    assert b("shop.example") == "shop.example"      # kept ones stay
    assert Bounded(10)('"><script>') == OTHER        # not a host name: never a label value
    assert status_label(429, frozenset({429})) == "429" and status_label(418, frozenset()) == "4xx"
    assert status_label(999, frozenset()) == "other"


V3_BLOCKED = {"transaction": {
    "client_ip": "192.0.2.5", "time_stamp": "Sun Nov 29 10:00:00 2026", "server_id": "abc", "client_port": 5555,
    "host_ip": "127.0.0.1", "host_port": 8080, "unique_id": "1700000000.1",
    "request": {"method": "GET", "http_version": 1.1, "uri": "/?id=1' or '1'='1", "headers": {"Host": "shop.test"}},
    "response": {"http_code": 403, "headers": {}},
    "producer": {"modsecurity": "ModSecurity v3.0.9 (Linux)", "connector": "ModSecurity-nginx v1.0.3",
                 "secrules_engine": "Enabled", "components": ["OWASP_CRS/3.3.4\""]},
    "messages": [
        {"message": "SQL Injection Attack Detected via libinjection", "details": {"ruleId": "942100"}},
        {"message": "XSS", "details": {"ruleId": "941100"}},
        {"message": "Inbound Anomaly Score Exceeded (Total Score: 10)", "details": {"ruleId": "949110"}},
    ]}}


def test_waf_v3_blocked_counts_the_first_class_and_detects_all():
    w = WafCounts(vhosts=Bounded(50, ("shop.test",)))
    passed = json.loads(json.dumps(V3_BLOCKED))
    passed["transaction"]["response"]["http_code"] = 200
    passed["transaction"]["messages"] = [{"details": {"ruleId": "920350"}}]
    scanner = json.loads(json.dumps(V3_BLOCKED))
    scanner["transaction"]["messages"] = [{"details": {"ruleId": "913100"}}, {"details": {"ruleId": "949110"}}]
    other = json.loads(json.dumps(V3_BLOCKED))
    other["transaction"]["messages"] = [{"details": {"ruleId": "930120"}}, {"details": {"ruleId": "949110"}}]
    text = "\n".join(json.dumps(x) for x in (V3_BLOCKED, passed, scanner, other)) + "\nnot json\n"
    w.add_block("modsec", text, 5)
    blocked, detected, transactions, unparsed = w.snapshot()
    assert blocked == {("shop.test", "sqli"): 1, ("shop.test", "scanner"): 1, ("shop.test", "other"): 1}
    assert detected == {("shop.test", "sqli"): 1, ("shop.test", "xss"): 1, ("shop.test", "protocol"): 1,
                        ("shop.test", "scanner"): 1, ("shop.test", "other"): 1}
    assert transactions == {"shop.test": 4} and unparsed == {"modsec": 1}


def test_waf_v2_uses_intercepted():
    rec = {"transaction": {"time": "29/Nov/2026:10:00:00 +0000", "transaction_id": "x", "remote_address": "192.0.2.5"},
           "request": {"request_line": "GET /?q=<script> HTTP/1.1", "headers": {"Host": "shop.test"}},
           "response": {"status": 403},
           "audit_data": {"messages": ['Warning. detected XSS [file "x"] [line "1"] [id "941100"] [msg "XSS"]'],
                          "action": {"intercepted": True, "phase": 2}}}
    assert parse_transaction(json.dumps(rec)) == ("shop.test", 403, ["941100"], True)
    w = WafCounts(vhosts=Bounded(50, ("shop.test",)))
    w.add_block("modsec", json.dumps(rec) + "\n", 1)
    assert w.snapshot()[0] == {("shop.test", "xss"): 1}


def test_waf_host_headers_never_add_vhosts():
    b = Bounded(50, ("shop.test",))
    w = WafCounts(vhosts=b)
    rec = json.loads(json.dumps(V3_BLOCKED))
    for host in ("evil1.example", "evil2.example", "SHOP.TEST:443"):
        rec["transaction"]["request"]["headers"]["Host"] = host
        w.add_block("modsec", json.dumps(rec) + "\n", 1)
    assert w.snapshot()[0] == {(OTHER, "sqli"): 2, ("shop.test", "sqli"): 1}
    assert b.kept == {"shop.test"}


def test_pgbackrest_info_from_a_real_run():
    """tests/unit/fixtures/security/pgbackrest_info.json: `pgbackrest info --output=json` of
    pgBackRest 2.45 (Debian) after a full and an incremental backup."""
    [st] = parse_info(json.loads((FIX / "pgbackrest_info.json").read_text()))
    assert (st.name, st.status_code, st.status_message) == ("demo", 0, "ok")
    assert set(st.last) == {"full", "incr"}
    assert st.last["incr"].stop >= st.last["full"].stop and st.last["full"].size > 0
    assert st.archive_max >= st.archive_min > 0


def test_pgbackrest_info_without_backups():
    data = [{"name": "empty", "status": {"code": 2, "message": "no valid backups", "lock": {"backup": {"held": True}}},
             "backup": [], "archive": [], "db": [{"id": 1}]}]
    [st] = parse_info(data)
    assert (st.status_code, st.status_message, st.backup_running, st.last) == (2, "no valid backups", True, {})
    assert st.archive_min is None


def sec_config(**security):
    return load_data({"exporters": {"security": security}})


def test_config_defaults_and_checks():
    cfg = sec_config()
    s = cfg["exporters"]["security"]
    assert s["backup"]["rpo"] == 300 and s["backup"]["rto"] == 900 and s["tls"]["warning_before"] == 30 * 86400
    with pytest.raises(ConfigError, match="critical_before"):
        sec_config(tls={"warning_before": "7d", "critical_before": "30d"})
    with pytest.raises(ConfigError, match="address"):
        sec_config(tls={"endpoints": [{"name": "a", "address": "no-port"}]})
    with pytest.raises(ConfigError, match="classes"):
        sec_config(waf={"classes": {"other": ["942"]}})
    with pytest.raises(ConfigError, match="statuses"):
        sec_config(access={"statuses": [1000]})
    with pytest.raises(ConfigError, match="also an access log"):
        sec_config(access={"logs": [{"name": "x", "path": "/a"}]}, waf={"logs": [{"name": "x", "path": "/b"}]})
    with pytest.raises(ConfigError, match="backup.enabled"):
        sec_config(backup={"verify": {"stanzas": ["demo"]}})
    ok = sec_config(tls={"endpoints": [{"name": "shop", "address": "[::1]:8443", "server_name": "shop.test"}]})
    assert ok["exporters"]["security"]["tls"]["endpoints"][0]["server_name"] == "shop.test"
