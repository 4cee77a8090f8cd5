"""Top-N selection: seen items excluded, best score first, ties to the smaller item, short rows."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scoring.topn import candidates_for, coherent_first, mask_seen, needs_more_ratings, top_n


def brute_force(scores: np.ndarray, seen: list[list[int]], n: int) -> list[list[int]]:
    out = []
    for row, excluded in zip(scores, seen):
        pool = [j for j in range(len(row)) if j not in excluded]
        out.append(sorted(pool, key=lambda j: (-row[j], j))[:n])
    return out


def csr(seen: list[list[int]]):
    indptr = np.r_[0, np.cumsum([len(s) for s in seen])]
    return indptr, np.array([j for s in seen for j in s], dtype=np.int64)


def selected(scores, seen, n, block=4):
    items, valid = top_n(mask_seen(scores, *csr(seen)), n, block=block)
    return [row[ok].tolist() for row, ok in zip(items, valid)]


def test_hand_case_with_ties_and_seen_items():
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.9],
                       [0.3, 0.3, 0.3, 0.3, 0.3]], np.float32)
    seen = [[1], [0, 4]]
    assert selected(scores, seen, 2) == [[2, 4], [1, 2]]
    assert selected(scores, seen, 10) == [[2, 4, 0, 3], [1, 2, 3]]


def test_user_who_has_seen_everything_gets_nothing():
    scores = np.ones((1, 3), np.float32)
    assert selected(scores, [[0, 1, 2]], 2) == [[]]


def test_input_scores_are_not_modified_unless_asked():
    scores = np.array([[0.1, 0.2]], np.float32)
    mask_seen(scores, np.array([0, 1]), np.array([1]))
    assert scores.tolist() == [[np.float32(0.1), np.float32(0.2)]]
    assert mask_seen(scores, np.array([0, 1]), np.array([1]), copy=False) is scores
    assert scores.tolist() == [[np.float32(0.1), -np.inf]]


def test_catalogue_sized_rows_match_a_full_sort():
    # Real-sized rows with a partial last block, many exact ties and heavy users.
    rng = np.random.default_rng(7)
    scores = np.round(rng.standard_normal((40, 1_000)), 1).astype(np.float32)
    seen = [sorted(rng.choice(1_000, size=rng.integers(0, 995), replace=False).tolist()) for _ in range(40)]
    for block in (1, 7, 64, 2_000):
        assert selected(scores, seen, 10, block) == brute_force(scores, seen, 10)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rows=st.integers(1, 6), cols=st.integers(1, 12), n=st.integers(1, 14),
       block=st.integers(1, 5))
def test_matches_a_full_sort(data, rows, cols, n, block):
    # Few distinct values make ties common, the case argpartition gets wrong on its own.
    values = st.sampled_from([0.0, 0.25, 0.5, 1.0, -3.0, 7.5])
    scores = data.draw(arrays(np.float32, (rows, cols), elements=values))
    seen = [sorted(data.draw(st.sets(st.integers(0, cols - 1), max_size=cols))) for _ in range(rows)]
    assert selected(scores, seen, n, block) == brute_force(scores, seen, n)


def test_the_coherence_rule_puts_items_predicted_liked_first_in_logit_order():
    # Candidates best logit first; ratings below the midpoint (3) go after every liked one.
    candidates = np.array([[7, 3, 5, 1, 9], [2, 4, 6, 8, 0]])
    valid = np.array([[True] * 5, [True, True, True, False, False]])
    ratings = np.array([[2.9, 4.0, 3.0, 1.0, 3.5], [1.0, 2.0, 4.5, 5.0, 5.0]], np.float32)
    items, ok, picked = coherent_first(candidates, valid, ratings, 3.0, 4)
    assert items.tolist() == [[3, 5, 9, 7], [6, 2, 4, 8]]
    assert ok.tolist() == [[True] * 4, [True, True, True, False]]
    assert np.take_along_axis(candidates, picked, 1).tolist() == items.tolist()
    # No midpoint (no rating scale to speak of): the logit order, cut to n.
    items, ok, _ = coherent_first(candidates, valid, ratings, None, 3)
    assert items.tolist() == [[7, 3, 5], [2, 4, 6]]


def test_the_rule_picks_from_twice_as_many_candidates_and_rates_past_n_only_where_it_must():
    assert [candidates_for(n) for n in (1, 10)] == [3, 30]
    ratings = np.array([[4.0, 3.5, np.nan, np.nan], [4.0, 2.0, np.nan, np.nan], [4.0, 5.0, 1.0, np.nan]], np.float32)
    valid = np.array([[True] * 4, [True] * 4, [True, True, True, False]])
    assert needs_more_ratings(ratings, valid, 3.0, 2).tolist() == [False, True, False]
    assert not needs_more_ratings(ratings, valid, None, 2).any()
    # A row whose best n are all liked keeps them whatever its unrated candidates would be.
    items, _, _ = coherent_first(np.array([[5, 6, 7, 8]]), valid[:1], ratings[:1], 3.0, 2)
    assert items.tolist() == [[5, 6]]


@pytest.mark.parametrize("n_items", [300, 8_000])
@pytest.mark.parametrize("share", [0.02, 0.1, 0.3, 0.6, 0.9, 0.99])
def test_top_eligible_equals_top_n_with_the_rest_at_minus_infinity(share, n_items):
    from scoring.topn import top_eligible
    rng = np.random.default_rng(int(share * 100))
    scores = np.round(rng.normal(size=(40, n_items)), 1).astype(np.float32)   # many ties
    scores[rng.random(scores.shape) < 0.3] = -np.inf                         # seen items
    scores[:3, :n_items - 10] = -np.inf                                      # rows with few unseen items
    eligible = rng.random(n_items) < share
    for n in (1, 5, 30):
        expected = top_n(np.where(eligible, scores, -np.inf), n)
        items, valid = top_eligible(scores.copy(), n, eligible)
        assert items.shape == expected[0].shape
        np.testing.assert_array_equal(valid, expected[1])
        np.testing.assert_array_equal(np.where(valid, items, -1), np.where(expected[1], expected[0], -1))
    assert all(np.array_equal(a, b) for a, b in zip(top_eligible(scores, 5, None), top_n(scores, 5)))
