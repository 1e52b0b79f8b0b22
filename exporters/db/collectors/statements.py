"""statements: pg_stat_statements totals per database and the top-N statements by total time,
the others summed per database (`opsstack_db_statements_other_*`), so the series do not grow
with the number of statements.

Runs on a connection of its own (the most expensive read of a scrape). The statement texts
of the top N are read once and cached (bounded); only `opsstack_db_statement_info` carries
them, truncated to statements.text_max_length.
"""
from __future__ import annotations

import logging
from collections import OrderedDict

from psycopg import sql

from exporters.db import logic, queries
from exporters.db.collectors.base import OWN, Collector, Queries, Scope
from exporters.db.metrics import Families

log = logging.getLogger("opsstack.exporter.db")

PGSS_HINT = ("add pg_stat_statements to shared_preload_libraries, restart PostgreSQL, "
             "then run CREATE EXTENSION pg_stat_statements in the target database")


def merge_top(rows: list, top: int) -> list:
    """The query returns the top rows per (user, database, query, toplevel) entry: merge the
    entries of one (database, queryid), then keep the ``top`` by execution time."""
    merged: dict[tuple, list] = {}
    for d, qid, calls, exec_s, nrows, hit, read, temp, mx in rows:
        m = merged.get((d, qid))
        if m is None:
            merged[(d, qid)] = [d, qid, calls, exec_s, nrows, hit, read, temp, mx]
        else:
            for i, v in ((2, calls), (3, exec_s), (4, nrows), (5, hit), (6, read), (7, temp)):
                m[i] = (m[i] or 0) + (v or 0)
            m[8] = max(m[8] or 0, mx or 0)
    return sorted(merged.values(), key=lambda r: -(r[3] or 0))[:top]


class StatementsCollector(Collector):
    name = "statements"
    scope = OWN

    @classmethod
    def interval(cls, dbc) -> float:
        return dbc.statements.interval

    def __init__(self, dbc: dict):
        super().__init__(dbc)
        self.available: bool | None = None  # last state, to log its changes only
        self.texts: "OrderedDict[tuple, str]" = OrderedDict()  # (datname, queryid) -> text

    def collect(self, q: Queries, scope: Scope) -> Families:
        s = scope.server
        st = self.dbc.statements
        fams = Families()
        fams.add("opsstack_db_statements_slow_threshold_seconds", [s], st.slow_threshold)
        rows = q.rows("pg_stat_statements", queries.PGSS_SCHEMA)
        result, problem = None, "extension not created in the database"
        if rows:
            ns = sql.Identifier(rows[0][0])
            result, problem = q.try_rows(sql.SQL(queries.PGSS).format(ns=ns),
                                         {"slow_ms": st.slow_threshold * 1000, "top": st.top * 3})
        available = result is not None
        if available != self.available:
            if available:
                log.info("event=pg_stat_statements_available server=%s", s)
            else:
                log.warning("event=pg_stat_statements_missing server=%s problem=%r hint=%r", s, problem, PGSS_HINT)
            self.available = available
        fams.add("opsstack_db_pg_stat_statements_available", [s], 1 if available else 0)
        if not available:
            return fams
        top = []
        totals: dict[str, list] = {}  # datname -> [calls, exec_s, rows, hit, read, temp, tracked]
        for kind, _dbid, qid, calls, exec_s, plan_s, nrows, hit, read, temp, n, x, d in result:
            if kind == "q":
                top.append((d, qid, calls, exec_s, nrows, hit, read, temp, x))
                continue
            lab = [s, d]
            totals[d] = [calls or 0, exec_s or 0, nrows or 0, hit or 0, read or 0, temp or 0, n or 0]
            fams.add("opsstack_db_statements_calls_total", lab, calls)
            fams.add("opsstack_db_statements_exec_seconds_total", lab, exec_s)
            fams.add("opsstack_db_statements_plan_seconds_total", lab, plan_s)
            fams.add("opsstack_db_statements_rows_total", lab, nrows)
            fams.add("opsstack_db_statements_shared_blocks_hit_total", lab, hit)
            fams.add("opsstack_db_statements_shared_blocks_read_total", lab, read)
            fams.add("opsstack_db_statements_temp_blocks_written_total", lab, temp)
            fams.add("opsstack_db_statements_mean_exec_seconds", lab, logic.weighted_mean(exec_s or 0, calls or 0))
            fams.add("opsstack_db_statements_tracked", lab, n)
            fams.add("opsstack_db_statements_slow", lab, x)
        top = merge_top(top, st.top)
        missing = [qid for d, qid, *_ in top if (d, qid) not in self.texts]
        if missing:
            for d, qid, text in q.rows("pg_stat_statements_text", sql.SQL(queries.PGSS_TEXT).format(ns=ns),
                                       {"ids": missing}) or []:
                self.texts[(d, qid)] = logic.truncate(text or "", st.text_max_length)
            while len(self.texts) > max(200, 4 * st.top):
                self.texts.popitem(last=False)
        for d, qid, calls, exec_s, nrows, hit, read, temp, max_s in top:
            lab = [s, d, qid]
            fams.add("opsstack_db_statement_calls_total", lab, calls)
            fams.add("opsstack_db_statement_exec_seconds_total", lab, exec_s)
            fams.add("opsstack_db_statement_mean_exec_seconds", lab, logic.weighted_mean(exec_s or 0, calls or 0))
            fams.add("opsstack_db_statement_max_exec_seconds", lab, max_s)
            fams.add("opsstack_db_statement_rows_total", lab, nrows)
            fams.add("opsstack_db_statement_shared_blocks_hit_total", lab, hit)
            fams.add("opsstack_db_statement_shared_blocks_read_total", lab, read)
            fams.add("opsstack_db_statement_temp_blocks_written_total", lab, temp)
            text = self.texts.get((d, qid))
            if text is not None:
                fams.add("opsstack_db_statement_info", lab + [text], 1)
            tot = totals.get(d)
            if tot is not None:
                for i, v in enumerate((calls, exec_s, nrows, hit, read, temp)):
                    tot[i] -= v or 0
                tot[6] -= 1
        # the statements beyond the top N, summed per database (opsstack_db_statements_other_*)
        for d, (calls, exec_s, nrows, hit, read, temp, left) in totals.items():
            lab = [s, d]
            fams.add("opsstack_db_statements_other", lab, max(left, 0))
            fams.add("opsstack_db_statements_other_calls_total", lab, max(calls, 0))
            fams.add("opsstack_db_statements_other_exec_seconds_total", lab, max(exec_s, 0.0))
            fams.add("opsstack_db_statements_other_rows_total", lab, max(nrows, 0))
            fams.add("opsstack_db_statements_other_shared_blocks_hit_total", lab, max(hit, 0))
            fams.add("opsstack_db_statements_other_shared_blocks_read_total", lab, max(read, 0))
            fams.add("opsstack_db_statements_other_temp_blocks_written_total", lab, max(temp, 0))
        return fams
