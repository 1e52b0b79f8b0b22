"""replication: replicas and their lag (on a primary), the standby's own lag, replication slots."""
from __future__ import annotations

from exporters.db import queries
from exporters.db.collectors.base import Collector, Queries, Scope
from exporters.db.metrics import Families


class ReplicationCollector(Collector):
    name = "replication"

    def collect(self, q: Queries, scope: Scope) -> Families:
        s = scope.server
        fams = Families()
        add = fams.add
        recovery = scope.facts.in_recovery  # from the server collector
        reps = [] if recovery else q.rows("replication", queries.REPLICATION) or []
        add("opsstack_db_replicas", [s], len(reps))
        for replica, _state, replay, write, flush, lag_bytes in reps:
            add("opsstack_db_replication_lag_seconds", [s, replica], replay or 0.0)
            add("opsstack_db_replication_write_lag_seconds", [s, replica], write or 0.0)
            add("opsstack_db_replication_flush_lag_seconds", [s, replica], flush or 0.0)
            add("opsstack_db_replication_lag_bytes", [s, replica], lag_bytes)
        if recovery:
            sb = q.rows("standby", queries.STANDBY)
            if sb:
                add("opsstack_db_replication_lag_seconds", [s, "self"], sb[0][0])
                add("opsstack_db_replication_lag_bytes", [s, "self"], sb[0][1])
        for slot, stype, active, retained in q.rows("slots", queries.SLOTS) or []:
            add("opsstack_db_replication_slot_active", [s, slot, stype], 1 if active else 0)
            add("opsstack_db_replication_slot_retained_bytes", [s, slot, stype], retained)
        return fams
