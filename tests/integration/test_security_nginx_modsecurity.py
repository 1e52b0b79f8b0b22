"""Real nginx + ModSecurity v3 + OWASP CRS 3 (Debian packages) on loopback writing the access
log in the format we ship (`opsstack security nginx-log-format`) and the JSON audit log; the
security exporter's tailers and parsers count them: responses per vhost and status, blocked
requests per attack class (SQLi, XSS, scanner, protocol). fail2ban-regex checks the fail2ban
filter we ship against the same access log."""
from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.config import load_data
from core.procs import free_port
from exporters.security.access import FAIL2BAN_FILTER, NGINX_LOG_FORMAT
from exporters.security.collector import SecurityCollector
from tests.support.wait import wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
CRS = Path("/usr/share/modsecurity-crs/rules")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    not (Path(NGINX).exists() and MODULE.exists() and CRS.exists()),
    reason="nginx, libnginx-mod-http-modsecurity, modsecurity-crs not installed (scripts/install-deps.sh --test)")]

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    d = tmp_path_factory.mktemp("nginx")
    (d / "www").mkdir()
    (d / "tmp").mkdir()
    (d / "www" / "index.html").write_text("hello\n")
    (d / "modsec.conf").write_text(
        "SecRuleEngine On\nSecRequestBodyAccess On\nSecAuditEngine RelevantOnly\n"
        'SecAuditLogRelevantStatus "^(?:5|4(?!04))"\nSecAuditLogParts ABIJDEFHZ\nSecAuditLogType Serial\n'
        f"SecAuditLogFormat JSON\nSecAuditLog {d}/modsec_audit.json\nSecTmpDir {d}/tmp\nSecDataDir {d}/tmp\n"
        f"Include /etc/modsecurity/crs/crs-setup.conf\nInclude {CRS}/*.conf\n")
    port = free_port()
    user = "user root root;" if os.geteuid() == 0 else ""  # as root, workers would be nobody: tmp is 0700
    (d / "nginx.conf").write_text(f"""
load_module {MODULE};
{user}
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
  {NGINX_LOG_FORMAT}
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fcgi;
  uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  access_log {d}/access.json opsstack_json;
  limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
  server {{
    listen 127.0.0.1:{port}; server_name shop.test;
    modsecurity on; modsecurity_rules_file {d}/modsec.conf;
    root {d}/www;
    location = /login {{ return 401; }}
    location /burst {{ limit_req zone=one burst=1 nodelay; limit_req_status 429; try_files /index.html =404; }}
  }}
}}
""")
    out = open(d / "nginx.out", "ab")
    proc = subprocess.Popen([NGINX, "-c", str(d / "nginx.conf"), "-p", str(d)], stdout=out, stderr=out,
                            start_new_session=True)
    out.close()
    try:
        wait_for(lambda: get(port, "/")[0] == 200, timeout=60, what="nginx answers")
        yield d, port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def get(port: int, path: str, ua: str = BROWSER, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="GET",
                                 headers={"Host": "shop.test", "User-Agent": ua, "Accept": "text/html"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_nginx_and_modsecurity_logs_counted(nginx, tmp_path):
    d, port = nginx
    cfg = load_data({"stack": {"run_dir": str(tmp_path / "run")}, "exporters": {"security": {
        "state_dir": str(tmp_path / "state"),
        "tail": {"start_at": "beginning", "poll_interval": "0.1s"},
        "access": {"logs": [{"name": "edge", "path": str(d / "access.json")}]},
        "waf": {"logs": [{"name": "modsec", "path": str(d / "modsec_audit.json")}]}}}})
    col = SecurityCollector.from_config(cfg, start_background=False)
    try:
        col.logs.poll_once()  # the first request of the fixture: one 200
        codes = [get(port, p)[0] for p in ("/?id=1%27%20OR%20%271%27=%271",            # SQLi: 942xxx
                                           "/?q=%3Cscript%3Ealert(1)%3C/script%3E",     # XSS: 941xxx
                                           "/login", "/burst", "/burst", "/burst")]
        codes.append(get(port, "/", ua="sqlmap/1.7.2#stable (https://sqlmap.org)")[0])  # scanner: 913100
        codes.append(get(port, "/", data=b"a=b")[0])                                    # GET with a body: 920170
        assert codes == [403, 403, 401, 200, 200, 429, 403, 403]
        lines = lambda name: next(t.stats.lines for n, _, t, _ in col.logs.logs if n == name)  # noqa: E731

        def counted():
            col.logs.poll_once()
            return lines("edge") == 9 and lines("modsec") >= 6
        wait_for(counted, timeout=30, what="nginx's lines counted")
        responses, agents, unparsed = col.logs.access.snapshot()
        blocked, detected, transactions, waf_unparsed = col.logs.waf.snapshot()
    finally:
        col.close()
    assert responses == {("shop.test", "2xx"): 3, ("shop.test", "403"): 4, ("shop.test", "401"): 1,
                         ("shop.test", "429"): 1}
    assert agents == {("shop.test", "browser"): 8, ("shop.test", "scanner"): 1}
    assert unparsed == {} and waf_unparsed == {}
    assert blocked == {("shop.test", "sqli"): 1, ("shop.test", "xss"): 1, ("shop.test", "scanner"): 1,
                       ("shop.test", "protocol"): 1}
    assert detected[("shop.test", "sqli")] == 1 and detected[("shop.test", "xss")] == 1
    regex = shutil.which("fail2ban-regex")
    if regex:
        flt = tmp_path / "opsstack-auth.conf"
        flt.write_text(FAIL2BAN_FILTER)
        r = subprocess.run([regex, str(d / "access.json"), str(flt)], capture_output=True, text=True, timeout=60)
        assert "Lines: 9 lines, 0 ignored, 5 matched, 4 missed" in r.stdout, r.stdout[-2000:]
