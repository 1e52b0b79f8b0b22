"""The series budget of per-table and per-index facts: partitions rolled up, top tables kept,
the rest summed into one ``__other__`` table (and one ``__other__`` index).

What the `indexes` and `tables` collectors read of one database (one series per table,
partition and index) goes through `apply()` before it is served, so that the cost of a scrape
does not grow with the number of tables:

1. partitions are rolled up to their root partitioned table (``roots``: (schema, partition) ->
   (schema, root)), and their indexes to the root's index (``index_roots``); counters, row
   counts and sizes are summed, last vacuum/analyze times and xid ages take the maximum, the
   index usage ratio and the heavy seq-scan flag are recomputed from the sums, an index is
   unused only when every member is;
2. the tables so obtained are ranked twice, by activity (scans + rows written since the stats
   reset) and by size (table + indexes), and taken alternately from both rankings while their
   series (the table's and its indexes') fit in ``budget``;
3. the rest is summed (same rules) into ``schemaname="__other__", relname="__other__"`` and
   ``indexrelname="__other__"``; `opsstack_db_tables_other` says how many tables it holds.
"""
from __future__ import annotations

from exporters.db import logic
from exporters.db.metrics import METRICS, Families, T, I

OTHER = "__other__"

_MAX = {"opsstack_db_table_last_vacuum_timestamp_seconds", "opsstack_db_table_last_analyze_timestamp_seconds",
        "opsstack_db_table_xid_age"}
_MIN = {"opsstack_db_index_unused"}
_DERIVED = {"opsstack_db_table_index_usage_ratio", "opsstack_db_table_heavy_seq_scan"}
_ACTIVITY = ("opsstack_db_table_seq_scans_total", "opsstack_db_table_index_scans_total",
             "opsstack_db_table_rows_inserted_total", "opsstack_db_table_rows_updated_total",
             "opsstack_db_table_rows_deleted_total")
_SIZE = ("opsstack_db_table_size_bytes", "opsstack_db_table_indexes_size_bytes")
# series the other bucket may need beyond the tables kept (one table, one index)
RESERVE = 40


def _is_table(name: str) -> bool:
    return METRICS[name][2][:len(T)] == T and METRICS[name][2][:len(I)] != I


def _is_index(name: str) -> bool:
    return METRICS[name][2][:len(I)] == I


class _Entry:
    """The series of one table (or index) after rollup: family -> {extra labels: value}."""

    __slots__ = ("fams", "members")

    def __init__(self):
        self.fams: dict[str, dict[tuple, float]] = {}
        self.members = 0

    def add(self, name: str, extra: tuple, value) -> None:
        d = self.fams.get(name)
        if d is None:
            d = self.fams[name] = {}
        old = d.get(extra)
        if old is None:
            d[extra] = value
        elif name in _MAX:
            d[extra] = max(old, value)
        elif name in _MIN:
            d[extra] = min(old, value)
        else:
            d[extra] = old + value

    def merge(self, other: "_Entry") -> None:
        for name, d in other.fams.items():
            for extra, v in d.items():
                self.add(name, extra, v)
        self.members += other.members

    def series(self) -> int:
        return sum(len(d) for d in self.fams.values())

    def value(self, name: str) -> float:
        return sum(self.fams.get(name, {}).values())


def _recompute(e: _Entry, heavy_min: int) -> None:
    """Ratios and flags of a group of several tables, from its summed counters."""
    if e.members <= 1:
        return
    seq, idx = e.value("opsstack_db_table_seq_scans_total"), e.value("opsstack_db_table_index_scans_total")
    if "opsstack_db_table_index_usage_ratio" in e.fams:
        e.fams["opsstack_db_table_index_usage_ratio"] = {(): logic.index_usage_ratio(seq, idx)}
    if "opsstack_db_table_heavy_seq_scan" in e.fams:
        rows = e.value("opsstack_db_table_seq_rows_read_total")
        e.fams["opsstack_db_table_heavy_seq_scan"] = {(): 1 if logic.heavy_seq_scan(seq, rows, idx, heavy_min) else 0}


_KIND: dict[str, str | None] = {n: ("i" if _is_index(n) else "t" if _is_table(n) else None) for n in METRICS}
_ACTIVITY_SET, _SIZE_SET = frozenset(_ACTIVITY), frozenset(_SIZE)
# how two values of a family combine: None = summed
_OP = {n: (max if n in _MAX else min if n in _MIN else None) for n in METRICS}


def _rollup(samples: list, index: bool, index_roots: dict) -> tuple[_Entry | None, dict[str, _Entry]]:
    """The samples of one key combined: (table entry, index name -> entry)."""
    table: _Entry | None = None
    per: dict[str, _Entry] = {}
    for name, labels, v in samples:
        if index:
            iname = index_roots.get((labels[2], labels[4]), labels[4])
            e = per.get(iname)
            if e is None:
                e = per[iname] = _Entry()
            e.add(name, tuple(labels[5:]), v)
        else:
            if table is None:
                table = _Entry()
            table.add(name, tuple(labels[4:]), v)
    return table, per


def apply(idx: Families | None, tab: Families | None, budget: int, heavy_min: int,
          roots: dict | None = None, index_roots: dict | None = None) -> tuple[Families, Families]:
    """(indexes, tables) of one database within ``budget`` series (see the module's doc)."""
    roots = roots or {}
    index_roots = index_roots or {}
    out_idx, out_tab = Families(), Families()
    t_samples: dict[tuple, list] = {}
    i_samples: dict[tuple, list] = {}
    members: dict[tuple, set] = {}    # rolled-up keys: their partitions
    rolled_idx: set = set()           # keys with partitions' indexes
    act: dict[tuple, float] = {}
    size: dict[tuple, float] = {}
    base: list | None = None
    for src, dst, index in ((tab, out_tab, False), (idx, out_idx, True)):
        if src is None:
            continue
        bucket = i_samples if index else t_samples
        for name in src.names():
            kind = _KIND.get(name)
            samples = src.samples(name)
            if kind is None:
                for labels, v in samples:
                    dst.add(name, labels, v)
                continue
            score = act if name in _ACTIVITY_SET else size if name in _SIZE_SET else None
            for labels, v in samples:
                sr = (labels[2], labels[3])
                key = roots.get(sr, sr) if roots else sr
                lst = bucket.get(key)
                if lst is None:
                    lst = bucket[key] = []
                lst.append((name, labels, v))
                if score is not None:
                    score[key] = score.get(key, 0.0) + (v or 0)
                if roots and key is not sr:
                    if index:
                        rolled_idx.add(key)
                    else:
                        m = members.get(key)
                        if m is None:
                            m = members[key] = set()
                        m.add(sr)
            if base is None and samples:
                base = list(samples[0][0][:2])
    if base is None:
        return out_idx, out_tab
    keys = set(t_samples) | set(i_samples)
    rolled: dict[tuple, tuple] = {}  # key -> (table entry, index entries) for partitioned tables
    for k in set(members) | rolled_idx:
        table, _ = _rollup(t_samples.get(k, []), False, index_roots)
        _, per = _rollup(i_samples.get(k, []), True, index_roots)
        if table is not None:
            table.members = len(members.get(k, ())) or 1
            _recompute(table, heavy_min)
        rolled[k] = (table, per)

    def cost(k) -> int:
        r = rolled.get(k)
        if r is not None:
            return (r[0].series() if r[0] else 0) + sum(e.series() for e in r[1].values())
        return len(t_samples.get(k, ())) + len(i_samples.get(k, ()))

    total = sum(cost(k) for k in keys)
    if total <= budget:
        kept = sorted(keys)
    else:
        by_activity = sorted(keys, key=lambda k: (-act.get(k, 0.0), k))
        by_size = sorted(keys, key=lambda k: (-size.get(k, 0.0), k))
        kept, chosen = [], set()
        left = budget - RESERVE
        ia = isz = turn = 0
        while ia < len(by_activity) or isz < len(by_size):
            if (turn % 2 == 0 and ia < len(by_activity)) or isz >= len(by_size):
                k = by_activity[ia]
                ia += 1
            else:
                k = by_size[isz]
                isz += 1
            turn += 1
            if k in chosen:
                continue
            c = cost(k)
            if c <= left:
                chosen.add(k)
                kept.append(k)
                left -= c
            elif left < 10:
                break
    kept_set = set(kept)
    t_out, i_out = out_tab._s, out_idx._s  # samples are valid (added through Families.add)
    for k in kept:
        r = rolled.get(k)
        if r is None:  # a plain table: its series as they are
            for dst, src_list in ((t_out, t_samples.get(k, ())), (i_out, i_samples.get(k, ()))):
                for name, labels, v in src_list:
                    lst = dst.get(name)
                    if lst is None:
                        lst = dst[name] = []
                    lst.append((labels, v))
            continue
        table, per = r
        if table is not None:
            for name, d in table.fams.items():
                for extra, v in d.items():
                    out_tab.add(name, base + [k[0], k[1], *extra], v)
        for iname, e in per.items():
            for name, d in e.fams.items():
                for extra, v in d.items():
                    out_idx.add(name, base + [k[0], k[1], iname, *extra], v)
    other_t, other_i = _Entry(), _Entry()
    n_other = 0
    for k in keys:
        if k in kept_set:
            continue
        if k in t_samples:
            n_other += 1
            other_t.members += 1
        for entry, src_list, cut in ((other_t, t_samples.get(k, ()), 4), (other_i, i_samples.get(k, ()), 5)):
            efams = entry.fams
            for name, labels, v in src_list:  # _Entry.add, inlined (the bulk of a big database)
                d = efams.get(name)
                if d is None:
                    d = efams[name] = {}
                extra = tuple(labels[cut:]) if len(labels) > cut else ()
                old = d.get(extra)
                if old is None:
                    d[extra] = v
                else:
                    op = _OP[name]
                    d[extra] = old + v if op is None else op(old, v)
    _recompute(other_t, heavy_min)
    for name, d in other_t.fams.items():
        for extra, v in d.items():
            out_tab.add(name, base + [OTHER, OTHER, *extra], v)
    for name, d in other_i.fams.items():
        for extra, v in d.items():
            out_idx.add(name, base + [OTHER, OTHER, OTHER, *extra], v)
    if tab is not None:
        out_tab.add("opsstack_db_tables_other", base, n_other)
    return out_idx, out_tab
