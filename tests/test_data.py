"""Vocabulary round trips, the split rule, and the LSTM's windows on hand-checkable cases."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.config import RunConfig
from export.data.dataset import Interactions, Vocabulary
from export.data.loading import build_dataset
from contract.bundle_format import pair_windows
from export.data.sequences import latest_contexts, latest_history, preceding_contexts
from export.data.split import split_frame
from export.data.synthetic import generate_ratings
from contract.errors import DataError


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_vocabulary_round_trip_raw_index_raw():
    f = frame([(10, 7, 5, 1), (3, 200, 1, 2), (10, 1, 3, 3)])
    vocab = Vocabulary.from_frame(f)
    assert vocab.user_ids.tolist() == [3, 10] and vocab.item_ids.tolist() == [1, 7, 200]
    assert vocab.user_ids[vocab.user_index(f["user_id"])].tolist() == f["user_id"].tolist()
    assert vocab.item_ids[vocab.item_index(f["item_id"])].tolist() == f["item_id"].tolist()
    with pytest.raises(DataError, match=r"item ids of the training vocabulary: ids \[8\] not in the vocabulary"):
        vocab.item_index(np.array([8]))


def test_split_is_seeded_complete_and_warm():
    ratings = generate_ratings(50, 30, 600, seed=1)
    parts, moved = split_frame(ratings, np.random.default_rng(5), (0.8, 0.1, 0.1))
    again, _ = split_frame(ratings, np.random.default_rng(5), (0.8, 0.1, 0.1))
    assert all(a.equals(b) for a, b in zip(parts, again))
    assert sum(len(p) for p in parts) == len(ratings)
    assert pd.concat(parts).sort_index().equals(ratings)
    train = parts[0]
    for held in parts[1:]:
        assert held["user_id"].isin(train["user_id"]).all() and held["item_id"].isin(train["item_id"]).all()
    assert moved >= 0 and abs(len(parts[2]) - 60) <= moved


def test_explicit_split_drops_cold_start_test_pairs_and_keeps_history_to_train_file():
    train = frame([(1, 1, 5, 1), (1, 2, 4, 2), (2, 1, 3, 3), (2, 2, 2, 4), (3, 1, 1, 5), (3, 2, 5, 6)])
    test = frame([(1, 3, 5, 9), (9, 1, 4, 9), (2, 1, 3, 9)])
    dataset = build_dataset([train, test], RunConfig(), np.random.default_rng(0))
    assert dataset.notes["cold_start_test_dropped"] == 2  # item 3 and user 9 were never trained on
    assert len(dataset.test) == 1
    assert len(dataset.history) == len(train)


def interactions(users, items, stars, times):
    return Interactions(np.array(users), np.array(items), np.array(stars, np.float32), np.array(times))


def every_window(contexts, length, pad):
    return contexts.windows(np.arange(len(contexts)), length, pad)


def test_preceding_windows_hold_the_preceding_items_in_time_order():
    # user 0 rates items 5, 3, 4 at times 10, 5, 5 -> timeline 3, 4 (tie by item), 5
    data = interactions([0, 0, 0, 1], [5, 3, 4, 1], [1, 5, 3, 2], [10, 5, 5, 1])
    w = every_window(preceding_contexts(data, 3), length=3, pad=9)
    assert w.items.tolist() == [[9, 9, 3], [9, 3, 4], [3, 4, 5], [9, 9, 1]]
    assert w.ratings[:, -1].tolist() == [1.0, 0.5, 0.0, 0.25]
    assert w.ratings[2, :2].tolist() == [1.0, 0.5]


def test_latest_context_windows_give_each_rating_its_users_latest_other_ratings():
    # user 0's timeline: 2, 3, 4 (tie by item), 5, 6; user 1 rates item 1 only
    data = interactions([0, 0, 0, 0, 0, 1], [5, 3, 4, 2, 6, 1], [1, 5, 3, 4, 2, 2], [10, 5, 5, 1, 11, 1])
    w = every_window(latest_contexts(data, 3), length=3, pad=9)
    # latest three of user 0: 4, 5, 6; older ratings get the latest two, the latest three the other two
    assert w.items.tolist() == [[5, 6, 2], [5, 6, 3], [5, 6, 4], [4, 6, 5], [4, 5, 6], [9, 9, 1]]
    assert w.ratings[:, -1].tolist() == [0.75, 1.0, 0.5, 0.0, 0.25, 0.25]
    assert w.ratings[3, :2].tolist() == [0.5, 0.25]
    assert w.users.tolist() == [0, 0, 0, 0, 0, 1]
    # the two older ratings share the latest two as their history; each of the latest has its own
    assert len(set(w.histories.tolist())) == 5 and w.histories[0] == w.histories[1]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(1, 5), st.integers(0, 5)),
                min_size=1, max_size=30, unique_by=lambda r: (r[0], r[1])), st.integers(2, 5))
def test_latest_context_windows_match_the_scoring_context(rows, length):
    users, items, stars, times = (list(c) for c in zip(*rows))
    data = interactions(users, items, stars, times)
    w = every_window(latest_contexts(data, length), length=length, pad=99)
    history_items, history_ratings = latest_history(data, n_users=4, length=length - 1, pad=99)
    longer_items, longer_ratings = latest_history(data, n_users=4, length=length, pad=99)
    scored_items, scored_ratings = pair_windows(history_items, history_ratings, w.users, w.items[:, -1])
    for row in range(len(w.users)):
        user, item = w.users[row], w.items[row, -1]
        if item in history_items[user]:   # among the latest: the latest `length` without itself
            keep = longer_items[user] != item
            assert w.items[row, :-1].tolist() == longer_items[user][keep].tolist()
            assert w.ratings[row, :-1].tolist() == longer_ratings[user][keep].tolist()
        else:                              # otherwise exactly the window scoring builds for the pair
            assert w.items[row].tolist() == scored_items[row].tolist()
            assert w.ratings[row, :-1].tolist() == scored_ratings[row, :-1].tolist()
    assert sorted(zip(w.users.tolist(), w.items[:, -1].tolist())) == sorted(zip(users, items))
    for label in np.unique(w.histories):  # one label, one history: user, items and ratings
        rows = w.histories == label
        assert len({(u, *i, *r) for u, i, r in zip(w.users[rows], w.items[rows, :-1].tolist(),
                                                     w.ratings[rows, :-1].tolist())}) == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(1, 5), st.integers(0, 5)),
                min_size=1, max_size=30, unique_by=lambda r: (r[0], r[1])), st.integers(2, 5),
       st.sampled_from([latest_contexts, preceding_contexts]), st.data())
def test_a_batch_gathers_the_windows_and_labels_its_rows_have_in_the_whole(rows, length, contexts_of, data):
    # Training draws each batch's windows from the contexts: the same as cutting them from all windows.
    users, items, stars, times = (list(c) for c in zip(*rows))
    contexts = contexts_of(interactions(users, items, stars, times), length)
    whole = every_window(contexts, length, pad=99)
    batch = np.array(data.draw(st.lists(st.integers(0, len(contexts) - 1), min_size=1, max_size=12)))
    drawn = contexts.windows(batch, length, pad=99)
    for name in ("users", "items", "ratings", "histories"):
        assert getattr(drawn, name).tolist() == getattr(whole, name)[batch].tolist()


def test_latest_history_is_left_padded_and_most_recent():
    data = interactions([0, 0, 0, 1], [5, 3, 4, 1], [1, 5, 3, 2], [10, 5, 5, 1])
    items, ratings = latest_history(data, n_users=3, length=2, pad=9)
    assert items.tolist() == [[4, 5], [9, 1], [9, 9]]
    assert ratings.tolist() == [[0.5, 0.0], [0.0, 0.25], [0.0, 0.0]]
    window_items, window_ratings = pair_windows(items, ratings, np.array([1, 2]), np.array([7, 8]))
    assert window_items.tolist() == [[9, 1, 7], [9, 9, 8]]
    assert window_ratings[:, -1].tolist() == [0.0, 0.0]
