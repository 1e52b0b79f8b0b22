"""Every metric the database exporter can export: name -> (type, help, labels).

One table so that the exporter, docs/metrics.md and the tests agree (a unit test checks
that each name here is documented). Types: gauge, counter (name ends in _total).
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

S = ["server"]
D = ["server", "datname"]
T = ["server", "datname", "schemaname", "relname"]
I = ["server", "datname", "schemaname", "relname", "indexrelname"]
Q = ["server", "datname", "queryid"]
P = ["server", "datname", "table"]
B = ["server", "database", "user"]

G, C = "gauge", "counter"

METRICS: dict[str, tuple[str, str, list[str]]] = {
    # ---- server
    "opsstack_db_up": (G, "1 when the exporter could connect to the server and read it, else 0.", S),
    "opsstack_db_version_info": (G, "Server version (value 1).", S + ["version"]),
    "opsstack_db_server_version_num": (G, "server_version_num, e.g. 150004.", S),
    "opsstack_db_start_time_seconds": (G, "When the postmaster started (Unix time).", S),
    "opsstack_db_in_recovery": (G, "1 on a standby (pg_is_in_recovery), else 0.", S),
    "opsstack_db_connections": (G, "Client backends connected to the server.", S),
    "opsstack_db_max_connections": (G, "The max_connections setting.", S),
    "opsstack_db_connections_used_ratio": (G, "Client backends / max_connections (0..1).", S),
    "opsstack_db_wal_position_bytes": (G, "Current WAL write position in bytes (rate() = WAL written per second); primaries only.", S),
    "opsstack_db_setting": (G, "Numeric or boolean pg_settings value without a unit.", S + ["name"]),
    "opsstack_db_setting_seconds": (G, "pg_settings time value in seconds (-1 = disabled).", S + ["name"]),
    "opsstack_db_setting_bytes": (G, "pg_settings size value in bytes (-1 = disabled).", S + ["name"]),
    # ---- pg_stat_database
    "opsstack_db_backends": (G, "Backends connected to this database (pg_stat_database.numbackends).", D),
    "opsstack_db_xact_commit_total": (C, "Transactions committed.", D),
    "opsstack_db_xact_rollback_total": (C, "Transactions rolled back.", D),
    "opsstack_db_blocks_read_total": (C, "Disk blocks read (not found in shared buffers).", D),
    "opsstack_db_blocks_hit_total": (C, "Block reads served from shared buffers.", D),
    "opsstack_db_cache_hit_ratio": (G, "blks_hit / (blks_hit + blks_read) since the stats reset (0..1).", D),
    "opsstack_db_tuples_returned_total": (C, "Rows returned by queries (tup_returned).", D),
    "opsstack_db_tuples_fetched_total": (C, "Rows fetched by queries (tup_fetched).", D),
    "opsstack_db_tuples_inserted_total": (C, "Rows inserted.", D),
    "opsstack_db_tuples_updated_total": (C, "Rows updated.", D),
    "opsstack_db_tuples_deleted_total": (C, "Rows deleted.", D),
    "opsstack_db_conflicts_total": (C, "Queries cancelled by recovery conflicts (standby).", D),
    "opsstack_db_recovery_conflicts_total": (C, "Recovery conflicts by reason (pg_stat_database_conflicts).", D + ["reason"]),
    "opsstack_db_temp_files_total": (C, "Temporary files created by queries.", D),
    "opsstack_db_temp_bytes_total": (C, "Bytes written to temporary files by queries.", D),
    "opsstack_db_deadlocks_total": (C, "Deadlocks detected.", D),
    "opsstack_db_checksum_failures_total": (C, "Data page checksum failures.", D),
    "opsstack_db_block_read_seconds_total": (C, "Time spent reading blocks (needs track_io_timing).", D),
    "opsstack_db_block_write_seconds_total": (C, "Time spent writing blocks (needs track_io_timing).", D),
    "opsstack_db_session_seconds_total": (C, "Time spent by sessions.", D),
    "opsstack_db_active_seconds_total": (C, "Time sessions spent executing statements.", D),
    "opsstack_db_idle_in_transaction_seconds_total": (C, "Time sessions spent idle in a transaction.", D),
    "opsstack_db_sessions_total": (C, "Sessions established.", D),
    "opsstack_db_sessions_abandoned_total": (C, "Sessions ended because the client went away.", D),
    "opsstack_db_sessions_fatal_total": (C, "Sessions ended by fatal errors.", D),
    "opsstack_db_sessions_killed_total": (C, "Sessions killed by an operator.", D),
    "opsstack_db_stats_reset_timestamp_seconds": (G, "When this database's statistics were last reset.", D),
    "opsstack_db_database_size_bytes": (G, "Database size on disk.", D),
    "opsstack_db_database_xid_age": (G, "age(datfrozenxid): transactions since the database was last fully frozen (vacuum age).", D),
    "opsstack_db_database_connection_limit": (G, "datconnlimit (-1 = unlimited).", D),
    # ---- activity and locks
    "opsstack_db_activity_connections": (G, "Client backends by state (pg_stat_activity).", D + ["state"]),
    "opsstack_db_activity_max_tx_duration_seconds": (G, "Age of the oldest open transaction by state.", D + ["state"]),
    "opsstack_db_activity_max_query_duration_seconds": (G, "Run time of the longest active query.", D),
    "opsstack_db_activity_slow_queries": (G, "Queries running longer than the slow threshold right now.", D),
    "opsstack_db_lock_waiting_connections": (G, "Backends waiting for a lock (wait_event_type = Lock).", D),
    "opsstack_db_lock_wait_max_seconds": (G, "Longest current lock wait.", D),
    "opsstack_db_locks": (G, "Locks held or awaited (pg_locks) by mode.", D + ["mode", "granted"]),
    # ---- bgwriter / checkpoints
    "opsstack_db_checkpoints_timed_total": (C, "Scheduled checkpoints.", S),
    "opsstack_db_checkpoints_requested_total": (C, "Requested checkpoints.", S),
    "opsstack_db_checkpoint_write_seconds_total": (C, "Time writing files during checkpoints.", S),
    "opsstack_db_checkpoint_sync_seconds_total": (C, "Time syncing files during checkpoints.", S),
    "opsstack_db_buffers_checkpoint_total": (C, "Buffers written during checkpoints.", S),
    "opsstack_db_buffers_clean_total": (C, "Buffers written by the background writer.", S),
    "opsstack_db_bgwriter_maxwritten_clean_total": (C, "Times the background writer stopped a cleaning scan for writing too many buffers.", S),
    "opsstack_db_buffers_backend_total": (C, "Buffers written directly by backends.", S),
    "opsstack_db_buffers_backend_fsync_total": (C, "Times a backend had to fsync itself.", S),
    "opsstack_db_buffers_alloc_total": (C, "Buffers allocated.", S),
    "opsstack_db_bgwriter_stats_reset_timestamp_seconds": (G, "When pg_stat_bgwriter was last reset.", S),
    # ---- archiver, backups, replication
    "opsstack_db_archiver_enabled": (G, "1 when archive_mode is on or always.", S),
    "opsstack_db_archiver_archived_total": (C, "WAL files archived.", S),
    "opsstack_db_archiver_failed_total": (C, "Failed WAL archive attempts.", S),
    "opsstack_db_archiver_last_archived_timestamp_seconds": (G, "When the last WAL file was archived (0 = never).", S),
    "opsstack_db_archiver_last_failed_timestamp_seconds": (G, "When the last archive attempt failed (0 = never).", S),
    "opsstack_db_backup_configured": (G, "1 when exporters.db.backup.source is set (file or query), 0 when none.", S),
    "opsstack_db_backup_last_success_timestamp_seconds": (G, "When the last base backup finished, from the configured source (0 = none found).", S),
    "opsstack_db_replicas": (G, "Standbys streaming from this server.", S),
    "opsstack_db_replication_lag_seconds": (G, "Replay lag of each replica (on a standby: replica=\"self\", time since the last replayed transaction while WAL is pending).", S + ["replica"]),
    "opsstack_db_replication_lag_bytes": (G, "WAL bytes not yet replayed by each replica.", S + ["replica"]),
    "opsstack_db_replication_write_lag_seconds": (G, "write_lag of each replica.", S + ["replica"]),
    "opsstack_db_replication_flush_lag_seconds": (G, "flush_lag of each replica.", S + ["replica"]),
    "opsstack_db_replication_slot_active": (G, "1 when the replication slot is in use.", S + ["slot", "slot_type"]),
    "opsstack_db_replication_slot_retained_bytes": (G, "WAL retained by the replication slot.", S + ["slot", "slot_type"]),
    # ---- pg_stat_statements
    "opsstack_db_pg_stat_statements_available": (G, "1 when pg_stat_statements is loaded and created, else 0 (see the log).", S),
    "opsstack_db_statements_calls_total": (C, "Statement executions (all statements pg_stat_statements tracks).", D),
    "opsstack_db_statements_exec_seconds_total": (C, "Statement execution time (rate / rate of calls = mean).", D),
    "opsstack_db_statements_plan_seconds_total": (C, "Statement planning time (needs pg_stat_statements.track_planning).", D),
    "opsstack_db_statements_rows_total": (C, "Rows returned or affected by statements.", D),
    "opsstack_db_statements_shared_blocks_hit_total": (C, "Shared buffer hits by statements.", D),
    "opsstack_db_statements_shared_blocks_read_total": (C, "Shared blocks read by statements.", D),
    "opsstack_db_statements_temp_blocks_written_total": (C, "Temp blocks written by statements.", D),
    "opsstack_db_statements_mean_exec_seconds": (G, "Mean execution time weighted by calls, since the stats reset.", D),
    "opsstack_db_statements_tracked": (G, "Distinct statements pg_stat_statements tracks.", D),
    "opsstack_db_statements_slow": (G, "Distinct statements whose mean execution time is above the slow threshold.", D),
    "opsstack_db_statements_slow_threshold_seconds": (G, "The configured slow-statement threshold.", S),
    "opsstack_db_statement_calls_total": (C, "Executions of a top-N statement (by total time).", Q),
    "opsstack_db_statement_exec_seconds_total": (C, "Execution time of a top-N statement.", Q),
    "opsstack_db_statement_mean_exec_seconds": (G, "Mean execution time of a top-N statement.", Q),
    "opsstack_db_statement_max_exec_seconds": (G, "Longest execution of a top-N statement.", Q),
    "opsstack_db_statement_rows_total": (C, "Rows of a top-N statement.", Q),
    "opsstack_db_statement_shared_blocks_hit_total": (C, "Shared buffer hits of a top-N statement.", Q),
    "opsstack_db_statement_shared_blocks_read_total": (C, "Shared blocks read by a top-N statement.", Q),
    "opsstack_db_statement_temp_blocks_written_total": (C, "Temp blocks written by a top-N statement.", Q),
    "opsstack_db_statements_other": (G, "Statement entries beyond the top N (summed in the opsstack_db_statements_other_* series).", D),
    "opsstack_db_statements_other_calls_total": (C, "Executions of the statements beyond the top N.", D),
    "opsstack_db_statements_other_exec_seconds_total": (C, "Execution time of the statements beyond the top N.", D),
    "opsstack_db_statements_other_rows_total": (C, "Rows of the statements beyond the top N.", D),
    "opsstack_db_statements_other_shared_blocks_hit_total": (C, "Shared buffer hits of the statements beyond the top N.", D),
    "opsstack_db_statements_other_shared_blocks_read_total": (C, "Shared blocks read by the statements beyond the top N.", D),
    "opsstack_db_statements_other_temp_blocks_written_total": (C, "Temp blocks written by the statements beyond the top N.", D),
    "opsstack_db_statement_info": (G, "Normalized, truncated text of a top-N statement (value 1).", Q + ["query"]),
    # ---- tables
    "opsstack_db_table_seq_scans_total": (C, "Sequential scans of the table.", T),
    "opsstack_db_table_seq_rows_read_total": (C, "Rows read by sequential scans.", T),
    "opsstack_db_table_index_scans_total": (C, "Index scans on the table.", T),
    "opsstack_db_table_index_rows_fetched_total": (C, "Rows fetched by index scans.", T),
    "opsstack_db_table_index_usage_ratio": (G, "idx_scan / (seq_scan + idx_scan) since the stats reset (0..1).", T),
    "opsstack_db_table_heavy_seq_scan": (G, "1 when sequential scans dominate and read more than seq_scan_heavy_rows rows.", T),
    "opsstack_db_table_rows_inserted_total": (C, "Rows inserted.", T),
    "opsstack_db_table_rows_updated_total": (C, "Rows updated.", T),
    "opsstack_db_table_rows_deleted_total": (C, "Rows deleted.", T),
    "opsstack_db_table_rows_hot_updated_total": (C, "Rows HOT-updated.", T),
    "opsstack_db_table_live_rows": (G, "Estimated live rows.", T),
    "opsstack_db_table_dead_rows": (G, "Estimated dead rows (vacuum debt).", T),
    "opsstack_db_table_modified_since_analyze_rows": (G, "Rows modified since the last analyze.", T),
    "opsstack_db_table_last_vacuum_timestamp_seconds": (G, "Last vacuum by kind (manual|auto); absent = never.", T + ["kind"]),
    "opsstack_db_table_last_analyze_timestamp_seconds": (G, "Last analyze by kind (manual|auto); absent = never.", T + ["kind"]),
    "opsstack_db_table_vacuums_total": (C, "Vacuums by kind.", T + ["kind"]),
    "opsstack_db_table_analyzes_total": (C, "Analyzes by kind.", T + ["kind"]),
    "opsstack_db_table_xid_age": (G, "age(relfrozenxid): transactions since the table was frozen.", T),
    "opsstack_db_table_blocks_read_total": (C, "Blocks read from disk by relation part (heap|toast); index blocks are per index.", T + ["part"]),
    "opsstack_db_table_blocks_hit_total": (C, "Blocks found in shared buffers by relation part.", T + ["part"]),
    "opsstack_db_table_size_bytes": (G, "Table size without indexes (heap + toast + maps).", T),
    "opsstack_db_table_indexes_size_bytes": (G, "Size of all of the table's indexes.", T),
    "opsstack_db_heavy_seq_scan_tables": (G, "Tables flagged by opsstack_db_table_heavy_seq_scan.", D),
    "opsstack_db_tables": (G, "User tables in the database (all, not only the exported ones).", D),
    # ---- indexes
    "opsstack_db_index_scans_total": (C, "Scans of the index.", I),
    "opsstack_db_index_rows_read_total": (C, "Index entries returned by scans.", I),
    "opsstack_db_index_rows_fetched_total": (C, "Live rows fetched by simple index scans.", I),
    "opsstack_db_index_size_bytes": (G, "Index size.", I),
    "opsstack_db_index_blocks_read_total": (C, "Index blocks read from disk.", I),
    "opsstack_db_index_blocks_hit_total": (C, "Index blocks found in shared buffers.", I),
    "opsstack_db_index_unused": (G, "1 for an index never scanned since the stats reset that backs no constraint.", I),
    "opsstack_db_unused_indexes": (G, "Indexes flagged by opsstack_db_index_unused.", D),
    "opsstack_db_unused_indexes_size_bytes": (G, "Total size of unused indexes.", D),
    # ---- lifecycle
    "opsstack_db_partitioned_table_size_bytes": (G, "Total size of a partitioned table (all partitions, with indexes).", P),
    "opsstack_db_partitioned_table_live_rows": (G, "Estimated live rows of a partitioned table.", P),
    "opsstack_db_partitions": (G, "Partitions of a partitioned table.", P),
    "opsstack_db_partition_default_present": (G, "1 when the partitioned table has a DEFAULT partition.", P),
    "opsstack_db_partition_present": (G, "1 when a partition covers the current (or next) period of a configured table.", P + ["period"]),
    "opsstack_db_partition_newest_upper_bound_timestamp_seconds": (G, "Upper bound of the newest range partition (how far ahead partitions exist).", P),
    "opsstack_db_rows_older_than_retention": (G, "Rows older than the configured max age (archiving candidates).", P),
    "opsstack_db_retention_max_age_seconds": (G, "The configured max age of a table's rows.", P),
    "opsstack_db_lifecycle_cache_age_seconds": (G, "Age of the cached old-row counts (they are recounted every lifecycle.interval).", D),
    # ---- pgbouncer
    "opsstack_db_pgbouncer_up": (G, "1 when SHOW POOLS answered on the configured pgbouncer.", S),
    "opsstack_db_pgbouncer_clients": (G, "pgbouncer client connections by state (active|waiting).", B + ["state"]),
    "opsstack_db_pgbouncer_servers": (G, "pgbouncer server connections by state (active|idle|used|tested|login).", B + ["state"]),
    "opsstack_db_pgbouncer_max_wait_seconds": (G, "Wait of the oldest waiting client of the pool.", B),
    "opsstack_db_pgbouncer_pool_size": (G, "pgbouncer pool_size of the database.", ["server", "database"]),
    # ---- advisor (cached; refreshed every advisor.interval)
    "opsstack_db_advisor_suggestions": (G, "Indexes the advisor suggests (cost drop proven with HypoPG).", D),
    "opsstack_db_advisor_suggestion_cost_drop_ratio": (G, "Plan cost drop of the statements an index helps (0..1).", D + ["table", "columns"]),
    "opsstack_db_advisor_suggestion_statements": (G, "Statements a suggested index helps.", D + ["table", "columns"]),
    "opsstack_db_advisor_suggestion_saved_seconds_per_second": (G, "Estimated execution time saved per second of wall time if the index existed.", D + ["table", "columns"]),
    "opsstack_db_advisor_last_run_timestamp_seconds": (G, "When the advisor last finished.", D),
    "opsstack_db_advisor_run_duration_seconds": (G, "How long the last advisor run took.", D),
    "opsstack_db_advisor_available": (G, "1 when HypoPG is available to the advisor in this database.", D),
    # ---- the exporter itself
    "opsstack_db_sizes_cache_age_seconds": (G, "Age of the database/table/index sizes (re-read every sizes_interval).", D),
    "opsstack_db_query_errors_total": (C, "Exporter queries that failed (timeout, permission...), by query group.", S + ["query"]),
    "opsstack_db_collector_success": (G, "1 when the collector's last run read its area without a failed query or error (live collectors: this scrape; background ones: their last refresh; per-database collectors: on every database), else 0.", S + ["collector"]),
    "opsstack_db_collector_duration_seconds": (G, "Time the collector's last run took (live collectors: in this scrape; background ones: their last refresh; per-database collectors: summed over the databases).", S + ["collector"]),
    "opsstack_db_collector_age_seconds": (G, "Age of the result the collector serves: 0 for live collectors; background ones: time since their last good refresh (oldest database), growing while refreshes fail.", S + ["collector"]),
    "opsstack_db_collector_interval_seconds": (G, "How often the collector refreshes in the background (0 = live, in every scrape).", S + ["collector"]),
    "opsstack_db_tables_other": (G, "Tables (partitions rolled up) beyond the series budget, summed into the relname=\"__other__\" series.", D),
}


def _escape_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}


def format_value(v) -> str:
    r = repr(float(v))
    return _SPECIAL.get(r, r)


class Families:
    """Samples of one scrape, by metric name, in the order METRICS lists them.

    ``render()`` writes the Prometheus text format directly (label names are fixed and
    valid, so only label values need escaping): an order of magnitude faster than building
    prometheus_client samples for the thousands of table series of a big database.
    ``families()`` gives prometheus_client metric families (tests, other registries).
    """

    def __init__(self):
        self._s: dict[str, list] = {}

    def add(self, name: str, labels: list, value) -> None:
        if value is None:
            return
        lst = self._s.get(name)
        if lst is None:
            if name not in METRICS:
                raise KeyError(f"{name} is not declared in exporters/db/metrics.py METRICS")
            lst = self._s[name] = []
        lst.append((labels, value))

    def appender(self, name: str):
        """``append((labels, value))`` of one family, for a collector's hot loop: the caller
        skips None values itself (as add() does)."""
        lst = self._s.get(name)
        if lst is None:
            if name not in METRICS:
                raise KeyError(f"{name} is not declared in exporters/db/metrics.py METRICS")
            lst = self._s[name] = []
        return lst.append

    def drop_empty(self) -> None:
        """Forget the families that got no sample (after appender())."""
        for name in [n for n, lst in self._s.items() if not lst]:
            del self._s[name]

    def merge(self, other: "Families") -> None:
        for name, samples in other._s.items():
            lst = self._s.get(name)
            if lst is None:
                self._s[name] = list(samples)
            else:
                lst.extend(samples)

    def pop(self, name: str) -> list:
        """Remove one family; its samples ([] when absent)."""
        return self._s.pop(name, [])

    def samples(self, name: str) -> list:
        """The samples of one family (labels, value), in the order they were added."""
        return self._s.get(name, [])

    def __bool__(self) -> bool:
        return bool(self._s)

    def names(self) -> list[str]:
        return list(self._s)

    def families(self) -> list:
        out = []
        for name, samples in self._s.items():
            kind, help_, names = METRICS[name]
            f = (CounterMetricFamily if kind == C else GaugeMetricFamily)(name, help_, labels=names)
            for labels, value in samples:
                f.add_metric([str(x) for x in labels], float(value))
            out.append(f)
        return out

    def render(self, label_cache: dict | None = None) -> str:
        """The text format. ``label_cache`` (label set -> rendered labels) may be kept
        between scrapes by the caller: table and index label sets repeat every scrape."""
        out = []
        if label_cache is None:
            label_cache = {}
        special = _SPECIAL
        append = out.append
        for name, samples in self._s.items():
            header, names, names_t, prefix = _HEADERS[name]
            append(header)
            for labels, value in samples:
                key = (names_t, *labels)
                lab = label_cache.get(key)
                if lab is None:
                    lab = label_cache[key] = ",".join(
                        f'{n}="{_escape_value(str(v))}"' for n, v in zip(names, labels))
                r = repr(float(value))
                append(f"{prefix}{lab}}} {special.get(r, r)}\n")
        return "".join(out)


# name -> (its HELP and TYPE lines, label names, label names as a tuple, "name{"), for render()
_HEADERS = {name: (f"# HELP {name} {_escape_help(help_)}\n# TYPE {name} {kind}\n", names, tuple(names), name + "{")
            for name, (kind, help_, names) in METRICS.items()}


def render_families(fams) -> str:
    """Text format for a few prometheus_client families (the exporter's self-metrics)."""
    out = []
    for f in fams:
        out.append(f"# HELP {f.name} {_escape_help(f.documentation)}\n# TYPE {f.name} {f.type}\n")
        for s in f.samples:
            lab = ",".join(f'{k}="{_escape_value(str(v))}"' for k, v in s.labels.items())
            out.append(f"{s.name}{{{lab}}} {format_value(float(s.value))}\n" if lab
                       else f"{s.name} {format_value(float(s.value))}\n")
    return "".join(out)
