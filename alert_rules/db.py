"""PostgreSQL alerts on the database exporter's metrics (exporters/db, docs/metrics.md).

Thresholds and `for:` durations come from `exporters.db.alerts` (and the slow-statement
threshold from `exporters.db.statements.slow_threshold`), so the exporter, these rules and
the dashboard agree. Every series carries `server` (the exporter's target name).
"""
from __future__ import annotations

from alert_rules.common import alert, fmt, group
from core.config import format_duration


def groups(cfg: dict) -> list[dict]:
    dbc = cfg["exporters"]["db"]
    if not dbc["enabled"]:
        return []
    a = dbc["alerts"]
    svc, team = a["service"], a["team"]
    slow = dbc["statements"]["slow_threshold"]
    rpo = a["wal_archive_rpo"]
    win = format_duration(a["deadlocks_window"])

    def al(name, expr, **kw):
        return alert(cfg, name, expr, service=svc, team=team, **kw)

    availability = [
        al("PostgresDown", "opsstack_db_up == 0",
           severity="critical", tier=1, for_seconds=cfg["alerts"]["service_down_for"],
           summary="A PostgreSQL server does not answer.",
           description="The exporter cannot connect to or read PostgreSQL server {{ $labels.server }} "
                       f"(exporter {{{{ $labels.instance }}}}) for more than "
                       f"{format_duration(cfg['alerts']['service_down_for'])}."),
        al("PostgresConnectionPoolHigh",
           f"opsstack_db_connections_used_ratio > {fmt(a['pool_use_ratio'])}",
           severity="warning", tier=2, for_seconds=a["pool_use_for"],
           summary="PostgreSQL connections are close to max_connections.",
           description="Server {{ $labels.server }} uses {{ $value | humanizePercentage }} of max_connections "
                       f"(threshold {a['pool_use_ratio']:.0%}) for {format_duration(a['pool_use_for'])}; "
                       "new connections will soon be refused."),
        al("PostgresReplicationLagHigh",
           f"max by (server, replica) (opsstack_db_replication_lag_seconds) > {fmt(a['replication_lag'])}",
           severity="warning", tier=2, for_seconds=a["replication_lag_for"],
           summary="A PostgreSQL replica lags behind its primary.",
           description="Replica {{ $labels.replica }} of {{ $labels.server }} is {{ $value | humanizeDuration }} "
                       f"behind (threshold {format_duration(a['replication_lag'])})."),
    ]
    performance = [
        al("PostgresAvgQueryTimeHigh",
           "sum by (server, datname) (rate(opsstack_db_statements_exec_seconds_total[5m]))\n"
           "  / sum by (server, datname) (rate(opsstack_db_statements_calls_total[5m]))\n"
           f"> {fmt(a['avg_query_time'])}",
           severity="warning", tier=2, for_seconds=a["avg_query_for"],
           summary="PostgreSQL statements are slow on average.",
           description="The mean execution time of the statements in {{ $labels.server }}/{{ $labels.datname }} "
                       "is {{ $value | humanizeDuration }} over 5m (threshold "
                       f"{format_duration(a['avg_query_time'])})."),
        al("PostgresSlowQueries",
           "sum by (server, datname, queryid) (rate(opsstack_db_statement_exec_seconds_total[10m]))\n"
           "  / sum by (server, datname, queryid) (rate(opsstack_db_statement_calls_total[10m]))\n"
           f"> {fmt(slow)}",
           severity="warning", tier=2, for_seconds=a["slow_queries_for"],
           summary="A PostgreSQL statement is slower than the slow-query threshold.",
           description="Statement {{ $labels.queryid }} in {{ $labels.server }}/{{ $labels.datname }} took "
                       "{{ $value | humanizeDuration }} per call over 10m (threshold "
                       f"{format_duration(slow)}); its text is in opsstack_db_statement_info and "
                       "`opsstack db advise` may know the index it needs."),
        al("PostgresCacheHitRatioLow",
           "sum by (server, datname) (rate(opsstack_db_blocks_hit_total[10m]))\n"
           "  / (sum by (server, datname) (rate(opsstack_db_blocks_hit_total[10m]))\n"
           "     + sum by (server, datname) (rate(opsstack_db_blocks_read_total[10m])))\n"
           f"< {fmt(a['cache_hit_ratio'])}\n"
           "and sum by (server, datname) (rate(opsstack_db_blocks_hit_total[10m])\n"
           "                               + rate(opsstack_db_blocks_read_total[10m])) > 10",
           severity="warning", tier=3, for_seconds=a["cache_hit_for"],
           summary="PostgreSQL reads too many blocks from disk.",
           description="Only {{ $value | humanizePercentage }} of the block reads of "
                       "{{ $labels.server }}/{{ $labels.datname }} hit shared buffers over 10m "
                       f"(threshold {a['cache_hit_ratio']:.0%})."),
        al("PostgresDeadlocks", f"increase(opsstack_db_deadlocks_total[{win}]) > 0",
           severity="warning", tier=3, for_seconds=60,
           summary="PostgreSQL detected deadlocks.",
           description="{{ $value | humanize }} deadlock(s) in {{ $labels.server }}/{{ $labels.datname }} "
                       f"over the last {win}."),
    ]
    durability = [
        al("PostgresWalArchiveStale",
           "time() - opsstack_db_archiver_last_archived_timestamp_seconds\n"
           f"  > {fmt(rpo)}\n"
           "and on (server, instance) opsstack_db_archiver_enabled == 1",
           severity="critical", tier=1, for_seconds=60,
           summary="No WAL file was archived within the recovery point objective.",
           description="The last WAL archive of {{ $labels.server }} is {{ $value | humanizeDuration }} old "
                       f"(RPO {format_duration(rpo)}); point-in-time recovery would lose that much data."),
        al("PostgresWalArchiveFailing",
           "opsstack_db_archiver_last_failed_timestamp_seconds\n"
           "  > opsstack_db_archiver_last_archived_timestamp_seconds\n"
           "and on (server, instance) opsstack_db_archiver_enabled == 1",
           severity="warning", tier=2, for_seconds=a["wal_archive_failing_for"],
           summary="WAL archiving fails.",
           description="The newest WAL archive attempt of {{ $labels.server }} failed and none succeeded since "
                       "(archive_command; pg_stat_archiver). The recovery point stops moving: "
                       f"PostgresWalArchiveStale pages when it is {format_duration(rpo)} old."),
        al("PostgresBackupStale",
           f"time() - opsstack_db_backup_last_success_timestamp_seconds > {fmt(a['backup_max_age'])}",
           severity="warning", tier=2, for_seconds=900,
           summary="The last PostgreSQL base backup is too old.",
           description="The last base backup of {{ $labels.server }} finished {{ $value | humanizeDuration }} ago "
                       f"(max {format_duration(a['backup_max_age'])})."),
        al("PostgresPartitionMissing", 'opsstack_db_partition_present{period="current"} == 0',
           severity="critical", tier=1, for_seconds=a["partition_missing_for"],
           summary="A partitioned table has no partition for the current period.",
           description="{{ $labels.server }}/{{ $labels.datname }}: {{ $labels.table }} has no partition for "
                       "the current period; rows go to the default partition or inserts fail (value {{ $value }})."),
        al("PostgresPartitionMissing", 'opsstack_db_partition_present{period="next"} == 0',
           severity="warning", tier=2, for_seconds=a["partition_missing_for"],
           summary="A partitioned table has no partition for the next period.",
           description="{{ $labels.server }}/{{ $labels.datname }}: {{ $labels.table }} has no partition for "
                       "the next period yet; create it before the period starts (value {{ $value }})."),
    ]
    return [
        group("opsstack-db-availability", availability),
        group("opsstack-db-performance", performance),
        group("opsstack-db-durability", durability),
    ]
