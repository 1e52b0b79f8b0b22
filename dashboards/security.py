"""Security: TLS, attacks and access, backups (issue 11).

Rows: TLS (days left per endpoint, leaf against the verified chain; handshakes), attacks and
access (blocked requests by attack class, 401/403/429 per vhost, bot share, fail2ban bans per
jail), backups (age of the newest backup against the RPO, stanza status, the last restore
verification and its duration against the RTO). Thresholds come from the keys
alert_rules/security.py uses (`exporters.security.tls`, `exporters.security.backup.rpo|rto`,
`alerts.security`).

Counters of the log tailer appear with the first line of their kind (a vhost's first 401, the
first blocked request); where that leaves a panel empty on a quiet edge, the query falls back to
0 only while the security exporter reads the logs (`opsstack_security_collector_success`), so a
0 means "read, none seen", never "not measured".
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
)

from core.config import format_duration
from dashboards.common import bars as _bars, lines as _lines
from dashboards.common import (
    GREEN,
    ORANGE,
    RED,
    YELLOW,
    new_dashboard,
    panel,
    prom,
    reduce_last,
    steps,
    to_model,
    up_down_mappings, with_rows)

UID = "opsstack-security"
TITLE = "Security"

BOTS = 'agent=~"bot|scanner|tool|empty|other"'
HUMAN_AND_BOTS = 'agent!="monitor"'


def _stat() -> stat.Panel:
    return (stat.Panel().reduce_options(reduce_last()).color_mode(BigValueColorMode.BACKGROUND)
            .graph_mode(BigValueGraphMode.NONE))


def read_as_zero(collector: str) -> str:
    """A series of value 0 while the security exporter's collector reads its source (to `or` after a
    query whose counters have not appeared yet)."""
    return f'0 * max(opsstack_security_collector_success{{collector="{collector}"}})'


def blocked_by_class() -> str:
    return ("sum by (attack_class) (rate(opsstack_waf_blocked_requests_total[$__rate_interval]))\n"
            f"or on () {read_as_zero('logs')}")


def access_denied_by_vhost() -> str:
    return ('sum by (vhost, status) (rate(opsstack_access_responses_total{status=~"401|403|429"}'
            "[$__rate_interval]))\n"
            f"or on () {read_as_zero('logs')}")


def tls_days_left(metric: str) -> str:
    return f"({metric} - time()) / 86400"


def backup_age() -> str:
    return "time() - max by (stanza) (opsstack_backup_last_completion_timestamp_seconds)"


def tls(cfg: dict) -> list:
    t = cfg["exporters"]["security"]["tls"]
    warn, crit = t["warning_before"] / 86400, t["critical_before"] / 86400
    return [
        panel(_bars(), "TLS days left: leaf vs verified chain",
              "Days until the certificate of each endpoint expires: the leaf "
              "(opsstack_tls_leaf_not_after_timestamp_seconds) and the earliest certificate of the verified "
              "chain, leaf to trust anchor (opsstack_tls_chain_not_after_timestamp_seconds; absent when it does "
              "not verify). A chain earlier than its leaf: an intermediate expires first. TlsCertExpiringSoon: "
              f"warning below {warn:g} days, critical below {crit:g}.",
              "d",
              [prom(tls_days_left("opsstack_tls_leaf_not_after_timestamp_seconds"), "{{endpoint}} leaf", instant=True),
               prom(tls_days_left("opsstack_tls_chain_not_after_timestamp_seconds"), "{{endpoint}} chain",
                    instant=True)],
              thresholds=steps([(None, RED), (crit, ORANGE), (warn, GREEN)]), min_value=0, w=12, h=8),
        panel(_stat(), "TLS handshake",
              "1 when the last handshake of the endpoint succeeded and its chain verified "
              "(opsstack_tls_probe_success); the reason of a failure is opsstack_tls_handshake_error.",
              "none", [prom("opsstack_tls_probe_success", "{{endpoint}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=6, h=8).mappings(up_down_mappings()),
        panel(_lines(), "TLS handshake time",
              "Duration of the last handshake per endpoint (opsstack_tls_handshake_duration_seconds).",
              "s", [prom("opsstack_tls_handshake_duration_seconds", "{{endpoint}}")], min_value=0, w=6, h=8),
    ]


def attacks(cfg: dict) -> list:
    a = cfg["alerts"]["security"]
    return [
        panel(_lines(), "Blocked requests by attack class",
              "Requests ModSecurity (OWASP CRS) blocked per second by attack class "
              "(opsstack_waf_blocked_requests_total: sqli 942xxx, xss 941xxx, scanner 913xxx, protocol "
              f"920/921xxx). WafAttackSurge above {a['waf_blocked_rate']:g}/s per vhost and class for "
              f"{format_duration(a['waf_for'])}. 0: the audit log is read and nothing was blocked.",
              "reqps", [prom(blocked_by_class(), "{{attack_class}}")],
              thresholds=steps([(None, GREEN), (a["waf_blocked_rate"], RED)]), min_value=0, w=12, h=8),
        panel(_lines(), "401 / 403 / 429 per vhost",
              "Answers of the edge nginx that deny access, per vhost and status (opsstack_access_responses_total: "
              "401 authentication failed, 403 forbidden or blocked by the WAF, 429 rate-limited). "
              f"BruteForceDetected above {a['auth_failure_rate']:g} 401/s per vhost.",
              "reqps", [prom(access_denied_by_vhost(), "{{vhost}} {{status}}")],
              thresholds=steps([(None, GREEN), (a["auth_failure_rate"], RED)]), min_value=0, w=12, h=8),
        panel(_lines(), "Bot share per vhost",
              "Share of a vhost's requests from crawlers, scanners, scripts and clients without a browser "
              "User-Agent (opsstack_access_requests_by_agent_total, agent bot|scanner|tool|empty|other) among "
              "all but the monitors.",
              "percentunit",
              [prom(f"(\n  sum by (vhost) (rate(opsstack_access_requests_by_agent_total{{{BOTS}}}[$__rate_interval]))\n"
                    f"  or 0 * sum by (vhost) (rate(opsstack_access_requests_by_agent_total{{{HUMAN_AND_BOTS}}}"
                    "[$__rate_interval]))\n)\n"
                    f"/ sum by (vhost) (rate(opsstack_access_requests_by_agent_total{{{HUMAN_AND_BOTS}}}"
                    "[$__rate_interval]))", "{{vhost}}")],
              min_value=0, max_value=1, w=12, h=8),
        panel(_lines(), "fail2ban bans per jail",
              "Addresses banned now (opsstack_fail2ban_banned) and bans within the recent window "
              "(opsstack_fail2ban_recent_bans) per jail. BruteForceDetected at "
              f"{a['recent_bans']} recent bans.",
              "short",
              [prom("opsstack_fail2ban_banned", "{{jail}} banned now"),
               prom("opsstack_fail2ban_recent_bans", "{{jail}} recent bans")],
              thresholds=steps([(None, GREEN), (a["recent_bans"], RED)]), min_value=0, w=12, h=8),
    ]


def backups(cfg: dict) -> list:
    b = cfg["exporters"]["security"]["backup"]
    rpo, rto = b["rpo"], b["rto"]
    return [
        panel(_lines(), "Backup age vs RPO",
              "Time since the newest pgBackRest backup of any type finished, per stanza "
              "(opsstack_backup_last_completion_timestamp_seconds), and the RPO the security exporter exports "
              f"(opsstack_backup_rpo_seconds, {format_duration(rpo)}). BackupStale when the age stays above it "
              f"for {format_duration(cfg['alerts']['security']['backup_stale_for'])}.",
              "s",
              [prom(backup_age(), "{{stanza}}"),
               prom("max(opsstack_backup_rpo_seconds)", "RPO")],
              thresholds=steps([(None, GREEN), (rpo, RED)]), min_value=0, w=12, h=8),
        panel(_stat(), "Backup stanza status",
              "pgBackRest's status code per stanza (opsstack_backup_stanza_status_code: 0 ok, 1 missing stanza "
              "path, 2 no valid backups, ...) and whether a backup runs now (opsstack_backup_running).",
              "none",
              [prom("opsstack_backup_stanza_status_code", "{{stanza}} status", instant=True),
               prom("opsstack_backup_running", "{{stanza}} running", instant=True)],
              thresholds=steps([(None, GREEN), (1, RED)]), w=6, h=8),
        panel(_stat(), "Last restore verification",
              "1 when the last `opsstack security verify-restore` restored the newest backup, started "
              "PostgreSQL on it and answered the query (opsstack_backup_restore_verify_success); 0 fires "
              "BackupVerificationFailed.",
              "none", [prom("opsstack_backup_restore_verify_success", "{{stanza}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=6, h=8).mappings(_ok_failed()),
        panel(_bars(), "Restore time vs RTO",
              "Restore + start + query of the last verification (opsstack_backup_restore_verify_duration_seconds): "
              f"the measured recovery time, against the {format_duration(rto)} RTO (opsstack_backup_rto_seconds).",
              "s", [prom("opsstack_backup_restore_verify_duration_seconds", "{{stanza}}", instant=True)],
              thresholds=steps([(None, GREEN), (rto * 0.8, YELLOW), (rto, RED)]), min_value=0, max_value=rto,
              w=12, h=6),
        panel(_stat(), "Security exporter sources",
              "1 when each collector of the security exporter read its source on its last run "
              "(opsstack_security_collector_success: tls, logs, fail2ban, pgbackrest, restore_verify).",
              "none", [prom("opsstack_security_collector_success", "{{collector}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=12, h=6).mappings(up_down_mappings()),
    ]


def _ok_failed() -> list:
    from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

    return [ValueMap(options={"0": ValueMappingResult(text="FAILED", color=RED, index=0),
                              "1": ValueMappingResult(text="OK", color=GREEN, index=1)})]


ROWS = [
    ("TLS", tls),
    ("Attacks and access", attacks),
    ("Backups", backups),
]


def build(cfg: dict) -> dict:
    d = new_dashboard(
        UID, TITLE,
        description="TLS expiry per endpoint (leaf and verified chain), WAF blocks by attack class, denied access "
                    "per vhost, bots, fail2ban bans, backup age against the RPO and restore verification.",
        tags=["security", "backup"],
        time_from="now-6h", refresh="1m")
    return to_model(with_rows(d, ROWS, cfg))
