"""The security exporter end to end on loopback: real TLS servers with our own CA (good,
close to expiry, expired, wrong host name, unknown CA, a cross-signed intermediate path, TLS
1.2 only, a silent port, a refused port), access and WAF logs followed by its tailer, the
restore result file; served by `opsstack exporter security`'s serve() and checked by
`promtool check metrics`."""
from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.config import load_data
from core.exporter import registry_for
from core.procs import binary, free_port
from exporters.security.collector import SecurityCollector
from exporters.security.restore import RestoreResult, write_result
from exporters.security.server import serve
from tests.support.tlscerts import DemoPki, TlsServers
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = DemoPki(tmp_path_factory.mktemp("pki"))
    servers = TlsServers()
    ports = pki.start(servers)
    yield pki, ports
    servers.close()


def config(pki, ports, tmp, **extra):
    endpoints = [{"name": n, "address": f"127.0.0.1:{p}", "server_name": pki.server_name(n)} for n, p in ports.items()]
    sec = {"state_dir": str(tmp / "state"), "tls": {"probe_timeout": "3s", "ca_file": str(pki.bundle),
                                                     "endpoints": endpoints}}
    sec.update(extra)
    return load_data({"stack": {"run_dir": str(tmp / "run"), "scrape_timeout": "10s",
                                "ports": {"exporter_security": free_port()}},
                      "exporters": {"security": sec}})


def samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got, name, **labels):
    return got.get((name, tuple(sorted(labels.items()))))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return r.read().decode()


def test_tls_endpoints(pki, tmp_path):
    pki, ports = pki
    cfg = config(pki, ports, tmp_path)
    col = SecurityCollector.from_config(cfg)
    try:
        text = generate_latest(registry_for(col)).decode()
        text2 = generate_latest(registry_for(col)).decode()
    finally:
        col.close()
    got = samples(text)
    leaf = {n: pki.leaves[n][0].not_after for n in pki.leaves}
    ok = lambda n: value(got, "opsstack_tls_probe_success", endpoint=n)  # noqa: E731
    # a good chain: leaf and verified chain apart (the intermediate ends first)
    assert ok("good") == 1 and value(got, "opsstack_tls_leaf_not_after_timestamp_seconds", endpoint="good") == leaf["good"]
    assert value(got, "opsstack_tls_chain_not_after_timestamp_seconds", endpoint="good") == pki.inter.not_after
    assert value(got, "opsstack_tls_verified_chain_certificates", endpoint="good") == 3
    assert value(got, "opsstack_tls_protocol_info", endpoint="good", version="TLSv1.3") == 1
    # cross-signed: the server presents a cross certificate expiring in 3 days; the verified
    # chain ends at the bundle's root, so the chain expiry is the intermediate's, not the cross's
    assert ok("cross") == 1 and value(got, "opsstack_tls_presented_certificates", endpoint="cross") == 3
    chain_cross = value(got, "opsstack_tls_chain_not_after_timestamp_seconds", endpoint="cross")
    assert chain_cross == pki.inter.not_after and chain_cross > pki.cross.not_after
    # close to expiry: verifies, expires in 5 days (below the 7 d critical threshold exported)
    soon = value(got, "opsstack_tls_leaf_not_after_timestamp_seconds", endpoint="soon")
    assert ok("soon") == 1 and soon - time.time() < value(got, "opsstack_tls_expiry_critical_seconds")
    assert value(got, "opsstack_tls_expiry_warning_seconds") == 30 * 86400
    assert value(got, "opsstack_tls_protocol_info", endpoint="tls12", version="TLSv1.2") == 1
    # failures, each with its reason, the leaf still read where a handshake happened
    for name, reason in (("expired", "expired"), ("wronghost", "hostname_mismatch"), ("unknown", "unknown_ca"),
                         ("silent", "timeout"), ("refused", "refused")):
        assert ok(name) == 0, name
        assert value(got, "opsstack_tls_handshake_error", endpoint=name, reason=reason) == 1, name
        assert sum(v for (n, lab), v in got.items() if n == "opsstack_tls_handshake_error"
                   and dict(lab)["endpoint"] == name) == 1
        assert value(got, "opsstack_tls_chain_not_after_timestamp_seconds", endpoint=name) is None
    assert value(got, "opsstack_tls_leaf_not_after_timestamp_seconds", endpoint="expired") == leaf["expired"] < time.time()
    assert value(got, "opsstack_tls_leaf_not_after_timestamp_seconds", endpoint="wronghost") == leaf["wronghost"]
    assert value(got, "opsstack_tls_leaf_not_after_timestamp_seconds", endpoint="silent") is None
    got2 = samples(text2)
    assert value(got2, "opsstack_tls_handshake_errors_total", endpoint="expired", reason="expired") == 2
    assert value(got2, "opsstack_tls_probes_total", endpoint="good") == 2
    assert value(got2, "opsstack_tls_handshake_errors_total", endpoint="good", reason="expired") == 0
    assert value(got, "opsstack_exporter_up", exporter="security", source="tls") == 1
    lint = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def jline(vhost, status, ua="Mozilla/5.0 (X11) Firefox/120.0"):
    return json.dumps({"time": "2026-11-29T10:00:00+00:00", "vhost": vhost, "status": status, "method": "GET",
                       "bytes": 1, "rt": 0.001, "ua": ua, "addr": "192.0.2.1"}, separators=(",", ":"))


def test_served_logs_and_restore_result(pki, tmp_path):
    pki, ports = pki
    access, audit = tmp_path / "access.json", tmp_path / "audit.json"
    access.write_text(jline("shop", 200) + "\n")   # history: not counted (start_at: end)
    audit.write_text("")
    cfg = config(pki, {"good": ports["good"]}, tmp_path,
                 tail={"poll_interval": "0.1s"},
                 access={"logs": [{"name": "edge", "path": str(access)}], "vhosts": ["shop", "api"]},
                 waf={"logs": [{"name": "modsec", "path": str(audit)}]},
                 backup={"enabled": True, "pgbackrest": "/bin/false", "interval": "0s"})
    write_result(tmp_path / "state" / "restore-verify.json",
                 RestoreResult(stanza="demo", success=True, finished=time.time(), duration_seconds=42.0,
                               last_success=time.time()))
    port = cfg["stack"]["ports"]["exporter_security"]
    stop = threading.Event()
    th = threading.Thread(target=serve, args=(cfg, stop), daemon=True)
    th.start()
    try:
        wait_for(lambda: scrape(port), timeout=30, what="the exporter answers")
        with open(access, "a") as fh:
            for st in (401, 401, 403, 429, 200):
                fh.write(jline("shop", st) + "\n")
            fh.write(jline("api", 200, ua="sqlmap/1.7") + "\n")
        rec = {"transaction": {"request": {"headers": {"Host": "shop"}}, "response": {"http_code": 403},
                               "messages": [{"details": {"ruleId": "942100"}}, {"details": {"ruleId": "949110"}}]}}
        with open(audit, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        got = wait_for(lambda: (g := samples(scrape(port))) and
                       value(g, "opsstack_logtail_lines_total", log="edge") == 6 and
                       value(g, "opsstack_logtail_lines_total", log="modsec") == 1 and g, timeout=30,
                       what="the new lines counted")
        text = scrape(port)
    finally:
        stop.set()
        th.join(30)
    assert value(got, "opsstack_access_responses_total", vhost="shop", status="401") == 2
    assert value(got, "opsstack_access_responses_total", vhost="shop", status="2xx") == 1
    assert value(got, "opsstack_access_requests_by_agent_total", vhost="api", agent="scanner") == 1
    assert value(got, "opsstack_waf_blocked_requests_total", vhost="shop", attack_class="sqli") == 1
    # the known vhosts' classes start at 0 (a first burst is an increase rate() sees), nothing else
    blocked = {(dict(k[1])["vhost"], dict(k[1])["attack_class"]): v for k, v in got.items()
               if k[0] == "opsstack_waf_blocked_requests_total"}
    assert set(blocked) == {(vh, cl) for vh in ("shop", "api") for cl in ("sqli", "xss", "scanner", "protocol", "other")}
    assert sum(blocked.values()) == 1
    assert value(got, "opsstack_security_collector_success", collector="logs") == 1
    assert value(got, "opsstack_security_collector_interval_seconds", collector="logs") == 0.1
    # pgbackrest failing: up 0, no stanza series, thresholds and the restore result still there
    assert value(got, "opsstack_exporter_up", exporter="security", source="pgbackrest") == 0
    assert value(got, "opsstack_security_collector_success", collector="pgbackrest") == 0
    assert value(got, "opsstack_backup_rpo_seconds") == 300 and value(got, "opsstack_backup_rto_seconds") == 900
    assert value(got, "opsstack_backup_restore_verify_success", stanza="demo") == 1
    assert value(got, "opsstack_backup_restore_verify_duration_seconds", stanza="demo") == 42.0
    lint = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    state = json.loads((tmp_path / "state" / "tail-state.json").read_text())
    assert set(state) == {"edge", "modsec"} and state["edge"]["offset"] == access.stat().st_size
