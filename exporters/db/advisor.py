"""Index advisor: for the statements that cost the most, find and prove missing indexes.

How (nothing is ever created for real):
1. the slowest statements of the database come from pg_stat_statements (by total time);
2. each is planned as a generic plan (PREPARE + EXPLAIN EXECUTE with plan_cache_mode =
   force_generic_plan), so the normalized text with $1.. parameters can be planned;
3. candidate indexes come from the columns in the filters of sequential scans in the plan
   (equality columns first, then one range column) and, when the pg_qualstats extension
   is there, from its own index advisor;
4. each candidate is created as a HypoPG hypothetical index (on every scanned partition
   for a partitioned table) and the statements are planned again; a candidate is
   suggested only when it cuts a statement's plan cost by at least `min_cost_drop`.

The result lists CREATE INDEX CONCURRENTLY statements (ON ONLY + per-partition + ATTACH for
partitioned tables), the statements each index helps, their cost before and after, and
an estimate of the execution time saved.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from core.pg import connect as pg_connect
from core.pg import with_dbname
from exporters.db.conn import connect, dbname_of, target_url

log = logging.getLogger("opsstack.advisor")

# statements about the catalog (the exporter's own, psql's...) are not index candidates
_CATALOG = re.compile(r"\b(pg_catalog|pg_stat\w*|pg_class|pg_settings|pg_locks|pg_database|pg_namespace|"
                      r"pg_index|pg_inherits|pg_extension|hypopg\w*|pg_qualstats\w*|information_schema)\b", re.I)
_PLANNABLE = re.compile(r"^\s*(select|with|update|delete)\b", re.I)
_PARAM = re.compile(r"\$(\d+)")
_IDENT = re.compile(r'"((?:[^"]|"")+)"|\b([a-z_][a-z0-9_$]*)\b')
_EQ_AFTER = re.compile(r"^\s*\)?\s*(?:::[\w\s]+\)?\s*)?(=|<>|<=|>=|<|>|~~\*?|!~~|IS\b|= ANY)", re.I)
_EQ_BEFORE = re.compile(r"(=|<=|>=|<|>)\s*\(*(?:[\w\"]+\.)?$")


@dataclass
class Statement:
    queryid: int
    query: str
    calls: int
    mean_seconds: float
    total_seconds: float
    cost: float | None = None
    skipped: str | None = None


@dataclass
class Helped:
    queryid: int
    query: str
    calls: int
    mean_seconds: float
    cost_before: float
    cost_after: float
    cost_drop_ratio: float
    est_saved_seconds_per_call: float


@dataclass
class Suggestion:
    table: str                  # schema.table (the partitioned root for partitions)
    columns: list[str]
    partitioned: bool
    ddl: list[str]
    statements: list[Helped] = field(default_factory=list)
    cost_drop_ratio: float = 0.0        # the best drop among the statements it helps
    saved_seconds_per_second: float = 0.0

    @property
    def label(self) -> str:
        return ",".join(self.columns)


@dataclass
class Report:
    database: str
    hypopg: bool
    qualstats: bool
    examined: int = 0
    suggestions: list[Suggestion] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    problem: str | None = None
    seconds: float = 0.0
    finished_at: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        return d


# --------------------------------------------------------------------------- pure helpers
def param_count(query: str) -> int:
    nums = [int(n) for n in _PARAM.findall(query)]
    return max(nums) if nums else 0


def walk_plan(node: dict):
    yield node
    for child in node.get("Plans", []) or []:
        yield from walk_plan(child)


def seq_scans(plan: dict) -> list[tuple[str, str, str]]:
    """(schema, relation, filter) of each sequential scan that has a filter."""
    out = []
    for n in walk_plan(plan):
        if n.get("Node Type") == "Seq Scan" and n.get("Filter") and n.get("Relation Name"):
            out.append((n.get("Schema", "public"), n["Relation Name"], n["Filter"]))
    return out


def filter_columns(filt: str, columns: set[str]) -> tuple[list[str], list[str]]:
    """Columns of `columns` used in a plan's Filter text: (equality columns, range/other columns).

    Columns compared with '=' (or = ANY) come first in an index; a column compared with
    <, >, <=, >= (or LIKE) is a range column. Order of appearance is kept.
    """
    eq: list[str] = []
    rng: list[str] = []
    for m in _IDENT.finditer(filt):
        name = m.group(1).replace('""', '"') if m.group(1) else m.group(2)
        if name not in columns:
            continue
        after = filt[m.end():]
        before = filt[:m.start()]
        op = None
        ma = _EQ_AFTER.match(after)
        if ma:
            op = ma.group(1).upper()
        else:
            mb = _EQ_BEFORE.search(before)
            if mb:
                op = mb.group(1)
        if op is None:
            continue
        if op in ("=", "= ANY", "IS"):
            if name not in eq:
                eq.append(name)
        elif op != "<>":
            if name not in rng:
                rng.append(name)
    rng = [c for c in rng if c not in eq]
    return eq, rng


def candidate_sets(eq: list[str], rng: list[str], max_columns: int = 3) -> list[tuple[str, ...]]:
    """Index column lists to try: equality columns then one range column, and each single column."""
    cands: list[tuple[str, ...]] = []
    lead = eq[:max_columns]
    if lead and rng and len(lead) < max_columns:
        cands.append(tuple(lead) + (rng[0],))
    if lead:
        cands.append(tuple(lead))
    for c in eq + rng:
        if (c,) not in cands:
            cands.append((c,))
    return cands


def index_name(table: str, columns: list[str] | tuple[str, ...]) -> str:
    base = f"{table}_{'_'.join(columns)}_idx"
    base = re.sub(r"[^a-z0-9_]", "_", base.lower())
    return base[:63]


def qident(name: str) -> str:
    return name if re.match(r"^[a-z_][a-z0-9_]*$", name) else '"' + name.replace('"', '""') + '"'


def ddl_for(schema: str, table: str, columns: list[str], partitions: list[str] | None) -> list[str]:
    cols = ", ".join(qident(c) for c in columns)
    if not partitions:
        return [f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {qident(index_name(table, columns))} "
                f"ON {qident(schema)}.{qident(table)} ({cols});"]
    parent = index_name(table, columns)
    out = [f"CREATE INDEX IF NOT EXISTS {qident(parent)} ON ONLY {qident(schema)}.{qident(table)} ({cols});"]
    for p in partitions:
        child = index_name(p, columns)
        out.append(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {qident(child)} ON {qident(schema)}.{qident(p)} ({cols});")
        out.append(f"ALTER INDEX {qident(schema)}.{qident(parent)} ATTACH PARTITION {qident(schema)}.{qident(child)};")
    return out


def cost_drop(before: float, after: float) -> float:
    return 0.0 if before <= 0 else max(0.0, (before - after) / before)


_QUALSTATS_DDL = re.compile(r"CREATE INDEX ON ([\w.\"]+)(?: USING (\w+))? \(([^)]+)\)", re.I)


def parse_qualstats_ddl(ddl: str) -> tuple[str, list[str]] | None:
    m = _QUALSTATS_DDL.search(ddl)
    if not m or (m.group(2) and m.group(2).lower() != "btree"):
        return None
    cols = [c.strip().strip('"') for c in m.group(3).split(",")]
    if any(not re.match(r"^[\w$]+$", c) for c in cols):
        return None
    return m.group(1).replace('"', ""), cols


# --------------------------------------------------------------------------- the advisor
class Advisor:
    """Runs on one database connection (autocommit); leaves no trace (hypopg_reset)."""

    def __init__(self, conn: psycopg.Connection, settings, stats_conn: psycopg.Connection | None = None):
        self.conn = conn
        self.stats_conn = stats_conn or conn
        self.s = settings  # the view of exporters.db.advisor (core.config.view)
        self._cols: dict[tuple[str, str], set[str]] = {}
        self._n = 0

    # ---- sources
    def _ext(self, conn, name: str) -> str | None:
        row = conn.execute("select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace "
                           "where e.extname = %s", (name,)).fetchone()
        return row[0] if row else None

    def statements(self, dbname: str) -> tuple[list[Statement], float | None]:
        ns = self._ext(self.stats_conn, "pg_stat_statements")
        if ns is None:
            raise LookupError("pg_stat_statements is not created in this database (CREATE EXTENSION pg_stat_statements)")
        q = sql.SQL("""
            select s.queryid, min(s.query), sum(s.calls)::bigint, (sum(s.total_exec_time) / 1000.0)::float8
            from {ns}.pg_stat_statements(true) s join pg_database d on d.oid = s.dbid
            where d.datname = %s and s.calls >= %s and s.queryid is not null and s.toplevel
            group by s.queryid order by 4 desc limit %s""").format(ns=sql.Identifier(ns))
        rows = self.stats_conn.execute(q, (dbname, self.s.min_calls, self.s.statements * 4)).fetchall()
        out = []
        for qid, text, calls, total in rows:
            if not text or not _PLANNABLE.match(text) or _CATALOG.search(text):
                continue
            out.append(Statement(qid, text, calls, total / calls if calls else 0.0, total))
            if len(out) >= self.s.statements:
                break
        window = None
        try:
            row = self.stats_conn.execute(
                sql.SQL("select extract(epoch from now() - stats_reset)::float8 from {ns}.pg_stat_statements_info")
                .format(ns=sql.Identifier(ns))).fetchone()
            window = row[0] if row else None
        except psycopg.Error:
            pass
        return out, window

    # ---- planning
    def plan(self, query: str) -> dict:
        """The generic plan (JSON) of a normalized statement."""
        self._n += 1
        name = f"opsstack_advisor_{self._n}"
        c = self.conn
        c.execute(sql.SQL("prepare {} as ").format(sql.Identifier(name)) + sql.SQL(query))
        try:
            n = param_count(query)
            args = sql.SQL("({})").format(sql.SQL(", ").join([sql.SQL("null")] * n)) if n else sql.SQL("")
            row = c.execute(sql.SQL("explain (format json, verbose) execute {}").format(sql.Identifier(name)) + args).fetchone()
        finally:
            c.execute(sql.SQL("deallocate {}").format(sql.Identifier(name)))
        doc = row[0]
        if isinstance(doc, str):
            doc = json.loads(doc)
        return doc[0]["Plan"]

    def cost(self, query: str) -> float:
        return float(self.plan(query)["Total Cost"])

    def columns(self, schema: str, rel: str) -> set[str]:
        key = (schema, rel)
        if key not in self._cols:
            rows = self.conn.execute(
                "select a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid "
                "join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped",
                (schema, rel)).fetchall()
            self._cols[key] = {r[0] for r in rows}
        return self._cols[key]

    def root_of(self, schema: str, rel: str) -> tuple[str, str, bool]:
        row = self.conn.execute(
            "select rn.nspname, r.relname, c.relispartition from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "join pg_class r on r.oid = coalesce(pg_partition_root(c.oid), c.oid) "
            "join pg_namespace rn on rn.oid = r.relnamespace "
            "where n.nspname = %s and c.relname = %s", (schema, rel)).fetchone()
        if not row:
            return schema, rel, False
        return row[0], row[1], bool(row[2])

    def leaves(self, schema: str, rel: str) -> list[str]:
        rows = self.conn.execute(
            "select c.relname from pg_partition_tree(%s::regclass) t join pg_class c on c.oid = t.relid "
            "where t.isleaf order by 1", (f"{qident(schema)}.{qident(rel)}",)).fetchall()
        return [r[0] for r in rows]

    def has_index(self, schema: str, rel: str, columns: tuple[str, ...]) -> bool:
        """A real (valid) index on the table whose leading columns are these."""
        rows = self.conn.execute(
            "select array(select a.attname from unnest(i.indkey) with ordinality k(attnum, ord) "
            "             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.ord) "
            "from pg_index i join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = %s and c.relname = %s", (schema, rel)).fetchall()
        for (cols,) in rows:
            if list(cols[:len(columns)]) == list(columns):
                return True
        return False

    def qualstats_candidates(self) -> list[tuple[str, list[str]]]:
        ns = self._ext(self.conn, "pg_qualstats")
        if ns is None:
            return []
        try:
            row = self.conn.execute(sql.SQL("select {ns}.pg_qualstats_index_advisor()::text")
                                    .format(ns=sql.Identifier(ns))).fetchone()
        except psycopg.Error as exc:
            log.info("event=pg_qualstats_unusable error=%r", str(exc).strip().splitlines()[0])
            return []
        out = []
        for ddl in (json.loads(row[0]) or {}).get("indexes") or []:
            p = parse_qualstats_ddl(ddl)
            if p:
                out.append(p)
        return out

    def hypothetical(self, schema: str, tables: list[str], columns: tuple[str, ...]) -> int:
        cols = ", ".join(qident(c) for c in columns)
        for t in tables:
            self.conn.execute("select * from hypopg_create_index(%s)",
                              (f"CREATE INDEX ON {qident(schema)}.{qident(t)} ({cols})",))
        return len(tables)

    def reset(self) -> None:
        self.conn.execute("select hypopg_reset()")

    # ---- the run
    def run(self, dbname: str) -> Report:
        t0 = time.monotonic()
        hypopg = self._ext(self.conn, "hypopg") is not None
        qualstats = self._ext(self.conn, "pg_qualstats") is not None
        rep = Report(database=dbname, hypopg=hypopg, qualstats=qualstats)
        if not hypopg:
            rep.problem = ("HypoPG is not available: install postgresql-<major>-hypopg and run "
                           "CREATE EXTENSION hypopg in this database")
            return self._done(rep, t0)
        try:
            stmts, window = self.statements(dbname)
        except (LookupError, psycopg.Error) as exc:
            rep.problem = str(exc).strip().splitlines()[0]
            return self._done(rep, t0)
        self.conn.execute("set plan_cache_mode = force_generic_plan")
        try:  # keep the advisor's own EXPLAINs out of pg_stat_statements where allowed
            self.conn.execute("set pg_stat_statements.track = 'top'")
        except psycopg.Error:
            pass
        try:
            self.reset()
            self._advise(stmts, window, rep)
        finally:
            try:
                self.reset()
                self.conn.execute("reset plan_cache_mode")
            except psycopg.Error:
                pass
        return self._done(rep, t0)

    def _done(self, rep: Report, t0: float) -> Report:
        rep.seconds = time.monotonic() - t0
        rep.finished_at = time.time()
        return rep

    def _advise(self, stmts: list[Statement], window: float | None, rep: Report) -> None:
        min_drop = self.s.min_cost_drop
        # 1. plan each statement, collect candidates per (root table)
        cands: dict[tuple[str, str], dict] = {}   # (schema, root) -> {"leaves": set, "sets": [..], "stmts": set}
        planned: list[Statement] = []
        for st in stmts:
            try:
                plan = self.plan(st.query)
            except psycopg.Error as exc:
                st.skipped = str(exc).strip().splitlines()[0]
                rep.skipped.append({"queryid": st.queryid, "reason": st.skipped})
                continue
            st.cost = float(plan["Total Cost"])
            planned.append(st)
            for schema, rel, filt in seq_scans(plan):
                eq, rng = filter_columns(filt, self.columns(schema, rel))
                if not eq and not rng:
                    continue
                rs, rr, is_part = self.root_of(schema, rel)
                c = cands.setdefault((rs, rr), {"partitioned": is_part, "sets": [], "stmts": set()})
                for cs in candidate_sets(eq, rng):
                    if cs not in c["sets"]:
                        c["sets"].append(cs)
                c["stmts"].add(st.queryid)
        for table, cols in self.qualstats_candidates():
            schema, rel = table.split(".", 1) if "." in table else ("public", table)
            rs, rr, is_part = self.root_of(schema, rel)
            c = cands.setdefault((rs, rr), {"partitioned": is_part, "sets": [], "stmts": {s.queryid for s in planned}})
            if tuple(cols) not in c["sets"]:
                c["sets"].append(tuple(cols))
        rep.examined = len(planned)
        by_id = {s.queryid: s for s in planned}

        # 2. try each candidate with HypoPG; keep, per statement, the best candidate
        best: dict[int, tuple[float, tuple[str, str], tuple[str, ...]]] = {}
        for (schema, root), c in cands.items():
            leaves = self.leaves(schema, root) if c["partitioned"] else [root]
            for cs in c["sets"]:
                if self.has_index(schema, root, cs) or (c["partitioned"] and leaves
                                                        and self.has_index(schema, leaves[0], cs)):
                    continue
                try:
                    self.hypothetical(schema, leaves, cs)
                    for qid in c["stmts"]:
                        st = by_id.get(qid)
                        if st is None or not st.cost:
                            continue
                        after = self.cost(st.query)
                        prev = best.get(qid)
                        # a wider index must beat a narrower one by 2% to be preferred
                        if prev is None or after < prev[0] * (0.98 if len(cs) > len(prev[2]) else 1.0) \
                                or (after <= prev[0] and len(cs) < len(prev[2])):
                            best[qid] = (after, (schema, root), cs)
                except psycopg.Error as exc:
                    rep.skipped.append({"table": f"{schema}.{root}", "columns": list(cs),
                                        "reason": str(exc).strip().splitlines()[0]})
                finally:
                    self.reset()

        # 3. group statements by the index that helps them
        sugg: dict[tuple, Suggestion] = {}
        for qid, (after, (schema, root), cs) in best.items():
            st = by_id[qid]
            drop = cost_drop(st.cost, after)
            if drop < min_drop:
                continue
            key = (schema, root, cs)
            if key not in sugg:
                part = cands[(schema, root)]["partitioned"]
                leaves = self.leaves(schema, root) if part else None
                sugg[key] = Suggestion(table=f"{schema}.{root}", columns=list(cs), partitioned=part,
                                       ddl=ddl_for(schema, root, list(cs), leaves))
            s = sugg[key]
            s.statements.append(Helped(qid, st.query, st.calls, st.mean_seconds, st.cost, after, drop,
                                       st.mean_seconds * drop))
            s.cost_drop_ratio = max(s.cost_drop_ratio, drop)
            if window and window > 0:
                s.saved_seconds_per_second += st.total_seconds * drop / window
        out = sorted(sugg.values(), key=lambda x: (-x.saved_seconds_per_second,
                                                   -sum(h.est_saved_seconds_per_call * h.calls for h in x.statements)))
        rep.suggestions = out[: self.s.max_suggestions]


def advise_url(url: str, settings, stats_url: str | None = None, statement_timeout: float = 10.0,
               connect_timeout: float = 5.0) -> Report:
    """Run the advisor on the database of `url` (pg_stat_statements read from stats_url if given);
    ``settings``: the view of exporters.db.advisor."""
    dbname = dbname_of(url)
    with connect(url, connect_timeout, statement_timeout, application_name="opsstack-advisor") as conn:
        stats_conn = None
        try:
            if stats_url and Advisor(conn, settings)._ext(conn, "pg_stat_statements") is None:
                stats_conn = connect(stats_url, connect_timeout, statement_timeout, application_name="opsstack-advisor")
            return Advisor(conn, settings, stats_conn).run(dbname)
        finally:
            if stats_conn is not None:
                stats_conn.close()


# --------------------------------------------------------------------------- in the exporter
class AdvisorCache:
    """Runs the advisor for every target database every `advisor.interval` in a thread.

    The exporter exports the last reports (suggestions, cost drops, run time and when it
    ran), so a scrape never waits for EXPLAINs.
    """

    def __init__(self, dbc, database):
        """``dbc``, ``database``: the views of the exporters.db and database sections."""
        self.dbc = dbc
        self.database = database
        self.settings = dbc.advisor
        self.reports: dict[tuple[str, str], Report] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def targets(self) -> list[tuple[str, str, str]]:
        """(server, url of each database, url with pg_stat_statements) to advise on."""
        out = []
        for t in self.dbc.targets:
            url = target_url(t, self.database)
            if not url:
                continue
            names = [d for d in t.databases if d != "*"]
            if "*" in t.databases:
                try:
                    with pg_connect(url, self.dbc.connect_timeout) as c:
                        names = [r[0] for r in c.execute(
                            "select datname from pg_database where datallowconn and not datistemplate "
                            "order by 1").fetchall()]
                except psycopg.Error:
                    names = []
            out.append((t.name, url, url))
            out += [(t.name, with_dbname(url, d), url) for d in names if d != dbname_of(url)]
        return out

    def run_once(self) -> None:
        for server, url, stats_url in self.targets():
            if self._stop.is_set():
                return
            try:
                rep = advise_url(url, self.settings, stats_url=stats_url,
                                 statement_timeout=max(self.dbc.statement_timeout, 5.0),
                                 connect_timeout=self.dbc.connect_timeout)
            except psycopg.Error as exc:
                log.warning("event=advisor_failed server=%s error=%r", server, str(exc).strip().splitlines()[0])
                continue
            if rep.problem:
                log.info("event=advisor_skipped server=%s datname=%s problem=%r", server, rep.database, rep.problem)
            with self._lock:
                self.reports[(server, dbname_of(url))] = rep

    def _loop(self) -> None:
        self._stop.wait(5.0)  # let the first scrapes happen first
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # never let the thread die; the next round retries
                log.exception("event=advisor_crashed")
            self._stop.wait(self.settings.interval)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="db-advisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def export(self, fams) -> None:
        with self._lock:
            reports = list(self.reports.items())
        for (server, dbname), rep in reports:
            lab = [server, dbname]
            fams.add("opsstack_db_advisor_available", lab, 1 if rep.hypopg and not rep.problem else 0)
            fams.add("opsstack_db_advisor_last_run_timestamp_seconds", lab, rep.finished_at)
            fams.add("opsstack_db_advisor_run_duration_seconds", lab, rep.seconds)
            fams.add("opsstack_db_advisor_suggestions", lab, len(rep.suggestions))
            for s in rep.suggestions:
                sl = lab + [s.table, s.label]
                fams.add("opsstack_db_advisor_suggestion_cost_drop_ratio", sl, s.cost_drop_ratio)
                fams.add("opsstack_db_advisor_suggestion_statements", sl, len(s.statements))
                fams.add("opsstack_db_advisor_suggestion_saved_seconds_per_second", sl, s.saved_seconds_per_second)
