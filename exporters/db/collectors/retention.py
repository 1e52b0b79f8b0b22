"""retention: rows older than their retention (exporters.db.lifecycle.retention), recounted
every lifecycle.interval (counting is a scan) and cached with its age exported."""
from __future__ import annotations

from psycopg import sql

from exporters.db import logic, queries
from exporters.db.collectors.base import DATABASE, Collector, Queries, Scope
from exporters.db.metrics import Families


class RetentionCollector(Collector):
    name = "retention"
    scope = DATABASE

    @classmethod
    def interval(cls, dbc) -> float:
        return dbc.lifecycle.interval

    def __init__(self, dbc: dict):
        super().__init__(dbc)
        self.cache: dict[str, tuple[float, list]] = {}  # datname -> (when, [(table, rows, max_age)])

    def forget(self, datname: str) -> None:
        self.cache.pop(datname, None)

    @classmethod
    def enabled(cls, spec, dbc) -> bool:
        return bool(dbc.lifecycle.retention)

    def collect(self, q: Queries, scope: Scope) -> Families:
        lc = self.dbc.lifecycle
        fams = Families()
        dbname = scope.datname
        cached = self.cache.get(dbname)
        now = scope.now
        if cached is None or now - cached[0] >= lc.interval:
            counts = []
            for r in lc.retention:
                schema, rel = logic.split_table(r.table)
                exists = q.rows("retention", queries.REGCLASS, (f"{schema}.{rel}",))
                if not exists or not exists[0][0]:
                    continue  # the table lives in another database (or not yet)
                stmt = sql.SQL("select count(*) from {}.{} where {} < now() - make_interval(secs => %s)").format(
                    sql.Identifier(schema), sql.Identifier(rel), sql.Identifier(r.column))
                res = q.rows("retention", stmt, (r.max_age,))
                if res is not None:
                    counts.append((f"{schema}.{rel}", res[0][0], r.max_age))
            cached = (now, counts)
            self.cache[dbname] = cached
        ts, counts = cached
        for table, n, max_age in counts:
            fams.add("opsstack_db_rows_older_than_retention", [scope.server, dbname, table], n)
            fams.add("opsstack_db_retention_max_age_seconds", [scope.server, dbname, table], max_age)
        fams.add("opsstack_db_lifecycle_cache_age_seconds", [scope.server, dbname], now - ts)
        return fams
