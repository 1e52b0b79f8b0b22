"""The series budget of the database exporter (exporters/db/budget.py), without a server."""
from __future__ import annotations

from exporters.db.budget import OTHER, apply
from exporters.db.metrics import Families


def _table(f: Families, rel: str, seq=0, idx=0, ins=0, live=0, size=0.0, vacuum=None, xid=0, seq_rows=0):
    lab = ["main", "app", "public", rel]
    f.add("opsstack_db_table_seq_scans_total", lab, seq)
    f.add("opsstack_db_table_seq_rows_read_total", lab, seq_rows)
    f.add("opsstack_db_table_index_scans_total", lab, idx)
    f.add("opsstack_db_table_index_usage_ratio", lab, idx / (seq + idx) if seq + idx else 0)
    f.add("opsstack_db_table_heavy_seq_scan", lab, 0)
    f.add("opsstack_db_table_rows_inserted_total", lab, ins)
    f.add("opsstack_db_table_live_rows", lab, live)
    f.add("opsstack_db_table_last_vacuum_timestamp_seconds", lab + ["auto"], vacuum)
    f.add("opsstack_db_table_blocks_hit_total", lab + ["heap"], 10)
    f.add("opsstack_db_table_size_bytes", lab, size)
    f.add("opsstack_db_table_xid_age", lab, xid)


def _index(f: Families, rel: str, name: str, scans=0, size=8192.0, unused=0):
    lab = ["main", "app", "public", rel, name]
    f.add("opsstack_db_index_scans_total", lab, scans)
    f.add("opsstack_db_index_size_bytes", lab, size)
    f.add("opsstack_db_index_unused", lab, unused)


def _samples(f: Families, name: str) -> dict:
    return {tuple(lab[2:]): v for lab, v in f.samples(name)}


def test_within_the_budget_nothing_changes_but_the_count_of_other():
    tab, idx = Families(), Families()
    _table(tab, "a", seq=3, live=5)
    _index(idx, "a", "a_pkey", scans=2)
    tab.add("opsstack_db_tables", ["main", "app"], 1)
    i, t = apply(idx, tab, budget=2000, heavy_min=100)
    assert _samples(t, "opsstack_db_table_live_rows") == {("public", "a"): 5}
    assert _samples(i, "opsstack_db_index_scans_total") == {("public", "a", "a_pkey"): 2}
    assert t.samples("opsstack_db_tables") == [(["main", "app"], 1)]
    assert t.samples("opsstack_db_tables_other") == [(["main", "app"], 0)]


def test_partitions_roll_up_to_their_root_with_the_rules_of_each_fact():
    tab, idx = Families(), Families()
    _table(tab, "logs_1", seq=10, seq_rows=500_000, idx=0, ins=100, live=100, size=1000.0, vacuum=5.0, xid=7)
    _table(tab, "logs_2", seq=10, seq_rows=500_000, idx=5, ins=50, live=50, size=2000.0, vacuum=9.0, xid=3)
    _index(idx, "logs_1", "logs_1_day_idx", scans=0, unused=1)
    _index(idx, "logs_2", "logs_2_day_idx", scans=5, unused=0)
    roots = {("public", "logs_1"): ("public", "logs"), ("public", "logs_2"): ("public", "logs")}
    iroots = {("public", "logs_1_day_idx"): "logs_day_idx", ("public", "logs_2_day_idx"): "logs_day_idx"}
    i, t = apply(idx, tab, budget=2000, heavy_min=100_000, roots=roots, index_roots=iroots)
    key = ("public", "logs")
    assert _samples(t, "opsstack_db_table_live_rows") == {key: 150}
    assert _samples(t, "opsstack_db_table_size_bytes") == {key: 3000.0}
    assert _samples(t, "opsstack_db_table_last_vacuum_timestamp_seconds") == {key + ("auto",): 9.0}
    assert _samples(t, "opsstack_db_table_xid_age") == {key: 7}
    assert _samples(t, "opsstack_db_table_blocks_hit_total") == {key + ("heap",): 20}
    assert _samples(t, "opsstack_db_table_index_usage_ratio") == {key: 0.2}  # 5 / (20 + 5), recomputed
    assert _samples(t, "opsstack_db_table_heavy_seq_scan") == {key: 1}  # 1M rows read by seq scans
    assert _samples(i, "opsstack_db_index_scans_total") == {key + ("logs_day_idx",): 5}
    assert _samples(i, "opsstack_db_index_unused") == {key + ("logs_day_idx",): 0}  # one member is used


def test_the_budget_keeps_the_top_tables_by_activity_and_by_size_and_sums_the_rest():
    tab, idx = Families(), Families()
    for n in range(100):
        _table(tab, f"t{n}", ins=n, live=n, size=float(n))
        _index(idx, f"t{n}", f"t{n}_pkey", scans=1)
    _table(tab, "busy", seq=10_000, live=1)        # small but the most active
    _table(tab, "big", size=1e12, live=2)          # idle but the largest
    i, t = apply(idx, tab, budget=200, heavy_min=100)
    live = _samples(t, "opsstack_db_table_live_rows")
    kept = {k[1] for k in live} - {OTHER}
    assert {"busy", "big"} <= kept
    series = sum(len(t.samples(n)) for n in t.names() if n.startswith("opsstack_db_table_")) + \
        sum(len(i.samples(n)) for n in i.names())
    assert series <= 200
    # the sums over the database are complete: kept tables + __other__
    assert sum(live.values()) == sum(range(100)) + 3
    assert sum(_samples(i, "opsstack_db_index_scans_total").values()) == 100
    assert (OTHER, OTHER, OTHER) in _samples(i, "opsstack_db_index_scans_total")
    assert t.samples("opsstack_db_tables_other") == [(["main", "app"], 102 - len(kept))]


def test_indexes_alone_when_the_tables_read_failed():
    idx = Families()
    _index(idx, "a", "a_pkey", scans=2)
    i, t = apply(idx, None, budget=2000, heavy_min=100)
    assert _samples(i, "opsstack_db_index_scans_total") == {("public", "a", "a_pkey"): 2}
    assert not t.samples("opsstack_db_tables_other")
