"""Database Performance: what is slow, why, and what to do about it (issue 4).

Rows: overview, query performance (latency, throughput, top and slow statements), indexes
(usage, heavy sequential scans, unused indexes, the advisor's proven suggestions),
connections and locks, lifecycle (sizes, growth, partitions, archiving candidates, vacuum),
replication and backups. Variables: datasource, server, datname. Thresholds come from
`exporters.db.alerts` and `exporters.db.statements`, the same keys alert_rules/db.py uses.
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import stat, table
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
)

from dashboards.common import bars as _bars, lines as _lines
from dashboards.common import (
    GREEN,
    RED,
    YELLOW,
    label_variable,
    new_dashboard,
    panel,
    prom,
    reduce_last,
    steps,
    to_model,
    up_down_mappings, with_rows)
from core.config import format_duration

UID = "opsstack-database"
TITLE = "Database Performance"

S = 'server=~"$server"'
SD = 'server=~"$server",datname=~"$datname"'
QKEY = "server, datname, queryid"


def _stat() -> stat.Panel:
    return (stat.Panel().reduce_options(reduce_last()).color_mode(BigValueColorMode.BACKGROUND)
            .graph_mode(BigValueGraphMode.AREA))


def _table() -> table.Panel:
    return table.Panel()


def _mean(by: str, sel: str, counter_time: str, counter_calls: str) -> str:
    return (f"sum by ({by}) (rate({counter_time}{{{sel}}}[$__rate_interval]))\n"
            f"/ sum by ({by}) (rate({counter_calls}{{{sel}}}[$__rate_interval]))")


def _with_text(expr: str) -> str:
    return (f"({expr})\n* on ({QKEY}) group_left (query)\n"
            f"max by ({QKEY}, query) (opsstack_db_statement_info{{{SD}}})")


def overview(cfg: dict) -> list:
    a = cfg["exporters"]["db"]["alerts"]
    return [
        panel(_stat(), "Server up",
              "1 when the exporter reads the server (opsstack_db_up); PostgresDown fires after "
              f"{format_duration(cfg['alerts']['service_down_for'])} of DOWN.",
              "none", [prom(f"opsstack_db_up{{{S}}}", "{{server}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=4, h=5).mappings(up_down_mappings()),
        panel(_stat(), "Connections used",
              "Client backends / max_connections (opsstack_db_connections_used_ratio). "
              f"PostgresConnectionPoolHigh fires above {a['pool_use_ratio']:.0%} for "
              f"{format_duration(a['pool_use_for'])}.",
              "percentunit", [prom(f"opsstack_db_connections_used_ratio{{{S}}}", "{{server}}")],
              thresholds=steps([(None, GREEN), (a["pool_use_ratio"], RED)]), min_value=0, max_value=1, w=4, h=5),
        panel(_stat(), "Cache hit ratio",
              "Block reads served from shared buffers (rate of blocks_hit over hit + read). "
              f"PostgresCacheHitRatioLow fires below {a['cache_hit_ratio']:.0%}.",
              "percentunit",
              [prom(f"sum by (server) (rate(opsstack_db_blocks_hit_total{{{SD}}}[$__rate_interval]))\n"
                    f"/ (sum by (server) (rate(opsstack_db_blocks_hit_total{{{SD}}}[$__rate_interval]))\n"
                    f"   + sum by (server) (rate(opsstack_db_blocks_read_total{{{SD}}}[$__rate_interval])))",
                    "{{server}}")],
              thresholds=steps([(None, RED), (a["cache_hit_ratio"], GREEN)]), min_value=0, max_value=1, w=4, h=5),
        panel(_stat(), "Mean query time",
              "Mean statement execution time weighted by calls (pg_stat_statements). "
              f"PostgresAvgQueryTimeHigh fires above {a['avg_query_time'] * 1000:g} ms.",
              "s", [prom(_mean("server", SD, "opsstack_db_statements_exec_seconds_total",
                               "opsstack_db_statements_calls_total"), "{{server}}")],
              thresholds=steps([(None, GREEN), (a["avg_query_time"], RED)]), w=4, h=5),
        panel(_stat(), "Slow statements",
              "Distinct statements whose mean time since the stats reset is above the slow threshold "
              f"({format_duration(cfg['exporters']['db']['statements']['slow_threshold'])}); the table "
              "below shows the ones slow right now.",
              "none", [prom(f"sum by (server) (opsstack_db_statements_slow{{{SD}}})", "{{server}}")],
              thresholds=steps([(None, GREEN), (1, YELLOW)]), w=4, h=5),
        panel(_stat(), "pg_stat_statements",
              "1 when pg_stat_statements is loaded and created; 0: the exporter logs how to enable it.",
              "none", [prom(f"opsstack_db_pg_stat_statements_available{{{S}}}", "{{server}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=4, h=5).mappings(up_down_mappings()),
    ]


def queries(cfg: dict) -> list:
    a = cfg["exporters"]["db"]["alerts"]
    slow = cfg["exporters"]["db"]["statements"]["slow_threshold"]
    return [
        panel(_lines(), "Query latency (mean per call)",
              "Mean execution time per call by database over the rate window "
              "(opsstack_db_statements_exec_seconds_total / opsstack_db_statements_calls_total). Dashed: "
              f"the {a['avg_query_time'] * 1000:g} ms alert threshold.",
              "s", [prom(_mean("server, datname", SD, "opsstack_db_statements_exec_seconds_total",
                               "opsstack_db_statements_calls_total"), "{{server}}/{{datname}}")],
              thresholds=steps([(None, GREEN), (a["avg_query_time"], RED)]), min_value=0, w=12, h=8),
        panel(_lines(), "Throughput",
              "Statements per second (pg_stat_statements calls) and transactions per second "
              "(commits + rollbacks) by database.",
              "ops",
              [prom(f"sum by (server, datname) (rate(opsstack_db_statements_calls_total{{{SD}}}[$__rate_interval]))",
                    "{{datname}} statements/s"),
               prom(f"sum by (server, datname) (rate(opsstack_db_xact_commit_total{{{SD}}}[$__rate_interval])"
                    f" + rate(opsstack_db_xact_rollback_total{{{SD}}}[$__rate_interval]))", "{{datname}} tx/s")],
              min_value=0, w=12, h=8),
        panel(_table(), "Top statements by total time",
              "The top-N statements by execution time per second over the window, with their "
              "normalized text (opsstack_db_statement_info, truncated). queryid is the "
              "pg_stat_statements id: `opsstack db advise` names the same ids.",
              "s",
              [prom(_with_text(f"topk(20, sum by ({QKEY}) "
                               f"(rate(opsstack_db_statement_exec_seconds_total{{{SD}}}[$__rate_interval])))"),
                    instant=True, table=True)],
              w=12, h=9),
        panel(_table(), "Slowest statements (mean per call)",
              "The top statements by mean execution time per call over the window, with their text. "
              f"Red: slower than the slow threshold ({format_duration(slow)}); PostgresSlowQueries fires "
              f"after {format_duration(a['slow_queries_for'])} above it.",
              "s",
              [prom(_with_text(f"topk(20, {_mean(QKEY, SD, 'opsstack_db_statement_exec_seconds_total', 'opsstack_db_statement_calls_total')})"),
                    instant=True, table=True)],
              thresholds=steps([(None, GREEN), (slow, RED)]), w=12, h=9),
    ]


def indexes(cfg: dict) -> list:
    return [
        panel(_bars(), "Index usage by table (lowest)",
              "idx_scan / (seq_scan + idx_scan) of the 15 tables that use their indexes least; "
              "a low ratio on a big table is a missing index.",
              "percentunit",
              [prom(f"bottomk(15, opsstack_db_table_index_usage_ratio{{{SD}}})", "{{datname}}.{{schemaname}}.{{relname}}",
                    instant=True)],
              thresholds=steps([(None, RED), (0.5, YELLOW), (0.9, GREEN)]), min_value=0, max_value=1, w=8, h=9),
        panel(_bars(), "Sequential scans (rows read/s)",
              "Rows read by sequential scans per second, top 15 tables, and how many tables are flagged "
              "heavy (opsstack_db_table_heavy_seq_scan: seq scans dominate and read more than "
              f"{cfg['exporters']['db']['seq_scan_heavy_rows']} rows) — index candidates.",
              "rowsps",
              [prom(f"topk(15, rate(opsstack_db_table_seq_rows_read_total{{{SD}}}[$__rate_interval]))",
                    "{{datname}}.{{schemaname}}.{{relname}}", instant=True),
               prom(f"sum by (server) (opsstack_db_heavy_seq_scan_tables{{{SD}}})", "heavy tables", instant=True)],
              min_value=0, w=8, h=9),
        panel(_table(), "Unused indexes",
              "Indexes never scanned since the stats reset that back no constraint, with their size: "
              "candidates to drop (check replicas first, they have their own statistics).",
              "bytes",
              [prom(f"opsstack_db_index_size_bytes{{{SD}}}\n"
                    f"  * on (server, datname, schemaname, relname, indexrelname) group_left ()"
                    f" (opsstack_db_index_unused{{{SD}}} == 1)", instant=True, table=True),
               prom(f"opsstack_db_unused_indexes_size_bytes{{{SD}}}", instant=True, table=True)],
              w=8, h=9),
        panel(_table(), "Advisor suggestions",
              "Indexes the advisor proved with HypoPG: the plan-cost drop of the statements they help "
              "and the estimated execution time saved per second. `opsstack db advise` prints the "
              "CREATE INDEX CONCURRENTLY statements; nothing is created automatically.",
              "percentunit",
              [prom(f"opsstack_db_advisor_suggestion_cost_drop_ratio{{{SD}}}", instant=True, table=True),
               prom(f"opsstack_db_advisor_suggestion_saved_seconds_per_second{{{SD}}}", instant=True, table=True),
               prom(f"opsstack_db_advisor_suggestion_statements{{{SD}}}", instant=True, table=True)],
              w=16, h=8),
        panel(_stat(), "Advisor last run",
              "How long ago the advisor last finished (it runs every "
              f"{format_duration(cfg['exporters']['db']['advisor']['interval'])} in the exporter).",
              "s", [prom(f"time() - max by (server) (opsstack_db_advisor_last_run_timestamp_seconds{{{SD}}})",
                         "{{server}}")],
              thresholds=steps([(None, GREEN), (3 * cfg["exporters"]["db"]["advisor"]["interval"], YELLOW)]),
              w=8, h=8),
    ]


def connections(cfg: dict) -> list:
    return [
        panel(_lines(), "Connections by state",
              "Client backends by pg_stat_activity state; many `idle in transaction` means leaked "
              "transactions, many `idle` means oversized application pools.",
              "short", [prom(f"sum by (server, state) (opsstack_db_activity_connections{{{SD}}})",
                             "{{server}} {{state}}")], min_value=0, w=8, h=8),
        panel(_lines(), "Lock waits",
              "Backends waiting for a lock and the longest current wait (opsstack_db_lock_waiting_connections, "
              "opsstack_db_lock_wait_max_seconds).",
              "short",
              [prom(f"sum by (server, datname) (opsstack_db_lock_waiting_connections{{{SD}}})", "{{datname}} waiting"),
               prom(f"max by (server, datname) (opsstack_db_lock_wait_max_seconds{{{SD}}})", "{{datname}} longest wait (s)")],
              min_value=0, w=8, h=8),
        panel(_lines(), "Deadlocks and temp files",
              "Deadlocks detected (PostgresDeadlocks fires on any) and bytes spilled to temporary "
              "files by sorts and hashes (work_mem too small) per window.",
              "short",
              [prom(f"sum by (server, datname) (increase(opsstack_db_deadlocks_total{{{SD}}}[$__rate_interval]))",
                    "{{datname}} deadlocks"),
               prom(f"sum by (server, datname) (increase(opsstack_db_temp_bytes_total{{{SD}}}[$__rate_interval]))",
                    "{{datname}} temp bytes")],
              min_value=0, w=8, h=8),
        panel(_lines(), "Backends and pgbouncer pools",
              "Backends per database, and with a pgbouncer_url configured the clients active and waiting "
              "in each pgbouncer pool (SHOW POOLS) and the oldest wait.",
              "short",
              [prom(f"sum by (server, datname) (opsstack_db_backends{{{SD}}})", "{{datname}} backends"),
               prom(f"sum by (server, database, state) (opsstack_db_pgbouncer_clients{{{S}}})",
                    "{{database}} clients {{state}}"),
               prom(f"max by (server, database) (opsstack_db_pgbouncer_max_wait_seconds{{{S}}})",
                    "{{database}} max wait (s)")],
              min_value=0, w=24, h=6),
    ]


def lifecycle(cfg: dict) -> list:
    return [
        panel(_lines(), "Database size",
              "Size of each database on disk (opsstack_db_database_size_bytes).",
              "bytes", [prom(f"opsstack_db_database_size_bytes{{{SD}}}", "{{server}}/{{datname}}")],
              min_value=0, w=8, h=8),
        panel(_lines(), "Database growth",
              "Growth per second over the last hour (deriv of the size); multiply by 86400 for a day.",
              "Bps", [prom(f"deriv(opsstack_db_database_size_bytes{{{SD}}}[1h])", "{{server}}/{{datname}}")],
              w=8, h=8),
        panel(_bars(), "Largest tables",
              "The 10 largest tables and partitioned tables (heap + toast; partitioned: all partitions "
              "with their indexes).",
              "bytes",
              [prom(f"topk(10, opsstack_db_table_size_bytes{{{SD}}})", "{{schemaname}}.{{relname}}", instant=True),
               prom(f"opsstack_db_partitioned_table_size_bytes{{{SD}}}", "{{table}} (partitioned)", instant=True)],
              min_value=0, w=8, h=8),
        panel(_stat(), "Partitions of this and the next period",
              "For the tables in exporters.db.lifecycle.partitions: MISSING when no partition covers "
              "the current or the next period (PostgresPartitionMissing).",
              "none", [prom(f"opsstack_db_partition_present{{{SD}}}", "{{table}} {{period}}", instant=True)],
              thresholds=steps([(None, RED), (1, GREEN)]), w=8, h=7).mappings(_present_mappings()),
        panel(_bars(), "Rows older than retention",
              "Archiving candidates: rows older than the configured max age per table "
              "(exporters.db.lifecycle.retention; recounted every lifecycle.interval).",
              "short", [prom(f"opsstack_db_rows_older_than_retention{{{SD}}}", "{{table}}", instant=True)],
              min_value=0, w=8, h=7),
        panel(_bars(), "Dead rows and vacuum age",
              "Tables with the most dead rows (vacuum debt) and the oldest unfrozen transaction age "
              "per database (age(datfrozenxid); wraparound protection starts at 200M).",
              "short",
              [prom(f"topk(8, opsstack_db_table_dead_rows{{{SD}}})", "{{schemaname}}.{{relname}} dead rows",
                    instant=True),
               prom(f"opsstack_db_database_xid_age{{{SD}}}", "{{datname}} xid age", instant=True)],
              min_value=0, w=8, h=7),
    ]


def replication(cfg: dict) -> list:
    a = cfg["exporters"]["db"]["alerts"]
    rpo = cfg["exporters"]["security"]["backup"]["rpo"]  # the seed's RPO: ReplicaLagHigh, BackupStale
    return [
        panel(_lines(), "Replication lag",
              "Replay lag of each replica (opsstack_db_replication_lag_seconds; replica=\"self\" is a standby's "
              "own view) and the standbys streaming from each server (opsstack_db_replicas). Dashed: the "
              f"{format_duration(a['replication_lag'])} PostgresReplicationLagHigh warning and the "
              f"{format_duration(rpo)} RPO of ReplicaLagHigh (exporters.security.backup.rpo).",
              "s", [prom(f"max by (server, replica) (opsstack_db_replication_lag_seconds{{{S}}})",
                         "{{server}} → {{replica}}"),
                    prom(f"opsstack_db_replicas{{{S}}}", "{{server}} replicas streaming")],
              thresholds=steps([(None, GREEN), (a["replication_lag"], YELLOW), (rpo, RED)]), min_value=0,
              w=8, h=8),
        panel(_stat(), "WAL archive age",
              "Time since the last WAL file was archived, where archive_mode is on. "
              f"PostgresWalArchiveStale fires beyond the {format_duration(a['wal_archive_rpo'])} RPO.",
              "s",
              [prom(f"(time() - opsstack_db_archiver_last_archived_timestamp_seconds{{{S}}})\n"
                    f"and on (server, instance) opsstack_db_archiver_enabled{{{S}}} == 1", "{{server}}")],
              thresholds=steps([(None, GREEN), (a["wal_archive_rpo"], RED)]), w=6, h=8),
        panel(_stat(), "WAL archiving",
              "1 when archive_mode is on (opsstack_db_archiver_enabled), and failed archive attempts in the "
              "window (pg_stat_archiver.failed_count).",
              "none",
              [prom(f"opsstack_db_archiver_enabled{{{S}}}", "{{server}} archiving on", instant=True),
               prom(f"sum by (server) (increase(opsstack_db_archiver_failed_total{{{S}}}[$__rate_interval]))",
                    "{{server}} failures")],
              thresholds=steps([(None, GREEN)]), w=4, h=8),
        panel(_stat(), "Last backup age",
              "Time since the newest pgBackRest backup of any type finished, per stanza (security exporter: "
              f"opsstack_backup_last_completion_timestamp_seconds; BackupStale beyond the {format_duration(rpo)} "
              "RPO); where no pgBackRest is read, the DB exporter's generic source per server "
              "(exporters.db.backup: opsstack_db_backup_last_success_timestamp_seconds, PostgresBackupStale "
              f"beyond {format_duration(a['backup_max_age'])}).",
              "s", [prom("time() - max by (stanza) (opsstack_backup_last_completion_timestamp_seconds)\n"
                         "or label_join(\n"
                         f"  time() - opsstack_db_backup_last_success_timestamp_seconds{{{S}}},\n"
                         '  "stanza", "", "server"\n)', "{{stanza}}")],
              thresholds=steps([(None, GREEN), (rpo, RED)]), w=6, h=8),
    ]


def _present_mappings() -> list:
    from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

    return [ValueMap(options={"0": ValueMappingResult(text="MISSING", color=RED, index=0),
                              "1": ValueMappingResult(text="OK", color=GREEN, index=1)})]


ROWS = [
    ("Overview", overview),
    ("Query performance", queries),
    ("Indexes and advisor", indexes),
    ("Connections and locks", connections),
    ("Sizes, growth and partitions", lifecycle),
    ("Replication and backups", replication),
]


def build(cfg: dict) -> dict:
    d = new_dashboard(
        UID, TITLE,
        description="PostgreSQL: what is slow, why, and what to do about it — statements, indexes and the "
                    "advisor's proven suggestions, connections, sizes and partitions, replication and backups.",
        tags=["database", "postgresql"],
        variables=[label_variable("server", "opsstack_db_up", title="Server"),
                   label_variable("datname", "opsstack_db_backends", title="Database", matchers=S)],
        time_from="now-6h", refresh="30s")
    return to_model(with_rows(d, ROWS, cfg))
