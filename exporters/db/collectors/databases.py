"""databases: pg_stat_database and pg_stat_database_conflicts per database, database sizes
(cached for sizes_interval), vacuum (xid) age; tells later collectors which databases exist."""
from __future__ import annotations

from exporters.db import logic, queries
from exporters.db.collectors.base import Collector, Queries, Scope
from exporters.db.metrics import Families

# column of queries.DATABASES -> counter (opsstack_db_<name>_total)
_COUNTERS = ((2, "xact_commit"), (3, "xact_rollback"), (4, "blocks_read"), (5, "blocks_hit"),
             (6, "tuples_returned"), (7, "tuples_fetched"), (8, "tuples_inserted"),
             (9, "tuples_updated"), (10, "tuples_deleted"), (11, "conflicts"),
             (12, "temp_files"), (13, "temp_bytes"), (14, "deadlocks"), (15, "checksum_failures"),
             (16, "block_read_seconds"), (17, "block_write_seconds"), (18, "session_seconds"),
             (19, "active_seconds"), (20, "idle_in_transaction_seconds"), (21, "sessions"),
             (22, "sessions_abandoned"), (23, "sessions_fatal"), (24, "sessions_killed"))
_REASONS = ("tablespace", "lock", "snapshot", "bufferpin", "deadlock")

_COUNTER_NAMES = tuple((i, f"opsstack_db_{m}_total") for i, m in _COUNTERS)


class DatabasesCollector(Collector):
    name = "databases"

    def __init__(self, dbc: dict):
        super().__init__(dbc)
        self.sizes: tuple[float, dict] = (0.0, {})  # (when read, datname -> bytes)

    def collect(self, q: Queries, scope: Scope) -> Families:
        s = scope.server
        fams = Families()
        add = fams.add
        now = scope.now
        sizes = now - self.sizes[0] >= self.dbc.sizes_interval
        dbnames = []
        rows = q.rows("databases", queries.DATABASES, {"sizes": sizes}) or []
        if sizes and rows:
            self.sizes = (now, {r[0]: r[26] for r in rows})
        for r in rows:
            d = r[0]
            if r[29]:
                dbnames.append(d)
            lab = [s, d]
            add("opsstack_db_backends", lab, r[1])
            for i, m in _COUNTER_NAMES:
                add(m, lab, r[i])
            add("opsstack_db_cache_hit_ratio", lab, logic.ratio(r[5] or 0, (r[4] or 0) + (r[5] or 0)))
            add("opsstack_db_stats_reset_timestamp_seconds", lab, r[25])
            add("opsstack_db_database_size_bytes", lab, r[26] if sizes else self.sizes[1].get(d))
            add("opsstack_db_database_xid_age", lab, r[27])
            add("opsstack_db_database_connection_limit", lab, r[28])
        scope.facts.databases = dbnames

        for r in q.rows("conflicts", queries.CONFLICTS) or []:
            for i, reason in enumerate(_REASONS, start=1):
                add("opsstack_db_recovery_conflicts_total", [s, r[0], reason], r[i])
        return fams
