"""bgwriter: checkpoints and buffer writes (pg_stat_bgwriter)."""
from __future__ import annotations

from exporters.db import queries
from exporters.db.collectors.base import Collector, Queries, Scope
from exporters.db.metrics import Families

# columns of queries.BGWRITER, in order -> opsstack_db_<name>
_COLUMNS = ("checkpoints_timed_total", "checkpoints_requested_total", "checkpoint_write_seconds_total",
            "checkpoint_sync_seconds_total", "buffers_checkpoint_total", "buffers_clean_total",
            "bgwriter_maxwritten_clean_total", "buffers_backend_total", "buffers_backend_fsync_total",
            "buffers_alloc_total", "bgwriter_stats_reset_timestamp_seconds")


class BgwriterCollector(Collector):
    name = "bgwriter"

    def collect(self, q: Queries, scope: Scope) -> Families:
        fams = Families()
        rows = q.rows("bgwriter", queries.BGWRITER)
        if rows:
            for i, m in enumerate(_COLUMNS):
                fams.add(f"opsstack_db_{m}", [scope.server], rows[0][i])
        return fams
