"""activity: pg_stat_activity by database and state, longest query, lock waits, slow queries."""
from __future__ import annotations

from exporters.db import queries
from exporters.db.collectors.base import Collector, Queries, Scope
from exporters.db.metrics import Families


class ActivityCollector(Collector):
    name = "activity"

    def collect(self, q: Queries, scope: Scope) -> Families:
        s = scope.server
        fams = Families()
        add = fams.add
        slow = self.dbc.statements.slow_threshold
        act: dict[str, list] = {}
        for d, state, n, max_tx, max_q, lock_n, lock_max, slow_n in \
                q.rows("activity", queries.ACTIVITY, {"slow": slow}) or []:
            add("opsstack_db_activity_connections", [s, d, state], n)
            add("opsstack_db_activity_max_tx_duration_seconds", [s, d, state], max_tx)
            a = act.setdefault(d, [0.0, 0, 0.0, 0])
            a[0] = max(a[0], max_q)
            a[1] += lock_n
            a[2] = max(a[2], lock_max)
            a[3] += slow_n
        # per database (those the databases collector found), 0 when nothing runs there
        for d in scope.facts.databases:
            a = act.get(d, [0.0, 0, 0.0, 0])
            add("opsstack_db_activity_max_query_duration_seconds", [s, d], a[0])
            add("opsstack_db_lock_waiting_connections", [s, d], a[1])
            add("opsstack_db_lock_wait_max_seconds", [s, d], a[2])
            add("opsstack_db_activity_slow_queries", [s, d], a[3])
        return fams
