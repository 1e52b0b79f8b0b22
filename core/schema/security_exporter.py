"""The `exporters.security` config section (registered as the "security" key in
core/schema/exporters.py): TLS endpoints, nginx access and ModSecurity audit logs, fail2ban,
pgBackRest backups and the restore verification. Metrics: docs/metrics.md, "Security exporter"."""
from __future__ import annotations

import re

from core.spec import ConfigError, Field, ListOf

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def _name(v):
    return None if _NAME.match(v) else f"must be lowercase letters, digits, '-' or '_', got {v!r}"


def _address(v):
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})", v or "")
    if not m or not 0 < int(m.group(2)) < 65536:
        return f"must be host:port (or [v6]:port), got {v!r}"
    return None


def _classes(v):
    if not isinstance(v, dict) or not v:
        return "must map attack class -> list of rule id prefixes"
    for k, prefixes in v.items():
        if not _NAME.match(str(k)) or k == "other":
            return f"class {k!r}: lowercase letters, digits, '-' or '_', and not 'other'"
        if not isinstance(prefixes, list) or not prefixes or \
                not all(isinstance(p, (str, int)) and re.fullmatch(r"\d{1,6}", str(p)) for p in prefixes):
            return f"class {k!r}: a list of rule id prefixes (digits), e.g. [\"942\"]"
    return None


def _statuses(v):
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and 100 <= x <= 599
                                          for x in v):
        return "must be a list of HTTP status codes (100-599)"
    return None


SECTION = {
    "enabled": Field("bool", True),
    "state_dir": Field("str", None, nullable=True,
                       help="tail positions and restore results; null = <stack.run_dir>/security"),
    "tls": {
        "probe_timeout": Field("duration", "5s", minimum=0.05,
                               help="every handshake of a scrape runs under this one deadline"),
        "max_concurrency": Field("int", 64, minimum=1, maximum=4096),
        "ca_file": Field("str", None, nullable=True, help="CA bundle (PEM) of every endpoint; null = the system's"),
        "endpoints": ListOf({
            "name": Field("str", check=_name),
            "address": Field("str", check=_address),
            "server_name": Field("str", None, nullable=True, help="SNI and hostname check; null = the host"),
            "ca_file": Field("str", None, nullable=True, help="null = tls.ca_file"),
        }, unique_key="name"),
        # exported as gauges (opsstack_tls_expiry_*_seconds) for TlsCertExpiringSoon
        "warning_before": Field("duration", "30d", minimum=60),
        "critical_before": Field("duration", "7d", minimum=60),
    },
    "tail": {
        "poll_interval": Field("duration", "1s", minimum=0.05),
        "max_line": Field("int", 65536, minimum=256, maximum=16 * 1024 * 1024,
                          help="bytes; a longer line is cut to this, never dropped"),
        "rotate_grace": Field("duration", "5s", minimum=0,
                              help="a renamed log is read until it stays still this long"),
        "start_at": Field("str", "end", choices=("end", "beginning"),
                          help="a log with no saved position: only new lines, or the whole file"),
    },
    "access": {
        "logs": ListOf({
            "name": Field("str", check=_name),
            "path": Field("str"),
            "format": Field("str", "json", choices=("json", "combined")),
            "vhost": Field("str", None, nullable=True, help="combined format: the vhost label; null = name"),
        }, unique_key="name"),
        "statuses": Field("list", [401, 403, 404, 429, 444], check=_statuses,
                          help="codes with a series of their own; the rest by class (2xx, 4xx...)"),
        "vhosts": ListOf(Field("str"), help="vhosts known from the start (WAF Host headers match them)"),
        "max_vhosts": Field("int", 50, minimum=1, maximum=1000),
    },
    "waf": {
        "logs": ListOf({
            "name": Field("str", check=_name),
            "path": Field("str"),
        }, unique_key="name"),
        "block_statuses": Field("list", [403], check=_statuses),
        "classes": Field("dict", {"sqli": ["942"], "xss": ["941"], "scanner": ["913"], "protocol": ["920", "921"]},
                         check=_classes),
    },
    "fail2ban": {
        "db_path": Field("str", None, nullable=True, help="fail2ban's dbfile; null = no fail2ban series"),
        "recent_window": Field("duration", "10m", minimum=10),
    },
    "backup": {
        "enabled": Field("bool", False, help="read `pgbackrest info`"),
        "pgbackrest": Field("str", "pgbackrest"),
        "config": Field("str", None, nullable=True, help="pgbackrest --config; null = its default"),
        "stanzas": ListOf(Field("str", check=_name), help="[] = every stanza of the repository"),
        "interval": Field("duration", "1m", minimum=0,
                          help="`pgbackrest info` runs in the background this often (0 = every scrape)"),
        "timeout": Field("duration", "30s", minimum=1),
        "rpo": Field("duration", "5m", minimum=1, help="exported as opsstack_backup_rpo_seconds"),
        "rto": Field("duration", "15m", minimum=1, help="exported as opsstack_backup_rto_seconds"),
        "verify": {
            "stanzas": ListOf(Field("str", check=_name), help="[] = backup.stanzas"),
            "target": Field("str", "immediate", choices=("immediate", "latest")),
            "query": Field("str", "select count(*) from pg_class"),
            "timeout": Field("duration", "15m", minimum=10),
            "result_file": Field("str", None, nullable=True, help="null = <state_dir>/restore-verify.json"),
            "work_dir": Field("str", None, nullable=True, help="scratch folder parent; null = the system's tmp"),
        },
    },
}


def check(cfg):
    s = cfg["exporters"]["security"]
    if s["tls"]["critical_before"] > s["tls"]["warning_before"]:
        raise ConfigError("exporters.security.tls.critical_before", "must not be longer than warning_before")
    if s["tls"]["endpoints"] and s["tls"]["probe_timeout"] >= cfg["stack"]["scrape_timeout"]:
        raise ConfigError("exporters.security.tls.probe_timeout", "must be shorter than stack.scrape_timeout "
                          "(handshakes run at scrape time)")
    names = [x["name"] for x in s["access"]["logs"]] + [x["name"] for x in s["waf"]["logs"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError("exporters.security.waf.logs", f"log name {dup[0]!r} is also an access log's name")
    if s["backup"]["verify"]["stanzas"] and not s["backup"]["enabled"]:
        raise ConfigError("exporters.security.backup.verify.stanzas", "needs backup.enabled")
