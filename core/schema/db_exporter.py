"""The `exporters.db` config section (registered as the "db" key in core/schema/exporters.py)."""
from __future__ import annotations

import re

from core.spec import ConfigError, Field, ListOf

SECTION = {
    "enabled": Field("bool", True),
    # Servers to watch; url null = database.url. databases: names on that server
    # ([] = the URL's database, ["*"] = every database that accepts connections).
    "targets": ListOf({
        "name": Field("str", check=lambda v: None if re.match(r"^[a-z][a-z0-9_-]*$", v)
                      else f"must be lowercase letters, digits, '-' or '_', got {v!r}"),
        "url": Field("url", None, nullable=True),
        "databases": ListOf(Field("str")),
        "pgbouncer_url": Field("url", None, nullable=True, help="pgbouncer admin console: SHOW POOLS"),
    }, default=[{"name": "main"}], min_items=1, unique_key="name"),
    "connect_timeout": Field("duration", "3s", minimum=1),
    "statement_timeout": Field("duration", "2s", minimum=0.01),
    "sizes_interval": Field("duration", "5m", minimum=0,
                            help="database/table/index sizes are re-read this often (0 = every scrape)"),
    "max_tables": Field("int", 50000, minimum=1,
                        help="per database, largest first: a safety cap on the relations read (the "
                             "series budget, not this, bounds what is exported)"),
    "tables_interval": Field("duration", "5m", minimum=0,
                             help="tables, indexes and partitions are re-read in the background this often; "
                                  "a scrape serves the last result (0 = in every scrape)"),
    "table_series_budget": Field("int", 2000, minimum=100,
                                 help="per-table and per-index series of a target at most (split between its "
                                      "databases); the top tables by activity and by size get their own, "
                                      "partitions rolled up to their parent, the rest summed as __other__"),
    "seq_scan_heavy_rows": Field("int", 100000, minimum=1,
                                 help="a table is a heavy seq-scan table above this many rows read by seq scans"),
    "statements": {
        "slow_threshold": Field("duration", "2s", minimum=0.001),
        "top": Field("int", 20, minimum=1, maximum=500),
        "text_max_length": Field("int", 160, minimum=16, maximum=4000),
        "interval": Field("duration", "2m", minimum=0,
                          help="pg_stat_statements is re-read in the background this often (0 = in every "
                               "scrape); keep it below the 5m rate() window of the mean query time alert"),
    },
    "lifecycle": {
        "interval": Field("duration", "5m", minimum=0,
                          help="old-row counts are recounted in the background this often (0 = in every scrape)"),
        "partitions": ListOf({
            "table": Field("str"),
            "period": Field("str", choices=("day", "week", "month", "year")),
        }, default=[{"table": "platform.events", "period": "month"},
                    {"table": "platform.gate_logs", "period": "day"}]),
        "retention": ListOf({
            "table": Field("str"),
            "column": Field("str"),
            "max_age": Field("duration", minimum=1),
        }, default=[{"table": "platform.events", "column": "starts_at", "max_age": "3y"},
                    {"table": "platform.gate_logs", "column": "logged_at", "max_age": "182d"}]),
    },
    "backup": {
        # where the last successful base backup time comes from: none, file (newest
        # mtime of `path`, a glob) or query (SQL returning one timestamptz)
        "source": Field("str", "none", choices=("none", "file", "query")),
        "path": Field("str", None, nullable=True),
        "query": Field("str", None, nullable=True),
    },
    "advisor": {
        "enabled": Field("bool", True, help="run the index advisor in the exporter too"),
        "interval": Field("duration", "10m", minimum=10),
        "statements": Field("int", 25, minimum=1, maximum=500, help="slowest statements examined"),
        "min_calls": Field("int", 2, minimum=1),
        "min_cost_drop": Field("float", 0.5, minimum=0.01, maximum=0.99,
                               help="suggest an index only when it cuts a plan's cost by this ratio"),
        "max_suggestions": Field("int", 10, minimum=1, maximum=100),
    },
    # thresholds of alert_rules/db.yml
    "alerts": {
        "team": Field("str", "dba"),
        "service": Field("str", "postgresql"),
        "pool_use_ratio": Field("float", 0.8, minimum=0.01, maximum=1),
        "pool_use_for": Field("duration", "10m", minimum=0),
        "avg_query_time": Field("duration", "100ms", minimum=0.001),
        "avg_query_for": Field("duration", "10m", minimum=0),
        "slow_queries_for": Field("duration", "5m", minimum=0),
        "cache_hit_ratio": Field("float", 0.9, minimum=0.01, maximum=1),
        "cache_hit_for": Field("duration", "15m", minimum=0),
        "replication_lag": Field("duration", "30s", minimum=0.1),
        "replication_lag_for": Field("duration", "5m", minimum=0),
        "wal_archive_rpo": Field("duration", "5m", minimum=1),
        # PostgresWalArchiveFailing: the newest archive attempt failed (archive_command), before the
        # RPO is lost (PostgresWalArchiveStale pages then)
        "wal_archive_failing_for": Field("duration", "2m", minimum=0),
        "backup_max_age": Field("duration", "26h", minimum=60),
        "partition_missing_for": Field("duration", "10m", minimum=0),
        "deadlocks_window": Field("duration", "10m", minimum=60),
    },
}


def check(cfg: dict) -> None:
    """Rules that span keys of the section (called from core/schema/exporters.py at load)."""
    b = cfg["exporters"]["db"]["backup"]
    if b["source"] == "file" and not b["path"]:
        raise ConfigError("exporters.db.backup.path", "is required when backup.source is file")
    if b["source"] == "query" and not b["query"]:
        raise ConfigError("exporters.db.backup.query", "is required when backup.source is query")
