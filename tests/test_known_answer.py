"""The known answer, in the style of ``implicit``'s checker-board test: users and items fall into
planted taste blocks, so every model's top-N must come from the user's own block and its test RMSE
must land near the planted noise, the best any model can do."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.evaluate import logit_matrix, model_lists
from export.config import RunConfig
from export.data.dataset import seen_csr
from export.data.loading import build_dataset
from export.data.synthetic import planted_blocks
from export.models import registry
from export.models.base import unit_vectors
from scoring.similarity import SimilarItems
from export.training.trainer import train_model
from scoring.topn import mask_seen, top_n

pytestmark = pytest.mark.slow

N_USERS, N_ITEMS, N_BLOCKS, NOISE, TOP = 200, 160, 4, 0.3, 5
MARGIN = {"mf": 0.12, "dense": 0.12, "lstm": 0.12, "item_ae": 0.35}
"""How far above the planted noise floor each model's test RMSE may land (measured: MF 0.089, the
dense net 0.032, the LSTM 0.085; the item autoencoder 0.31: its rating is the biases plus an
average of the user's residuals over similar items, which a planted low-rank taste is not)."""
MIN_OWN_SIMILAR = 0.95
"""Share of all similar-items slots that must hold items of the item's own block (measured: 1.0
for every family)."""
MIN_OWN = 0.93
"""Share of all top-N slots that must hold own-block items (measured: 1.0 for mf, dense, lstm; the dense
net's ranking head shares its embeddings with the rating and stops when the rating does, so it is
the one that would fall short first)."""


@pytest.fixture(scope="module")
def planted():
    frame, truth = planted_blocks(N_USERS, N_ITEMS, N_BLOCKS, seed=11, own_share=0.6, other_share=0.15, noise=NOISE)
    # 40 epochs a phase: the margins below hold with it, and MF's phases would otherwise run on
    # for gains far inside them (more than doubling the test's time)
    config = RunConfig(seed=5).replace_training(batch_size=128, max_epochs=40)
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    return dataset, truth, config


@pytest.mark.parametrize("name", registry.names())
def test_every_model_finds_the_planted_blocks(planted, name):
    dataset, truth, config = planted
    trained = train_model(name, dataset, config, seed=1)
    vocab, test = dataset.vocab, dataset.test
    floor = truth.rmse(vocab.user_ids[test.users], vocab.item_ids[test.items], test.ratings)
    assert floor == pytest.approx(NOISE, abs=0.05)
    assert trained.test_metrics["rmse_stars"] < floor + MARGIN[name], (trained.test_metrics, floor)

    logits = logit_matrix(trained, dataset)   # the ranking graph, fed as the scoring job feeds it
    indptr, seen = seen_csr(dataset.history, vocab.n_users)
    items, valid = top_n(mask_seen(logits, indptr, seen), TOP)
    assert valid.all()
    user_blocks = truth.user_block[vocab.user_ids - 1]
    item_blocks = truth.item_block[vocab.item_ids[items] - 1]
    own = item_blocks == user_blocks[:, None]
    assert own.mean() >= MIN_OWN, own.mean()
    # ... and the scoring job's lists, the coherence rule applied, come from it as often.
    lists, _ = model_lists(trained, dataset, logits, indptr, seen, TOP)
    assert (lists >= 0).all()
    assert (truth.item_block[vocab.item_ids[lists] - 1] == user_blocks[:, None]).mean() >= MIN_OWN
    # The similar-items table's search over the family's item vectors: items of a block list each other.
    with torch.no_grad():
        vectors = unit_vectors(registry.get(name).item_vectors(trained.module)).numpy()
    similarity, similar = SimilarItems.open(vectors, None, threads=1).top(np.arange(vocab.n_items), vectors, TOP)
    item_block = truth.item_block[vocab.item_ids - 1]
    assert np.isfinite(similarity).all()
    assert (item_block[similar] == item_block[:, None]).mean() >= MIN_OWN_SIMILAR, name


def test_the_dense_net_learns_the_blocks_from_every_seed(planted):
    # The dense net rates by the biases for its first epochs before it learns the taste; a rank cut
    # offered then (seeds 5 and 6 plateau at epoch 2) cut it to a rank chosen by noise, and it ended
    # 1.23 stars above the floor. The cut now waits for the factors to move the validation RMSE.
    dataset, truth, config = planted
    vocab, test = dataset.vocab, dataset.test
    floor = truth.rmse(vocab.user_ids[test.users], vocab.item_ids[test.items], test.ratings)
    for seed in range(1, 9):
        trained = train_model("dense", dataset, config, seed=seed)
        assert trained.test_metrics["rmse_stars"] < floor + MARGIN["dense"], (seed, trained.test_metrics, trained.fit.cuts)
