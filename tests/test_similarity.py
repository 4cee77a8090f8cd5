"""The similar-items search: the shipped graphs are what ``build_graph`` makes, and its lists are
the brute-force cosine top-K with the item itself left out, ties to the smaller index, the rules'
mask applied."""
from __future__ import annotations

import numpy as np
import pytest

from scoring.similarity import GRAPH_FILES, SimilarItems, build_graph, graph_bytes


@pytest.mark.parametrize("with_penalty", sorted(GRAPH_FILES))
def test_the_shipped_graphs_are_what_build_graph_makes(with_penalty):
    assert graph_bytes(with_penalty) == build_graph(with_penalty)


def brute_force(vectors, k, penalty=None):
    scores = vectors @ vectors.T + (0 if penalty is None else penalty[None, :])
    np.fill_diagonal(scores, -np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(len(vectors)), scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), order


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_lists_equal_brute_force_with_ties_and_duplicates():
    rng = np.random.default_rng(0)
    rows = rng.integers(-2, 3, size=(60, 3)).astype(np.float32)
    rows[:, 0] += 3   # never a zero row; few distinct directions, so many similarities tie
    rows[5] = rows[7] = rows[9] = [5, 4, -3]   # exact duplicates: similarity 1 with each other, as with itself
    vectors = unit(rows)
    search = SimilarItems.open(vectors, None, threads=1)
    values, items = search.top(np.arange(60), vectors, 6)
    expected_values, expected_items = brute_force(vectors, 6)
    np.testing.assert_allclose(values, expected_values, rtol=0, atol=1e-6)
    assert (items != np.arange(60)[:, None]).all()
    # ties go to the smaller index; float rounding may order a few exact ties otherwise
    assert (items == expected_items).mean() > 0.9
    assert set(items[5, :2]) == {7, 9}


def test_the_mask_leaves_out_ineligible_items_and_short_catalogues_give_short_lists():
    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(8, 4)))
    penalty = np.zeros(8, np.float32)
    penalty[[2, 3, 4]] = -np.inf
    values, items = SimilarItems.open(vectors, penalty, threads=1).top(np.arange(8), vectors, 20)
    assert values.shape == (8, 7)   # at most every other item
    finite = np.isfinite(values)
    assert finite.sum(axis=1).tolist() == [4, 4, 5, 5, 5, 4, 4, 4]   # 5 eligible, less the item itself
    assert not np.isin(items[finite], [2, 3, 4]).any()
    expected_values, _ = brute_force(vectors, 7, penalty)
    np.testing.assert_allclose(values[finite], expected_values[finite], rtol=0, atol=1e-6)
