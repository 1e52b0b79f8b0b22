"""tables: pg_stat_user_tables and pg_statio_user_tables per table (scans, rows, vacuum and
analyze times and counts, I/O), sizes, xid age, heavy sequential scans.

Runs after `indexes` on the same database: when both read fresh sizes, they become the
database's size cache (`opsstack_db_sizes_cache_age_seconds`).
"""
from __future__ import annotations

from exporters.db import logic, queries
from exporters.db.collectors.base import DATABASE, Collector, Queries, Scope
from exporters.db.metrics import Families


_COLUMNS = (  # the first four before the derived ratio and flag, as the text format lists them
    ("opsstack_db_table_seq_scans_total", None, 2),
    ("opsstack_db_table_seq_rows_read_total", None, 3),
    ("opsstack_db_table_index_scans_total", None, 4),
    ("opsstack_db_table_index_rows_fetched_total", None, 5),
    ("opsstack_db_table_rows_inserted_total", None, 6),
    ("opsstack_db_table_rows_updated_total", None, 7),
    ("opsstack_db_table_rows_deleted_total", None, 8),
    ("opsstack_db_table_rows_hot_updated_total", None, 9),
    ("opsstack_db_table_live_rows", None, 10),
    ("opsstack_db_table_dead_rows", None, 11),
    ("opsstack_db_table_modified_since_analyze_rows", None, 12),
    ("opsstack_db_table_last_vacuum_timestamp_seconds", "manual", 13),
    ("opsstack_db_table_last_vacuum_timestamp_seconds", "auto", 14),
    ("opsstack_db_table_last_analyze_timestamp_seconds", "manual", 15),
    ("opsstack_db_table_last_analyze_timestamp_seconds", "auto", 16),
    ("opsstack_db_table_vacuums_total", "manual", 17),
    ("opsstack_db_table_vacuums_total", "auto", 18),
    ("opsstack_db_table_analyzes_total", "manual", 19),
    ("opsstack_db_table_analyzes_total", "auto", 20),
    ("opsstack_db_table_blocks_read_total", "heap", 21),
    ("opsstack_db_table_blocks_hit_total", "heap", 22),
    ("opsstack_db_table_blocks_read_total", "toast", 23),
    ("opsstack_db_table_blocks_hit_total", "toast", 24),
)


class TablesCollector(Collector):
    name = "tables"
    scope = DATABASE

    @classmethod
    def interval(cls, dbc) -> float:
        return dbc.tables_interval

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
        roots = scope.table_roots
        # (family, extra label or None, column of queries.TABLES): appended straight to the
        # family's samples, None values skipped (the bulk of a refresh: one row per table)
        first = [(fams.appender(n), x, i) for n, x, i in _COLUMNS[:4]]
        ratio_ap = fams.appender("opsstack_db_table_index_usage_ratio")
        heavy_ap = fams.appender("opsstack_db_table_heavy_seq_scan")
        rest = [(fams.appender(n), x, i) for n, x, i in _COLUMNS[4:]]
        size_ap = fams.appender("opsstack_db_table_size_bytes")
        isize_ap = fams.appender("opsstack_db_table_indexes_size_bytes")
        xid_ap = fams.appender("opsstack_db_table_xid_age")
        usage_ratio, heavy_scan = logic.index_usage_ratio, logic.heavy_seq_scan
        for r in tables:
            lab = [s, dbname, r[0], r[1]]
            if len(r) > 28 and r[28] is not None:
                roots[(r[0], r[1])] = (r[27], r[28])
                scope.table_live[(r[0], r[1])] = r[10]
            for ap, _x, i in first:
                v = r[i]
                if v is not None:
                    ap((lab, v))
            v = usage_ratio(r[2], r[4])
            if v is not None:
                ratio_ap((lab, v))
            h = heavy_scan(r[2], r[3], r[4], heavy_min)
            heavy += h
            heavy_ap((lab, 1 if h else 0))
            for ap, x, i in rest:
                v = r[i]
                if v is not None:
                    ap((lab if x is None else lab + [x], v))
            v = r[25] if r[25] is not None else tsize.get((r[0], r[1]))
            if v is not None:
                size_ap((lab, v))
            isize_ap((lab, idx_size.get((r[0], r[1]), 0)))
            if r[26] is not None:
                xid_ap((lab, r[26]))
        fams.drop_empty()
        add("opsstack_db_heavy_seq_scan_tables", [s, dbname], heavy)
        return fams
