"""The database exporter's background collectors and series budget, on a real PostgreSQL.

Heavy collectors (tables, indexes, partitions, statements...) are refreshed in the
background and served from their last good result, with their age and duration exported;
per-table and per-index series stay within `table_series_budget` (partitions rolled up to
their parent, the rest summed as `__other__`). See exporters/db/executor.py and budget.py.
"""
from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.config import load_data
from core.exporter import registry_for
from core.pg import with_dbname
from exporters.db.budget import OTHER
from exporters.db.collector import DbCollector
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch(pg_cluster):
    """(name, url) of an empty database, dropped afterwards."""
    admin = pg_cluster.url()
    name = f"opsstack_dbc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'create database "{name}"')
    yield name, with_dbname(admin, name)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'drop database if exists "{name}" with (force)')


def _collector(url: str, **db) -> DbCollector:
    base = {"targets": [{"name": "main", "url": url}], "advisor": {"enabled": False}, "lifecycle": {
        "partitions": [], "retention": []}}
    base.update(db)
    return DbCollector.from_config(load_data({"exporters": {"db": base}}))


def _scrape(col) -> dict:
    """name -> list of (labels, value)."""
    out: dict = {}
    for fam in text_string_to_metric_families(generate_latest(registry_for(col)).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _get(s: dict, metric: str, **labels):
    vals = [v for lab, v in s.get(metric, []) if all(lab.get(k) == str(x) for k, x in labels.items())]
    return vals[0] if vals else None


def _text_has_one_family_each(col) -> str:
    """What /metrics serves, checked to hold every family once (cached and live parts merged)."""
    text = col.scrape_text()
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names))
    return text


def test_background_collectors_serve_their_cached_result_with_age_and_duration(scratch):
    name, url = scratch
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create table t (id int primary key, v text)")
        c.execute("insert into t select g, 'x' from generate_series(1, 10) g")
        c.execute("analyze t")
    slow = _collector(url, tables_interval="1h")
    fast = _collector(url, tables_interval="200ms")
    try:
        s = _scrape(slow)  # the first scrape reads the background collectors itself
        assert _get(s, "opsstack_db_table_rows_inserted_total", datname=name, relname="t") == 10
        assert _get(s, "opsstack_db_collector_interval_seconds", collector="tables") == 3600
        assert _get(s, "opsstack_db_collector_interval_seconds", collector="activity") == 0
        assert _get(s, "opsstack_db_collector_duration_seconds", collector="tables") > 0
        _scrape(fast)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("insert into t select g, 'y' from generate_series(11, 25) g")
            c.execute("analyze t")
        # within the hour: the cached result, its age growing; the live facts are fresh
        s = _scrape(slow)
        assert _get(s, "opsstack_db_table_rows_inserted_total", datname=name, relname="t") == 10
        assert _get(s, "opsstack_db_tuples_inserted_total", datname=name) >= 25
        age1 = _get(s, "opsstack_db_collector_age_seconds", collector="tables")
        assert age1 > 0 and _get(s, "opsstack_db_collector_age_seconds", collector="activity") == 0
        wait_for(lambda: _get(_scrape(slow), "opsstack_db_collector_age_seconds", collector="tables") > age1,
                 what="the age of the cached tables grows")
        assert _get(_scrape(slow), "opsstack_db_table_rows_inserted_total", datname=name, relname="t") == 10
        # every 200 ms: the background thread re-reads the table without a scrape asking for it
        wait_for(lambda: _get(_scrape(fast), "opsstack_db_table_rows_inserted_total", datname=name, relname="t") == 25,
                 what="the background refresh sees the new rows")
        s = _scrape(fast)
        assert _get(s, "opsstack_db_collector_success", collector="tables") == 1
        assert _get(s, "opsstack_db_collector_interval_seconds", collector="tables") == 0.2
        text = _text_has_one_family_each(fast)
        assert f'opsstack_db_table_rows_inserted_total{{server="main",datname="{name}",schemaname="public",relname="t"}} 25' in text
    finally:
        slow.close()
        fast.close()


def test_the_budget_caps_table_series_and_sums_the_rest_into_other(scratch):
    name, url = scratch
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("""do $$ begin for i in 1 .. 300 loop
                       execute format('create table t%s (id int primary key, v int)', i);
                       execute format('insert into t%s select g, g from generate_series(1, %s) g', i, i);
                     end loop; end $$""")
        c.execute("analyze")
        # activity on a few small tables: the top by activity gets them in, not only the largest
        for i in (3, 5, 7):
            for _ in range(500):  # more than the inserts of the largest table
                c.execute(f"select count(*) from t{i}").fetchall()
    with psycopg.connect(url, autocommit=True) as c:  # the statistics of the one above are flushed
        totals = c.execute("select sum(n_live_tup), count(*) from pg_stat_user_tables").fetchone()
    col = _collector(url, table_series_budget=300)
    try:
        s = _scrape(col)
        with psycopg.connect(url, autocommit=True) as c:
            seq = c.execute("select sum(seq_scan) from pg_stat_user_tables").fetchone()[0]
    finally:
        col.close()
    per = [(lab, v) for n, samples in s.items() for lab, v in samples
           if n.startswith(("opsstack_db_table_", "opsstack_db_index_")) and lab.get("datname") == name]
    assert 100 < len(per) <= 300
    live = {lab["relname"]: v for lab, v in s["opsstack_db_table_live_rows"] if lab["datname"] == name}
    assert OTHER in live and "t300" in live and {"t3", "t5", "t7"} <= set(live)
    # the exported tables and the __other__ bucket hold every row, every scan
    assert sum(live.values()) == totals[0]
    assert sum(v for lab, v in s["opsstack_db_table_seq_scans_total"] if lab["datname"] == name) == seq
    assert _get(s, "opsstack_db_tables_other", datname=name) == totals[1] - (len(live) - 1)
    assert _get(s, "opsstack_db_tables", datname=name) == 300
    assert _get(s, "opsstack_db_index_size_bytes", datname=name, relname=OTHER, indexrelname=OTHER) > 0


def test_partitions_roll_up_to_their_parent(scratch):
    name, url = scratch
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create table logs (id bigint, day date not null) partition by range (day)")
        c.execute("create index logs_day_idx on logs (day)")
        c.execute("""do $$ begin for i in 0 .. 29 loop
                       execute format('create table %I partition of logs for values from (%L) to (%L)',
                                      'logs_' || i, date '2026-01-01' + i, date '2026-01-01' + i + 1);
                     end loop; end $$""")
        c.execute("insert into logs select g, date '2026-01-01' + (g % 30) from generate_series(1, 600) g")
        c.execute("create table plain (id int primary key)")
        c.execute("analyze")
    col = _collector(url)
    try:
        s = _scrape(col)
    finally:
        col.close()
    tables = {lab["relname"]: v for lab, v in s["opsstack_db_table_live_rows"] if lab["datname"] == name}
    assert set(tables) == {"logs", "plain"}
    assert _get(s, "opsstack_db_table_rows_inserted_total", datname=name, relname="logs") == 600
    with psycopg.connect(url) as c:
        assert tables["logs"] == c.execute("select sum(n_live_tup) from pg_stat_user_tables "
                                           "where relname like 'logs%'").fetchone()[0]
    idx = {(lab["relname"], lab["indexrelname"]) for lab, _ in s["opsstack_db_index_scans_total"]
           if lab["datname"] == name}
    assert idx == {("logs", "logs_day_idx"), ("plain", "plain_pkey")}
    assert _get(s, "opsstack_db_tables_other", datname=name) == 0
    assert _get(s, "opsstack_db_partitions", datname=name, table="public.logs") == 30
    # the partitioned table's size and rows: the sums of what was read of its partitions
    assert _get(s, "opsstack_db_partitioned_table_live_rows", datname=name, table="public.logs") == tables["logs"]
    assert _get(s, "opsstack_db_partitioned_table_size_bytes", datname=name, table="public.logs") >= \
        _get(s, "opsstack_db_table_size_bytes", datname=name, relname="logs") > 0


def test_a_failing_background_collector_keeps_its_last_result_and_says_so(scratch):
    name, url = scratch
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create table t (id int primary key)")
        c.execute("insert into t select generate_series(1, 7)")
        c.execute("analyze t")
    # sizes read in every refresh: pg_table_size waits for the lock below (and times out)
    col = _collector(url, tables_interval="200ms", sizes_interval=0, statement_timeout="300ms")
    locker = psycopg.connect(url)
    try:
        s = _scrape(col)
        assert _get(s, "opsstack_db_collector_success", collector="tables") == 1
        locker.execute("lock table t in access exclusive mode")
        s = wait_for(lambda: (lambda s: s if _get(s, "opsstack_db_collector_success", collector="tables") == 0
                              else None)(_scrape(col)), what="the tables refresh fails")
        # the last good result is still served, marked failed, its age growing past the interval
        assert _get(s, "opsstack_db_table_rows_inserted_total", datname=name, relname="t") == 7
        assert _get(s, "opsstack_db_query_errors_total", query="tables") >= 1
        assert _get(s, "opsstack_db_collector_success", collector="indexes") == 1
        wait_for(lambda: _get(_scrape(col), "opsstack_db_collector_age_seconds", collector="tables") > 1.0,
                 what="the age of the failing collector's result grows")
        locker.rollback()
        wait_for(lambda: _get(_scrape(col), "opsstack_db_collector_success", collector="tables") == 1,
                 what="the tables refresh succeeds again")
        assert _get(_scrape(col), "opsstack_db_collector_age_seconds", collector="tables") < 60
    finally:
        locker.close()
        col.close()


def test_served_bytes_escape_hostile_table_names_in_the_cached_part(scratch):
    """The background part is served as kept bytes: label values (a table name with a quote,
    a backslash and a newline) stay escaped and parse back to the name, scrape after scrape."""
    name, url = scratch
    hostile = 'we"ird\\na\nme'
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.SQL("create table {} (id int primary key)").format(sql.Identifier(hostile)))
        c.execute(sql.SQL("insert into {} select generate_series(1, 3)").format(sql.Identifier(hostile)))
    col = _collector(url, tables_interval="1h")
    try:
        for _ in range(2):  # the first scrape reads the tables itself, the second serves them
            body = col.scrape_bytes()
            assert isinstance(body, bytes)
            got = {}
            for fam in text_string_to_metric_families(body.decode()):
                for s in fam.samples:
                    got.setdefault(s.name, []).append((s.labels, s.value))
            assert _get(got, "opsstack_db_table_rows_inserted_total", datname=name, relname=hostile) == 3
    finally:
        col.close()
