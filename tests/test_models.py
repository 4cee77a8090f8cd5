"""One contract suite for the three families: shapes, batch == single row, all-items == pairwise,
and ONNX == torch, plus hand-computed cases for the arithmetic."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.config import PARITY_FULL_USERS, PARITY_MAX_TEST_PAIRS, PARITY_MAX_USERS, PARITY_SAMPLE_PAIRS, RunConfig
from export.dataset import Interactions
from export.families import FAMILIES, History, init_parameters
from export.graphs import PairwiseGraph, RankingOnly, all_items_graph, stars
from export.models import BiasedMF
from export.onnx_export import export_graph
from export.parity import reference_pairs
from export.training import predict_in_batches
from scoring.bundle import ALL_ITEMS_INPUTS, PAIRWISE_INPUTS, RANKING_INPUTS, RANKING_OUTPUTS

N_USERS, N_ITEMS, WINDOW = 7, 11, 4


@pytest.fixture(params=["mf", "dense", "lstm"])
def family(request):
    return FAMILIES[request.param]


def build(family, seed=0):
    config = RunConfig().model_config(family.name)
    model = family.build(config, N_USERS, N_ITEMS, 0.55)
    init_parameters(model, torch.Generator().manual_seed(seed))
    with torch.no_grad():  # make biases non-trivial so the wrappers must carry them
        model.user_bias.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
        model.item_bias.weight[:N_ITEMS].normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 2))
    return model.eval()


def history(seed=0):
    rng = np.random.default_rng(seed)
    items = rng.integers(0, N_ITEMS, (N_USERS, WINDOW - 1))
    items[0, :2] = N_ITEMS  # a user with a short, padded history
    items[1, :] = N_ITEMS   # a user with no history at all
    ratings = np.where(items == N_ITEMS, 0, rng.integers(0, 5, items.shape) / 4).astype(np.float32)
    return History(items, ratings)


def all_pairs():
    return np.repeat(np.arange(N_USERS), N_ITEMS), np.tile(np.arange(N_ITEMS), N_USERS)


def test_same_seed_same_parameters(family):
    a, b = build(family, seed=3), build(family, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_ranking_head_alone_equals_the_forward_passes_rank(family, monkeypatch):
    # Training scores its sampled negatives with the head alone; for the LSTM that runs no LSTM.
    model = build(family)
    users, items = all_pairs()
    inputs = family.pair_inputs(users, items, history())
    with torch.no_grad():
        expected = family.outputs(model, inputs)[1]
        if family.sequential:
            monkeypatch.setattr(model, "lstm", None)
        alone = family.rank(model, inputs)
    torch.testing.assert_close(alone, expected, rtol=0, atol=1e-6)


def test_batch_equals_single_rows_and_a_batch_of_one_works(family):
    model, hist = build(family), history()
    users, items = all_pairs()
    batch = predict_in_batches(model, family.predict, family.pair_inputs(users, items, hist))
    assert batch.shape == (N_USERS * N_ITEMS,)
    singles = torch.cat([predict_in_batches(model, family.predict, family.pair_inputs(users[k:k + 1], items[k:k + 1], hist))
                         for k in range(len(users))])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-6)


def test_all_items_graph_equals_the_pairwise_model(family):
    model, hist = build(family), history()
    users, items = all_pairs()
    inputs = family.pair_inputs(users, items, hist)
    pairwise = predict_in_batches(model, family.predict, inputs)
    pairwise_rank = predict_in_batches(model, family.rank, inputs)
    graph = all_items_graph(family.name, model)
    feeds = [torch.arange(N_USERS)]
    if family.sequential:
        feeds += [torch.as_tensor(hist.items), torch.as_tensor(hist.ratings)]
    with torch.no_grad():
        score, rating, rank = graph(*feeds)
        one, _, one_rank = graph(*(f[2:3] for f in feeds))
    assert score.shape == rank.shape == (N_USERS, N_ITEMS)
    torch.testing.assert_close(score.reshape(-1), pairwise, rtol=0, atol=1e-6)
    torch.testing.assert_close(rank.reshape(-1), pairwise_rank, rtol=0, atol=1e-5)
    torch.testing.assert_close(rating, stars(score))
    torch.testing.assert_close(one[0], score[2], rtol=0, atol=1e-6)
    torch.testing.assert_close(one_rank[0], rank[2], rtol=0, atol=1e-5)


def test_onnx_graphs_match_torch_and_stand_alone(family, tmp_path):
    model, hist = build(family), history()
    users, items = all_pairs()
    inputs = family.pair_inputs(users, items, hist)
    expected = predict_in_batches(model, family.predict, inputs).numpy()

    pairwise_path = tmp_path / "pairwise.onnx"
    export_graph(PairwiseGraph(model), tuple(x[:2] for x in inputs), PAIRWISE_INPUTS[family.name],
                 pairwise_path, {"model": family.name})
    session = ort.InferenceSession(str(pairwise_path), providers=["CPUExecutionProvider"])
    score, rating, rank = session.run(None, dict(zip(PAIRWISE_INPUTS[family.name], (x.numpy() for x in inputs))))
    np.testing.assert_allclose(score, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(rank, predict_in_batches(model, family.rank, inputs).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(rating, np.clip(1 + 4 * expected, 1, 5), rtol=0, atol=4e-5)
    one = session.run(None, dict(zip(PAIRWISE_INPUTS[family.name], (x[:1].numpy() for x in inputs))))[0]
    assert one.shape == (1,)

    all_path = tmp_path / "all.onnx"
    feeds = {"user": np.arange(N_USERS)}
    if family.sequential:
        feeds |= {"history_items": hist.items, "history_ratings": hist.ratings}
    export_graph(all_items_graph(family.name, model), tuple(torch.as_tensor(v[:2]) for v in feeds.values()),
                 ALL_ITEMS_INPUTS[family.name], all_path, {"model": family.name})
    session = ort.InferenceSession(str(all_path), providers=["CPUExecutionProvider"])
    score, all_rank = session.run(["score", "rank"], feeds)
    np.testing.assert_allclose(score.reshape(-1), expected, rtol=0, atol=1e-5)

    ranking_path = tmp_path / "ranking.onnx"
    export_graph(RankingOnly(all_items_graph(family.name, model)), (torch.arange(2),),
                 RANKING_INPUTS[family.name], ranking_path, {"model": family.name}, output_names=RANKING_OUTPUTS)
    session = ort.InferenceSession(str(ranking_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["user"] and [o.name for o in session.get_outputs()] == ["rank"]
    np.testing.assert_allclose(session.run(None, {"user": feeds["user"]})[0], all_rank, rtol=0, atol=1e-6)
    nodes = {path: len(onnx.load(str(path)).graph.node) for path in (ranking_path, all_path)}
    assert nodes[ranking_path] < nodes[all_path]  # the rating arithmetic is gone
    # Ranking is matrix products over the catalogue: no per-pair hidden layer or LSTM step.
    assert per_pair_tensors(ranking_path) == []
    assert (per_pair_tensors(all_path) != []) == (family.name != "mf")
    assert per_pair_tensors(all_path, items_axis=1) == []  # items innermost: fast broadcasts in onnxruntime

    proto = onnx.load(str(all_path))
    assert {p.key: p.value for p in proto.metadata_props}["model"] == family.name
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".onnx"] == []  # no external data files


def per_pair_tensors(path, items_axis: int = 2) -> list[str]:
    """Values of an exported graph with 3 axes, the catalogue on ``items_axis``: per-pair
    intermediate work ([users, features, items] with the default, the layout the graphs use)."""
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    return [v.name for v in values if len(v.type.tensor_type.shape.dim) == 3
            and v.type.tensor_type.shape.dim[items_axis].dim_value == N_ITEMS]


def test_mf_is_mean_plus_biases_plus_dot_product():
    model = BiasedMF(n_users=2, n_items=2, dim=2, rank_dim=1, global_mean=0.5)
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
        model.item_embedding.weight.copy_(torch.tensor([[0.5, 0.25], [2.0, 0.0]]))
        model.user_bias.weight.copy_(torch.tensor([[0.1], [0.2]]))
        model.item_bias.weight.copy_(torch.tensor([[-0.05], [0.0]]))
        model.rank_scale.copy_(torch.tensor([2.0, 0.0]))
        model.rank_user_embedding.weight.copy_(torch.tensor([[2.0], [3.0]]))
        model.rank_item_embedding.weight.copy_(torch.tensor([[0.5], [0.0]]))
        model.rank_item_bias.weight.copy_(torch.tensor([[0.3], [-0.3]]))
    score, rank = model(torch.tensor([0, 1]), torch.tensor([0, 1]))
    torch.testing.assert_close(score, torch.tensor([0.5 + 0.1 - 0.05 + 1.0, 0.5 + 0.2 + 0.0 + 0.0]))
    torch.testing.assert_close(rank, torch.tensor([0.3 + 2 * 0.5 + 2 * 0.5, -0.3 + 0.0 + 0.0]))
    torch.testing.assert_close(stars(torch.tensor([-0.1, 0.5, 1.2])), torch.tensor([1.0, 3.0, 5.0]))


def test_lstm_step_never_sees_its_own_rating():
    family = FAMILIES["lstm"]
    model, hist = build(family), history()
    inputs = family.pair_inputs(np.array([3]), np.array([5]), hist)
    changed = (inputs[0], inputs[1], inputs[2].clone())
    changed[2][0, -1] = 1.0
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs)[0][:, -1], model(*changed)[0][:, -1])
        changed[2][0, -2] = 0.0 if float(inputs[2][0, -2]) else 1.0
        assert not torch.allclose(model(*inputs)[0][:, -1], model(*changed)[0][:, -1])


def test_lstm_last_step_runs_each_shared_history_once_and_trains_like_the_forward_pass():
    # Training windows label shared histories (a user's older ratings all share the latest ones),
    # so a batch runs the LSTM over each distinct history once: same outputs, same gradients.
    family = FAMILIES["lstm"]
    rng = np.random.default_rng(4)
    pairs = rng.permutation(N_USERS * N_ITEMS)[:60]
    ratings = Interactions(pairs // N_ITEMS, pairs % N_ITEMS, rng.integers(1, 6, 60).astype(np.float32),
                           rng.integers(0, 20, 60))
    config = dataclasses.replace(RunConfig().lstm, window=WINDOW)
    inputs, _ = family.training_inputs(ratings, config, N_ITEMS)
    assert len(inputs) == 4 and len(torch.unique(inputs[3])) < len(inputs[3])
    models = build(family).train(), build(family).train()
    histories_run = []
    models[1].lstm.register_forward_hook(lambda module, args, out: histories_run.append(args[0].shape[0]))
    expected = models[0](*inputs[:3])
    shared = family.outputs(models[1], inputs)
    assert histories_run == [len(torch.unique(inputs[3])), len(inputs[3])]  # shared histories, then one step each
    for got, want in zip(shared, expected):
        torch.testing.assert_close(got, want[:, -1], rtol=0, atol=1e-6)
    sum(o[:, -1].sum() for o in expected).backward()
    sum(o.sum() for o in shared).backward()
    grads = [dict((n, p.grad) for n, p in m.named_parameters() if p.grad is not None) for m in models]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6)


def test_ranking_head_moves_only_what_it_may(family):
    # MF's and the LSTM's ranking heads read the rating representation detached and train only
    # their own parameters; the dense net's also trains the embeddings, never the hidden layer.
    model = build(family).train()
    users, items = all_pairs()
    family.rank(model, family.pair_inputs(users, items, history())).sum().backward()
    parameters = dict(model.named_parameters())
    moved = {n for n, p in parameters.items() if p.grad is not None and p.grad.abs().sum() > 0}
    shared = {"user_embedding.weight", "item_embedding.weight"} if family.name == "dense" else set()
    assert moved == {n for n in parameters if n.startswith("rank_")} | shared


def test_parity_sample_bounds_the_users_the_all_items_graphs_score():
    rng = np.random.default_rng(0)
    n_users = PARITY_MAX_USERS * 3
    users, items = rng.integers(0, n_users, 50_000), rng.integers(0, 50, 50_000)
    sampled_users, sampled_items = reference_pairs(n_users, 50, users, items, np.random.default_rng(1))
    assert len(np.unique(sampled_users)) <= PARITY_MAX_USERS
    pool = set(np.unique(sampled_users).tolist())
    tested_in_pool = {(u, i) for u, i in zip(users.tolist(), items.tolist()) if u in pool}
    assert tested_in_pool <= set(zip(sampled_users.tolist(), sampled_items.tolist()))  # every test pair of those users


def test_parity_sample_keeps_every_test_pair_up_to_a_cap():
    rng = np.random.default_rng(0)
    small = reference_pairs(200, 100, np.arange(30), np.arange(30), np.random.default_rng(1))
    assert np.array_equal(small[0][:30], np.arange(30)) and len(small[0]) >= PARITY_SAMPLE_PAIRS
    n = PARITY_MAX_TEST_PAIRS + 5_000
    users, items = rng.integers(0, 1_000, n), rng.integers(0, 900, n)
    big_users, big_items = reference_pairs(1_000, 900, users, items, np.random.default_rng(1))
    assert len(big_users) == PARITY_MAX_TEST_PAIRS + PARITY_FULL_USERS * 900 + (
        PARITY_SAMPLE_PAIRS - PARITY_FULL_USERS * 900)
    tested = set(zip(users.tolist(), items.tolist()))
    assert sum((u, i) in tested for u, i in zip(big_users[:PARITY_MAX_TEST_PAIRS].tolist(),
                                                 big_items[:PARITY_MAX_TEST_PAIRS].tolist())) == PARITY_MAX_TEST_PAIRS
