"""tables: pg_stat_user_tables and pg_statio_user_tables per table (scans, rows, vacuum and
analyze times and counts, I/O), sizes, xid age, heavy sequential scans.

Runs after `indexes` on the same database: when both read fresh sizes, they become the
database's size cache (`opsstack_db_sizes_cache_age_seconds`).
"""
from __future__ import annotations

from exporters.db import logic, queries
from exporters.db.collectors.base import DATABASE, Collector, Queries, Scope
from exporters.db.metrics import Families


class TablesCollector(Collector):
    name = "tables"
    scope = DATABASE

    def collect(self, q: Queries, scope: Scope) -> Families:
        s, dbname = scope.server, scope.datname
        fams = Families()
        add = fams.add
        tables = q.rows("tables", queries.TABLES, {"max_tables": self.dbc.max_tables, "sizes": scope.sizes_due})
        cache = scope.sizes
        if scope.sizes_due and tables is not None and scope.index_sizes_read is not None:
            cache.when = scope.now
            cache.tables = {(r[0], r[1]): r[25] for r in tables}
            cache.indexes = scope.index_sizes_read
        if cache.when is not None:
            add("opsstack_db_sizes_cache_age_seconds", [s, dbname], scope.now - cache.when)
        if tables is None:
            return fams
        heavy_min = self.dbc.seq_scan_heavy_rows
        tsize = cache.tables
        idx_size = scope.index_bytes
        heavy = 0
        add("opsstack_db_tables", [s, dbname], len(tables))
        for r in tables:
            lab = [s, dbname, r[0], r[1]]
            add("opsstack_db_table_seq_scans_total", lab, r[2])
            add("opsstack_db_table_seq_rows_read_total", lab, r[3])
            add("opsstack_db_table_index_scans_total", lab, r[4])
            add("opsstack_db_table_index_rows_fetched_total", lab, r[5])
            add("opsstack_db_table_index_usage_ratio", lab, logic.index_usage_ratio(r[2], r[4]))
            h = logic.heavy_seq_scan(r[2], r[3], r[4], heavy_min)
            heavy += h
            add("opsstack_db_table_heavy_seq_scan", lab, 1 if h else 0)
            add("opsstack_db_table_rows_inserted_total", lab, r[6])
            add("opsstack_db_table_rows_updated_total", lab, r[7])
            add("opsstack_db_table_rows_deleted_total", lab, r[8])
            add("opsstack_db_table_rows_hot_updated_total", lab, r[9])
            add("opsstack_db_table_live_rows", lab, r[10])
            add("opsstack_db_table_dead_rows", lab, r[11])
            add("opsstack_db_table_modified_since_analyze_rows", lab, r[12])
            add("opsstack_db_table_last_vacuum_timestamp_seconds", lab + ["manual"], r[13])
            add("opsstack_db_table_last_vacuum_timestamp_seconds", lab + ["auto"], r[14])
            add("opsstack_db_table_last_analyze_timestamp_seconds", lab + ["manual"], r[15])
            add("opsstack_db_table_last_analyze_timestamp_seconds", lab + ["auto"], r[16])
            add("opsstack_db_table_vacuums_total", lab + ["manual"], r[17])
            add("opsstack_db_table_vacuums_total", lab + ["auto"], r[18])
            add("opsstack_db_table_analyzes_total", lab + ["manual"], r[19])
            add("opsstack_db_table_analyzes_total", lab + ["auto"], r[20])
            add("opsstack_db_table_blocks_read_total", lab + ["heap"], r[21])
            add("opsstack_db_table_blocks_hit_total", lab + ["heap"], r[22])
            add("opsstack_db_table_blocks_read_total", lab + ["toast"], r[23])
            add("opsstack_db_table_blocks_hit_total", lab + ["toast"], r[24])
            add("opsstack_db_table_size_bytes", lab, r[25] if r[25] is not None else tsize.get((r[0], r[1])))
            add("opsstack_db_table_indexes_size_bytes", lab, idx_size.get((r[0], r[1]), 0))
            add("opsstack_db_table_xid_age", lab, r[26])
        add("opsstack_db_heavy_seq_scan_tables", [s, dbname], heavy)
        return fams
