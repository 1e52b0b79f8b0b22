"""partitions: partition counts, default partitions and sizes of partitioned tables, and for
the tables in exporters.db.lifecycle.partitions whether the current and next period exist.

Sizes and live rows of a partitioned table are the sums of what `tables` (which runs before,
in the same job) read of its partitions; PARTITIONED_SIZES is read only when it did not."""
from __future__ import annotations

import datetime as dt

from exporters.db import logic, queries
from exporters.db.collectors.base import DATABASE, Collector, Queries, Scope
from exporters.db.metrics import Families


def to_datetime(v: str | None, tz) -> dt.datetime | None:
    """A partition bound (ISO text) as an aware datetime (naive ones get ``tz``); None if not a time."""
    if v is None:
        return None
    try:
        d = dt.datetime.fromisoformat(v)
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=tz)
    return d


class PartitionsCollector(Collector):
    name = "partitions"
    scope = DATABASE

    @classmethod
    def interval(cls, dbc) -> float:
        return dbc.tables_interval

    def __init__(self, dbc: dict):
        super().__init__(dbc)
        self.sizes: dict[str, list] = {}  # datname -> rows of PARTITIONED_SIZES (refreshed with sizes)

    def forget(self, datname: str) -> None:
        self.sizes.pop(datname, None)

    def collect(self, q: Queries, scope: Scope) -> Families:
        s, dbname = scope.server, scope.datname
        fams = Families()
        rows = q.rows("partitions", queries.PARTITIONS)
        if rows is None:
            return fams
        parts: dict[str, list] = {}
        defaults: dict[str, bool] = {}
        for schema, rel, bound in rows:
            key = f"{schema}.{rel}"
            lst = parts.setdefault(key, [])
            defaults.setdefault(key, False)
            if bound is None:
                continue
            if bound == "DEFAULT":
                defaults[key] = True
                lst.append(None)
                continue
            b = logic.parse_range_bound(bound)
            lst.append(b if b is not None else ("?", "?"))
        for key, lst in parts.items():
            lab = [s, dbname, key]
            fams.add("opsstack_db_partitions", lab, sum(1 for x in lst if x is not None) + defaults[key])
            fams.add("opsstack_db_partition_default_present", lab, 1 if defaults[key] else 0)
        psizes = self.sizes.get(dbname)
        if scope.table_roots:
            # `tables` ran before in this job: sum what it read over each root's partitions
            # rather than stat every partition's files again (thousands of daily partitions)
            agg: dict[tuple, list] = {}
            tsize, isize = scope.sizes.tables, scope.index_bytes
            for part, root in scope.table_roots.items():
                a = agg.setdefault(root, [0.0, 0.0])
                a[0] += (tsize.get(part) or 0) + (isize.get(part) or 0)
                a[1] += scope.table_live.get(part) or 0
            psizes = [(r[0], r[1], a[0], a[1]) for r, a in agg.items()]
            self.sizes[dbname] = psizes
        elif scope.sizes_due or psizes is None:
            psizes = q.rows("partition_sizes", queries.PARTITIONED_SIZES) or []
            self.sizes[dbname] = psizes
        for r in psizes:
            fams.add("opsstack_db_partitioned_table_size_bytes", [s, dbname, f"{r[0]}.{r[1]}"], r[2])
            fams.add("opsstack_db_partitioned_table_live_rows", [s, dbname, f"{r[0]}.{r[1]}"], r[3])
        wanted = self.dbc.lifecycle.partitions
        if not wanted:
            return fams
        rows = q.rows("partitions", "select now()")
        if not rows:
            return fams
        now = rows[0][0]
        for w in wanted:
            schema, rel = logic.split_table(w.table)
            key = f"{schema}.{rel}"
            if key not in parts:
                continue  # the table lives in another database (or not yet)
            bounds = []
            for b in parts[key]:
                if not b or b == ("?", "?"):
                    continue
                lo, hi = (to_datetime(x, now.tzinfo) for x in b)
                if (b[0] is not None and lo is None) or (b[1] is not None and hi is None):
                    continue
                bounds.append((lo, hi))
            health = logic.partition_health(bounds, now, w.period)
            for period, ok in health.items():
                fams.add("opsstack_db_partition_present", [s, dbname, key, period], 1 if ok else 0)
            uppers = [hi for _, hi in bounds if hi is not None]
            if uppers:
                fams.add("opsstack_db_partition_newest_upper_bound_timestamp_seconds", [s, dbname, key],
                         max(uppers).timestamp())
        return fams
