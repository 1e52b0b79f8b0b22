"""pgbouncer: pools of the target's pgbouncer (its admin console: SHOW POOLS, SHOW DATABASES).

Runs only for targets with `pgbouncer_url`; reads pgbouncer, not PostgreSQL, on a short-lived
connection of its own. `opsstack_db_pgbouncer_up` says whether it answered.
"""
from __future__ import annotations

import psycopg

from exporters.db.collectors.base import Collector, Queries, Scope
from exporters.db.metrics import Families


def read_pools(cur, server: str, fams: Families) -> None:
    """SHOW POOLS and SHOW DATABASES on a DB-API cursor of the admin console -> samples."""
    cur.execute("SHOW POOLS")
    cols = [c.name for c in cur.description]
    for row in cur.fetchall():
        r = dict(zip(cols, row))
        lab = [server, r.get("database"), r.get("user")]
        for st in ("active", "waiting"):
            fams.add("opsstack_db_pgbouncer_clients", lab + [st], r.get(f"cl_{st}"))
        for st in ("active", "idle", "used", "tested", "login"):
            fams.add("opsstack_db_pgbouncer_servers", lab + [st], r.get(f"sv_{st}"))
        wait = float(r.get("maxwait") or 0) + float(r.get("maxwait_us") or 0) / 1e6
        fams.add("opsstack_db_pgbouncer_max_wait_seconds", lab, wait)
    cur.execute("SHOW DATABASES")
    cols = [c.name for c in cur.description]
    for row in cur.fetchall():
        r = dict(zip(cols, row))
        if r.get("pool_size") is not None:
            fams.add("opsstack_db_pgbouncer_pool_size", [server, r.get("name")], r["pool_size"])


class PgbouncerCollector(Collector):
    name = "pgbouncer"

    @classmethod
    def enabled(cls, spec, dbc) -> bool:
        return bool(spec.pgbouncer_url)

    def collect(self, q: Queries, scope: Scope) -> Families:
        fams = Families()
        ok = 0
        try:
            # the admin console speaks the simple query protocol only
            with psycopg.connect(scope.spec.pgbouncer_url, autocommit=True,
                                 connect_timeout=max(1, int(round(self.dbc.connect_timeout))),
                                 cursor_factory=psycopg.ClientCursor, prepare_threshold=None) as pc:
                read_pools(pc.cursor(), scope.server, fams)
            ok = 1
        except (psycopg.Error, OSError, ValueError, TypeError) as exc:
            q.error("pgbouncer", exc, event="pgbouncer_failed")
        fams.add("opsstack_db_pgbouncer_up", [scope.server], ok)
        return fams
