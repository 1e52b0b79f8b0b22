"""indexes: pg_stat_user_indexes and pg_statio_user_indexes per index, sizes, unused indexes.

Sizes are re-read every sizes_interval (Scope.sizes); the bytes of each table's indexes go to
`tables` (Scope.index_bytes), which runs after this collector on the same database.
"""
from __future__ import annotations

from exporters.db import queries
from exporters.db.collectors.base import DATABASE, Collector, Queries, Scope
from exporters.db.metrics import Families


class IndexesCollector(Collector):
    name = "indexes"
    scope = DATABASE

    @classmethod
    def interval(cls, dbc) -> float:
        return dbc.tables_interval

    def collect(self, q: Queries, scope: Scope) -> Families:
        fams = Families()
        idx = q.rows("indexes", queries.INDEXES,
                     {"max_indexes": self.dbc.max_tables * 4, "sizes": scope.sizes_due})
        if idx is None:
            return fams
        if scope.sizes_due:
            scope.index_sizes_read = {(r[0], r[1], r[2]): r[6] for r in idx}
        s, dbname = scope.server, scope.datname
        add = fams.add
        cached = scope.sizes.indexes
        idx_size = scope.index_bytes
        unused = 0
        unused_size = 0
        roots = scope.index_roots
        for r in idx:
            schema, rel, name, scans, tup_read, tup_fetch, size, constraint, blk_read, blk_hit = r[:10]
            if len(r) > 10 and r[10] is not None:
                roots[(schema, name)] = r[10]
            lab = [s, dbname, schema, rel, name]
            if size is None:
                size = cached.get((schema, rel, name))
            add("opsstack_db_index_scans_total", lab, scans)
            add("opsstack_db_index_rows_read_total", lab, tup_read)
            add("opsstack_db_index_rows_fetched_total", lab, tup_fetch)
            add("opsstack_db_index_size_bytes", lab, size)
            add("opsstack_db_index_blocks_read_total", lab, blk_read)
            add("opsstack_db_index_blocks_hit_total", lab, blk_hit)
            key = (schema, rel)
            idx_size[key] = idx_size.get(key, 0) + (size or 0)
            is_unused = not scans and not constraint
            add("opsstack_db_index_unused", lab, 1 if is_unused else 0)
            if is_unused:
                unused += 1
                unused_size += size or 0
        add("opsstack_db_unused_indexes", [s, dbname], unused)
        add("opsstack_db_unused_indexes_size_bytes", [s, dbname], unused_size)
        return fams
