"""archiver: WAL archiving (pg_stat_archiver); whether it is enabled comes from `server`."""
from __future__ import annotations

from exporters.db import queries
from exporters.db.collectors.base import Collector, Queries, Scope
from exporters.db.metrics import Families


class ArchiverCollector(Collector):
    name = "archiver"

    def collect(self, q: Queries, scope: Scope) -> Families:
        fams = Families()
        rows = q.rows("archiver", queries.ARCHIVER)
        if rows:
            s = scope.server
            archived, failed, last_ok, last_fail = rows[0]
            fams.add("opsstack_db_archiver_archived_total", [s], archived)
            fams.add("opsstack_db_archiver_failed_total", [s], failed)
            fams.add("opsstack_db_archiver_last_archived_timestamp_seconds", [s], last_ok or 0)
            fams.add("opsstack_db_archiver_last_failed_timestamp_seconds", [s], last_fail or 0)
        return fams
