"""Security, backup and replica alerts (exporters/security, exporters/db; docs/metrics.md).

- TlsCertExpiringSoon: per endpoint, the earliest notAfter of the **verified chain**
  (`opsstack_tls_chain_not_after_timestamp_seconds`, which holds the leaf too), or the leaf's
  where the chain does not verify (an expired or misnamed certificate); warning below
  ``exporters.security.tls.warning_before`` (30d), critical below ``critical_before`` (7d), the
  two ranges exclusive so one certificate is one alert. Never on every presented certificate
  (a cross-signed root would alarm for nothing).
- WafAttackSurge: ModSecurity-blocked requests per vhost and attack class per second.
- BruteForceDetected: 401 answers per vhost per second at the edge nginx, or a fail2ban jail
  with many recent bans.
- BackupStale: the newest pgBackRest backup (any type) of a stanza is older than
  ``alerts.security.backup_max_age`` (26h: a daily schedule and slack). The RPO (5m) is a matter
  of the WAL archive, not of backups: PostgresWalArchiveStale (alert_rules/db.py) watches it.
- BackupVerificationFailed: the last restore verification failed, or took longer than the RTO
  (`opsstack_backup_rto_seconds`).
- ReplicaLagHigh: a replica is further behind than the RPO (a failover would lose more than the
  RPO); PostgresReplicationLagHigh (alert_rules/db.py) is the earlier warning at 30s.
"""
from __future__ import annotations

from alert_rules.common import alert, fmt, group
from core.config import format_duration


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else format_duration(seconds)


def tls_expiry(op: str, threshold: float) -> str:
    """Seconds left on each endpoint's verified chain (the leaf where it does not verify) ``op`` threshold."""
    return ("min by (endpoint) (\n"
            "  opsstack_tls_chain_not_after_timestamp_seconds\n"
            "  or opsstack_tls_leaf_not_after_timestamp_seconds\n"
            f") - time() {op} {fmt(threshold)}")


def groups(cfg: dict) -> list[dict]:
    sec = cfg["exporters"]["security"]
    if not sec["enabled"]:
        return []
    a = cfg["alerts"]["security"]
    team = cfg["alerts"]["team"]
    dba = cfg["exporters"]["db"]["alerts"]
    w = format_duration(cfg["alerts"]["rate_window"])
    warn, crit = sec["tls"]["warning_before"], sec["tls"]["critical_before"]
    rpo = sec["backup"]["rpo"]

    def edge(name, expr, **kw):
        return alert(cfg, name, expr, service="edge", team=team, **kw)

    # a service of its own: a critical certificate must not inhibit (Alertmanager: equal service) the
    # edge's attack warnings
    def tls(name, expr, **kw):
        return alert(cfg, name, expr, service="tls", team=team, **kw)

    def db(name, expr, **kw):
        return alert(cfg, name, expr, service=dba["service"], team=dba["team"], **kw)

    tls_desc = ("The certificate of endpoint {{ $labels.endpoint }} (verified chain, else the leaf) expires in "
                "{{ $value | humanizeDuration }}")
    edge_rules = [
        tls("TlsCertExpiringSoon", f"{tls_expiry('<', warn)}\nand\n{tls_expiry('>=', crit)}",
             severity="warning", tier=2, for_seconds=a["tls_for"],
             summary="A TLS certificate expires soon.",
             description=f"{tls_desc} (warning below {_days(warn)}); renew it."),
        tls("TlsCertExpiringSoon", tls_expiry('<', crit),
             severity="critical", tier=1, for_seconds=a["tls_for"],
             summary="A TLS certificate expires within days.",
             description=f"{tls_desc} (critical below {_days(crit)}; negative = expired); renew it now."),
        edge("WafAttackSurge",
             f"sum by (vhost, attack_class) (rate(opsstack_waf_blocked_requests_total[{w}]))\n"
             f"> {fmt(a['waf_blocked_rate'])}",
             severity="warning", tier=2, for_seconds=a["waf_for"],
             summary="The WAF blocks a surge of attack requests.",
             description="ModSecurity blocks {{ $value | humanize }} {{ $labels.attack_class }} requests/s on vhost "
                         f"{{{{ $labels.vhost }}}} over {w} (threshold {a['waf_blocked_rate']:g}/s)."),
        edge("BruteForceDetected",
             f'sum by (vhost) (rate(opsstack_access_responses_total{{status="401"}}[{w}]))\n'
             f"> {fmt(a['auth_failure_rate'])}",
             severity="warning", tier=2, for_seconds=a["brute_force_for"],
             summary="Many requests fail authentication.",
             description="Vhost {{ $labels.vhost }} answers {{ $value | humanize }} 401/s over " + w +
                         f" (threshold {a['auth_failure_rate']:g}/s): password guessing or a broken client.",
             labels={"source": "nginx"}),
        edge("BruteForceDetected",
             f"opsstack_fail2ban_recent_bans >= {a['recent_bans']}",
             severity="warning", tier=2, for_seconds=a["brute_force_for"],
             summary="Many requests fail authentication.",
             description="fail2ban jail {{ $labels.jail }} banned {{ $value }} addresses within its recent window "
                         f"(threshold {a['recent_bans']}).",
             labels={"source": "fail2ban"}),
    ]
    backup_rules = [
        db("BackupStale",
           "time() - max by (stanza) (opsstack_backup_last_completion_timestamp_seconds)\n"
           f"> {fmt(a['backup_max_age'])}",
           severity="critical", tier=1, for_seconds=a["backup_stale_for"],
           summary="The newest backup is older than the backup schedule allows.",
           description="The newest pgBackRest backup of stanza {{ $labels.stanza }} finished "
                       f"{{{{ $value | humanizeDuration }}}} ago (at most {format_duration(a['backup_max_age'])}, "
                       "alerts.security.backup_max_age)."),
        db("BackupVerificationFailed", "opsstack_backup_restore_verify_success == 0",
           severity="critical", tier=1,
           summary="The last restore verification failed.",
           description="Restoring the newest backup of stanza {{ $labels.stanza }} did not restore, start or "
                       "answer the query (value {{ $value }}); the backups may not be restorable.",
           labels={"check": "result"}),
        db("BackupVerificationFailed",
           "opsstack_backup_restore_verify_duration_seconds\n"
           "> on () group_left max(opsstack_backup_rto_seconds)\n"
           "and opsstack_backup_restore_verify_success == 1",
           severity="warning", tier=2,
           summary="The last restore verification took longer than the recovery time objective.",
           description="Restoring stanza {{ $labels.stanza }} took {{ $value | humanizeDuration }} (RTO "
                       f"{format_duration(sec['backup']['rto'])}, opsstack_backup_rto_seconds).",
           labels={"check": "rto"}),
        db("ReplicaLagHigh",
           f"max by (server, replica) (opsstack_db_replication_lag_seconds) > {fmt(rpo)}",
           severity="critical", tier=1, for_seconds=a["replica_lag_for"],
           summary="A PostgreSQL replica lags behind by more than the recovery point objective.",
           description="Replica {{ $labels.replica }} of {{ $labels.server }} is {{ $value | humanizeDuration }} "
                       f"behind (RPO {format_duration(rpo)}): a failover now would lose more than the RPO."),
    ]
    return [group("opsstack-edge-security", edge_rules), group("opsstack-backups", backup_rules)]
