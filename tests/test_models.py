"""The model-family contract, run on every registered family and on a test-only fourth one:
seeds, batches, the ranking head, the all-items rearrangement, the ONNX graphs; plus
hand-computed cases for the built-in families."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from bias_family import FAMILY as BIAS_FAMILY
from contract.bundle_format import GRAPH_OUTPUTS, RANKING_OUTPUTS
from contract.scale import MOVIELENS_STARS
from export.config import PARITY_FULL_USERS, PARITY_MAX_TEST_PAIRS, PARITY_MAX_USERS, PARITY_SAMPLE_PAIRS
from export.data.dataset import Interactions
from export.models import registry
from export.models.base import init_parameters
from export.models.mf import BiasedMF
from export.onnx.export import export_graph
from export.onnx.parity import reference_pairs
from export.training.validation import predict_in_batches
from scoring.feeds import UserContext, build_feeds

N_USERS, N_ITEMS, WINDOW = 7, 11, 4


FAMILIES = {**{name: registry.get(name) for name in registry.names()}, BIAS_FAMILY.name: BIAS_FAMILY}


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return FAMILIES[request.param]


def config_of(family):
    config = family.default_config()
    if hasattr(config, "rank_l2"):   # the item autoencoder, at penalties that suit 45 ratings
        return dataclasses.replace(config, rank_l2=(30.0,), rating_shrink=(3.0,))
    return dataclasses.replace(config, window=WINDOW) if hasattr(config, "window") else config


def solved_ratings(seed):
    """Distinct random (user, item) pairs rated 1-5: what a closed-form family is solved on."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(N_USERS * N_ITEMS, 45, replace=False)
    return Interactions(pairs // N_ITEMS, pairs % N_ITEMS, rng.integers(1, 6, 45).astype(np.float32),
                        np.arange(45, dtype=np.int64))


def build(family, seed=0):
    if family.closed_form:
        return family.solve(config_of(family), solved_ratings(seed), N_USERS, N_ITEMS).eval()
    model = family.build(config_of(family), N_USERS, N_ITEMS, 0.55)
    init_parameters(model, torch.Generator().manual_seed(seed))
    with torch.no_grad():  # make biases non-trivial so the wrappers must carry them
        model.user_bias.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
        model.item_bias.weight[:N_ITEMS].normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 2))
    return model.eval()


def history(family=None, seed=0):
    """Each user's latest items, as long as ``family`` reads (the LSTM's window - 1 when None)."""
    length = WINDOW - 1 if family is None else family.context_length(config_of(family))
    rng = np.random.default_rng(seed)
    items = rng.integers(0, N_ITEMS, (N_USERS, length))
    items[0, :2] = N_ITEMS  # a user with a short, padded history
    items[1, :] = N_ITEMS   # a user with no history at all
    ratings = np.where(items == N_ITEMS, 0, rng.integers(0, 5, items.shape) / 4).astype(np.float32)
    return UserContext(items, ratings)


def all_pairs():
    return np.repeat(np.arange(N_USERS), N_ITEMS), np.tile(np.arange(N_ITEMS), N_USERS)


def test_same_seed_same_parameters(family):
    a, b = build(family, seed=3), build(family, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_ranking_head_alone_equals_the_forward_passes_rank(family, monkeypatch):
    # Training scores its sampled negatives with the head alone; for the LSTM that runs no LSTM.
    model = build(family)
    users, items = all_pairs()
    inputs = family.pair_inputs(users, items, history(family))
    with torch.no_grad():
        expected = family.outputs(model, inputs)[1]
        if hasattr(model, "lstm"):
            monkeypatch.setattr(model, "lstm", None)
        alone = family.logits(model, inputs)
    torch.testing.assert_close(alone, expected, rtol=0, atol=1e-6)


def test_batch_equals_single_rows_and_a_batch_of_one_works(family):
    model, hist = build(family), history(family)
    users, items = all_pairs()
    batch = predict_in_batches(model, family.predict, family.pair_inputs(users, items, hist))
    assert batch.shape == (N_USERS * N_ITEMS,)
    singles = torch.cat([predict_in_batches(model, family.predict, family.pair_inputs(users[k:k + 1], items[k:k + 1], hist))
                         for k in range(len(users))])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-6)


def test_all_items_graph_equals_the_pairwise_model(family):
    model, hist = build(family), history(family)
    users, items = all_pairs()
    inputs = family.pair_inputs(users, items, hist)
    pairwise = predict_in_batches(model, family.predict, inputs)
    pairwise_logit = predict_in_batches(model, family.logits, inputs)
    graph = family.graphs(model, MOVIELENS_STARS)["all_items"]
    feeds = build_feeds(family.all_items_inputs, np.arange(N_USERS), None, hist)
    tensors = [torch.as_tensor(feeds[name]) for name in family.all_items_inputs]
    with torch.no_grad():
        unit, rating, logit = graph(*tensors)
        one, _, one_logit = graph(*(t[2:3] for t in tensors))
    assert unit.shape == logit.shape == (N_USERS, N_ITEMS)
    torch.testing.assert_close(unit.reshape(-1), pairwise, rtol=0, atol=1e-6)
    torch.testing.assert_close(logit.reshape(-1), pairwise_logit, rtol=0, atol=1e-5)
    torch.testing.assert_close(rating, MOVIELENS_STARS.clipped_rating(unit))
    torch.testing.assert_close(one[0], unit[2], rtol=0, atol=1e-6)
    torch.testing.assert_close(one_logit[0], logit[2], rtol=0, atol=1e-5)


def export_all(family, model, hist, folder):
    """Each graph exported as the bundle writer does, with its feeds for every user (and pair)."""
    users, items = all_pairs()
    paths = {}
    for kind, module in family.graphs(model, MOVIELENS_STARS).items():
        names = family.graph_inputs()[kind]
        if kind == "pairwise":
            feeds = build_feeds(names, users, items, hist)
        elif kind == "item_vectors":
            feeds = {"item": np.arange(N_ITEMS)}
        else:
            feeds = build_feeds(names, np.arange(N_USERS), None, hist)
        paths[kind] = folder / f"{kind}.onnx"
        export_graph(module, tuple(torch.as_tensor(feeds[n][:2]) for n in names), names, paths[kind],
                     {"model": family.name}, GRAPH_OUTPUTS[kind])
        paths[kind] = (paths[kind], feeds)
    return paths


def test_onnx_graphs_match_torch_and_stand_alone(family, tmp_path):
    model, hist = build(family), history(family)
    users, items = all_pairs()
    inputs = family.pair_inputs(users, items, hist)
    expected = predict_in_batches(model, family.predict, inputs).numpy()
    expected_logit = predict_in_batches(model, family.logits, inputs).numpy()
    graphs = export_all(family, model, hist, tmp_path)

    pairwise_path, feeds = graphs["pairwise"]
    session = ort.InferenceSession(str(pairwise_path), providers=["CPUExecutionProvider"])
    unit, rating, logit = session.run(None, feeds)
    np.testing.assert_allclose(unit, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logit, expected_logit, rtol=0, atol=1e-5)
    np.testing.assert_allclose(rating, np.clip(1 + 4 * expected, 1, 5), rtol=0, atol=4e-5)
    one = session.run(None, {k: v[:1] for k, v in feeds.items()})[0]
    assert one.shape == (1,)

    all_path, feeds = graphs["all_items"]
    session = ort.InferenceSession(str(all_path), providers=["CPUExecutionProvider"])
    unit, all_logit = session.run(["unit_rating", "logit"], feeds)
    np.testing.assert_allclose(unit.reshape(-1), expected, rtol=0, atol=1e-5)

    ranking_path, feeds = graphs["ranking"]
    session = ort.InferenceSession(str(ranking_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(family.ranking_inputs)
    assert tuple(o.name for o in session.get_outputs()) == RANKING_OUTPUTS
    np.testing.assert_allclose(session.run(None, feeds)[0], all_logit, rtol=0, atol=1e-6)
    nodes = {path: len(onnx.load(str(path)).graph.node) for path in (ranking_path, all_path)}
    assert nodes[ranking_path] <= nodes[all_path]  # the rating arithmetic is gone
    # Ranking is matrix products over the catalogue: no per-pair hidden layer or LSTM step.
    assert per_pair_tensors(ranking_path) == []
    if family.name in ("mf", "dense", "lstm"):
        assert (per_pair_tensors(all_path) != []) == (family.name != "mf")
    assert per_pair_tensors(all_path, items_axis=1) == []  # items innermost: fast broadcasts in onnxruntime

    with torch.no_grad():
        representation = family.item_vectors(model)
    assert ("item_vectors" in graphs) == (representation is not None)
    assert representation is not None or family is BIAS_FAMILY   # every built-in family has one
    if representation is not None:
        check_item_vectors(graphs["item_vectors"], representation.numpy())

    proto = onnx.load(str(all_path))
    assert {p.key: p.value for p in proto.metadata_props}["model"] == family.name
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".onnx"] == []  # no external data files


def check_item_vectors(graph, expected_vectors):
    """The item_vectors graph gives the family's item representation at unit length."""
    vectors_path, feeds = graph
    session = ort.InferenceSession(str(vectors_path), providers=["CPUExecutionProvider"])
    (vectors,) = session.run(None, feeds)
    assert vectors.shape == (N_ITEMS, expected_vectors.shape[1])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(vectors, expected_vectors / np.linalg.norm(expected_vectors, axis=1, keepdims=True),
                               rtol=0, atol=1e-6)


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
    unit, logit = model(torch.tensor([0, 1]), torch.tensor([0, 1]))
    torch.testing.assert_close(unit, torch.tensor([0.5 + 0.1 - 0.05 + 1.0, 0.5 + 0.2 + 0.0 + 0.0]))
    torch.testing.assert_close(logit, torch.tensor([0.3 + 2 * 0.5 + 2 * 0.5, -0.3 + 0.0 + 0.0]))
    torch.testing.assert_close(MOVIELENS_STARS.clipped_rating(torch.tensor([-0.1, 0.5, 1.2])),
                               torch.tensor([1.0, 3.0, 5.0]))


def test_lstm_step_never_sees_its_own_rating():
    family = FAMILIES["lstm"]
    model, hist = build(family), history(family)
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
    rows, _ = family.training_inputs(ratings, config_of(family), N_ITEMS)
    inputs = rows.batch(torch.arange(len(rows)))
    assert len(inputs) == 4 and len(torch.unique(inputs[3])) < len(inputs[3])
    models = build(family).train(), build(family).train()
    histories_run = []
    models[1].lstm.register_forward_hook(lambda module, args, out: histories_run.append(args[0].shape[0]))
    expected = models[0](*inputs[:3])
    shared = family.outputs(models[1], inputs)
    assert histories_run == [len(torch.unique(inputs[3]))]   # the LSTM runs over shared histories only
    for got, want in zip(shared, expected):
        torch.testing.assert_close(got, want[:, -1], rtol=0, atol=1e-6)
    sum(o[:, -1].sum() for o in expected).backward()
    sum(o.sum() for o in shared).backward()
    grads = [dict((n, p.grad) for n, p in m.named_parameters() if p.grad is not None) for m in models]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6)


def test_a_family_s_shared_sampled_outputs_equal_the_separate_passes(family):
    # What the training loss reads: a family may share the users' side of the ranking head
    # between rated and sampled items (MF does), with the same values and gradients.
    batch, sampled, models = shared_pass_inputs(family)
    shared = family.sampled_outputs(models[0], batch, sampled)
    separate = (*family.outputs(models[1], batch), family.logits(models[1], family.with_items(batch, sampled)))
    assert_same_values_and_gradients(shared, separate, models)


def test_a_family_s_negative_outputs_equal_the_separate_passes(family):
    # What implicit feedback's loss reads: the outputs of the rated items and of sampled
    # non-interactions; MF and the dense net share the users' side, with the same values and gradients.
    batch, negatives, models = shared_pass_inputs(family)
    shared = family.negative_outputs(models[0], batch, negatives)
    rated, other = family.outputs(models[1], batch), family.outputs(models[1], family.with_items(batch, negatives))
    assert_same_values_and_gradients(shared, (rated[0], other[0], rated[1], other[1]), models)


def shared_pass_inputs(family) -> tuple:
    """A batch of four rows, an item to score beside each, and two alike-built modules in
    training mode; skipped for a closed-form family, which has no training loss."""
    if family.closed_form:
        pytest.skip("a closed-form family has no training loss")
    batch = family.pair_inputs(np.array([0, 3, 3, 6]), np.array([1, 4, 9, 2]), history(family))
    return batch, torch.tensor([5, 5, 0, 10]), (build(family).train(), build(family).train())


def assert_same_values_and_gradients(shared: tuple, separate: tuple, models: tuple) -> None:
    """``shared`` (from ``models[0]``) equals ``separate`` (from ``models[1]``, built alike) in
    value, and a loss over each gives every parameter the same gradient."""
    for got, want in zip(shared, separate, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    sum(o.sum() * (k + 1) for k, o in enumerate(shared)).backward()
    sum(o.sum() * (k + 1) for k, o in enumerate(separate)).backward()
    grads = [{n: p.grad for n, p in m.named_parameters() if p.grad is not None} for m in models]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mf", "dense", "lstm"])
def test_ranking_head_moves_only_what_it_may(name):
    # MF's and the LSTM's ranking heads read the rating representation detached and train only
    # their own parameters; the dense net's also trains the embeddings, never the hidden layer.
    family = FAMILIES[name]
    model = build(family).train()
    users, items = all_pairs()
    family.logits(model, family.pair_inputs(users, items, history(family))).sum().backward()
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
