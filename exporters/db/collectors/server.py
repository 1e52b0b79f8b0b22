"""server: version, start time, connections, WAL position (one row; the target is down without it)."""
from __future__ import annotations

from exporters.db import logic, queries
from exporters.db.collectors.base import Collector, Queries, QueryFailed, Scope
from exporters.db.metrics import Families


class ServerCollector(Collector):
    name = "server"

    def collect(self, q: Queries, scope: Scope) -> Families:
        rows = q.rows("server", queries.SERVER)
        if rows is None:
            raise QueryFailed("cannot read the server's state")
        (vnum, version, start, recovery, backends, max_conn, _reserved, wal, archive_mode, _now) = rows[0]
        scope.facts.in_recovery = bool(recovery)
        s = scope.server
        fams = Families()
        add = fams.add
        add("opsstack_db_version_info", [s, version], 1)
        add("opsstack_db_server_version_num", [s], vnum)
        add("opsstack_db_start_time_seconds", [s], start)
        add("opsstack_db_in_recovery", [s], 1 if recovery else 0)
        add("opsstack_db_connections", [s], backends)
        add("opsstack_db_max_connections", [s], max_conn)
        add("opsstack_db_connections_used_ratio", [s], logic.ratio(backends, max_conn))
        add("opsstack_db_wal_position_bytes", [s], wal)
        add("opsstack_db_archiver_enabled", [s], 1 if archive_mode in ("on", "always") else 0)
        return fams
