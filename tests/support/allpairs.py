"""All-pairs (pairwise) combinations: rows in which every value of every factor meets every
value of every other factor at least once, in far fewer rows than the full product.

Deterministic (same factors, same rows, same order: a failure replays), no randomness.
In-parameter-order construction: the full product of the two largest factors, then each
further factor is added to the existing rows (each row takes the value that covers the most
pairs not covered yet) and the pairs still missing get rows of their own.
"""
from __future__ import annotations

from itertools import combinations, product
from typing import Any, Sequence


def all_pairs(*factors: Sequence[Any]) -> list[tuple]:
    """Rows (one value per factor, in the factors' order) covering every pair of values of
    every two factors. With two factors or fewer it is the full product."""
    sizes = [len(f) for f in factors]
    if any(n == 0 for n in sizes):
        return []
    if len(factors) <= 2:
        return [tuple(r) for r in product(*factors)]
    # build on the largest factors first (stable for equal sizes)
    order = sorted(range(len(factors)), key=lambda i: -sizes[i])
    a, b = order[0], order[1]
    rows: list[list[int | None]] = [[None] * len(factors) for _ in range(sizes[a] * sizes[b])]
    for row, (x, y) in zip(rows, product(range(sizes[a]), range(sizes[b]))):
        row[a], row[b] = x, y
    done = [a, b]
    for k in order[2:]:
        missing = {(j, v, w) for j in done for v in range(sizes[j]) for w in range(sizes[k])}
        # horizontal: give each existing row the value of k that covers the most missing pairs
        # (on a tie the value used least so far, then the first)
        used = [0] * sizes[k]
        for row in rows:
            best, score = 0, None
            for w in range(sizes[k]):
                s = (sum((j, row[j], w) in missing for j in done if row[j] is not None), -used[w])
                if score is None or s > score:
                    best, score = w, s
            row[k] = best
            used[best] += 1
            for j in done:
                missing.discard((j, row[j], best))
        # vertical: rows for the pairs still missing (a free slot of an added row if there is one)
        added: list[list[int | None]] = []
        for j, v, w in sorted(missing):
            for row in added:
                if row[k] == w and row[j] in (None, v):
                    row[j] = v
                    break
            else:
                row = [None] * len(factors)
                row[j], row[k] = v, w
                added.append(row)
        rows.extend(added)
        done.append(k)
    return [tuple(factors[i][0 if x is None else x] for i, x in enumerate(row)) for row in rows]


def uncovered_pairs(rows: Sequence[Sequence[Any]], *factors: Sequence[Any]) -> list[tuple]:
    """(factor i, value, factor j, value) of every pair no row covers (by position in the
    factor, so unhashable or equal-looking values are told apart)."""
    index = [{id(v): n for n, v in enumerate(f)} for f in factors]
    seen = {(i, index[i][id(r[i])], j, index[j][id(r[j])]) for r in rows
            for i, j in combinations(range(len(factors)), 2)}
    return [(i, factors[i][x], j, factors[j][y]) for i, j in combinations(range(len(factors)), 2)
            for x in range(len(factors[i])) for y in range(len(factors[j])) if (i, x, j, y) not in seen]
