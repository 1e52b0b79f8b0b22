"""tests/support/allpairs.py: every pair of values covered, deterministic, far fewer rows."""
from __future__ import annotations

from itertools import combinations, product

import pytest

from tests.support.allpairs import all_pairs, uncovered_pairs

SHAPES = [(36, 12, 10, 2), (3, 3, 3, 3), (2, 2, 2, 2, 2, 2, 2), (5, 1, 4), (7, 7), (1, 1, 1), (4, 9, 2, 6, 3)]


def _factors(shape):
    return [[f"f{i}v{j}" for j in range(n)] for i, n in enumerate(shape)]


def _pairs(rows, factors):
    """Every (factor, value, factor, value) the rows cover, computed independently of the module."""
    return {(i, r[i], j, r[j]) for r in rows for i, j in combinations(range(len(factors)), 2)}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_pair_of_every_two_factors_is_covered(shape):
    factors = _factors(shape)
    rows = all_pairs(*factors)
    want = {(i, x, j, y) for i, j in combinations(range(len(factors)), 2)
            for x in factors[i] for y in factors[j]}
    assert want <= _pairs(rows, factors)
    assert uncovered_pairs(rows, *factors) == []
    assert all(len(r) == len(factors) and all(r[i] in factors[i] for i in range(len(factors))) for r in rows)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rows_are_few_and_the_same_every_time(shape):
    factors = _factors(shape)
    rows = all_pairs(*factors)
    assert rows == all_pairs(*factors)
    big = sorted(shape, reverse=True)
    assert len(rows) >= big[0] * (big[1] if len(big) > 1 else 1)   # no pairwise set can be smaller
    full = len(list(product(*factors)))
    assert len(rows) <= full
    if len(shape) > 2 and full > 100:
        assert len(rows) <= full // 4, (len(rows), full)


def test_the_receiver_fuzz_shape_needs_only_the_largest_pair_product():
    """36 routes x 12 path parts x 10 bodies x 2 query strings: 432 rows instead of 8640."""
    assert len(all_pairs(*_factors((36, 12, 10, 2)))) == 36 * 12


def test_uncovered_pairs_names_what_is_missing():
    factors = [["a", "b"], [1, 2], ["x", "y"]]
    rows = [("a", 1, "x"), ("b", 2, "y")]
    missing = uncovered_pairs(rows, *factors)
    assert (0, "a", 1, 2) in missing and (1, 1, 2, "y") in missing and (0, "a", 1, 1) not in missing


def test_an_empty_factor_gives_no_rows():
    assert all_pairs([1, 2], [], [3]) == []
