"""locks: pg_locks by database, mode and granted."""
from __future__ import annotations

from exporters.db import queries
from exporters.db.collectors.base import Collector, Queries, Scope
from exporters.db.metrics import Families


class LocksCollector(Collector):
    name = "locks"

    def collect(self, q: Queries, scope: Scope) -> Families:
        fams = Families()
        for d, mode, granted, n in q.rows("locks", queries.LOCKS) or []:
            fams.add("opsstack_db_locks", [scope.server, d, mode, "true" if granted else "false"], n)
        return fams
