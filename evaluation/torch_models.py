"""Torch's view of a published bundle: rebuild each trained module from its config and weights,
and compute its outputs for every user-item pair."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from contract.bundle_format import torch_weights_file
from contract.errors import BundleError
from contract.pairs import pair_batches
from export.models import registry
from export.models.base import Family, unit_vectors
from scoring.bundle import Bundle

PAIR_BATCH = 65_536
"""Pairs per torch forward pass when walking every pair."""


def load_torch_model(bundle: Bundle, name: str) -> torch.nn.Module:
    """Rebuild a trained module from the bundle's config and ``state_dict``; denormal floats are
    flushed to zero in this process, as in training (see ``trainer.train_model``)."""
    torch.set_flush_denormal(True)
    family = registry.get(name)
    config = family.config_from_dict(bundle.manifest["config"]["model_configs"][name])
    module = family.build(config, bundle.n_users, bundle.n_items, 0.0)
    path = bundle.path / torch_weights_file(name)
    if not path.is_file():
        raise BundleError(f"{path}: torch weights are missing")
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise BundleError(f"{path}: these weights do not fit this code's {name} model (a bundle trained by an "
                          f"older version? retrain it with `make train`): {exc}") from exc
    return module.eval()


def pairwise_batches(bundle: Bundle, family: Family, model: str,
                     limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[torch.Tensor, ...]]]:
    """(users, items, torch inputs) of every pair, or the first ``limit``, as the model was trained."""
    context = bundle.context.last(bundle.graphs(model).context_length)
    for users, items in pair_batches(bundle.n_users, bundle.n_items, PAIR_BATCH, limit):
        yield users, items, family.pair_inputs(users, items, context)


def torch_outputs(bundle: Bundle, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Torch ``unit_rating`` and ranking ``logit`` for every pair, each [n_users, n_items],
    through the pairwise model."""
    module = load_torch_model(bundle, name)
    family = registry.get(name)
    unit = np.empty(bundle.n_users * bundle.n_items, np.float32)
    logits = np.empty_like(unit)
    with torch.no_grad():
        for users, items, inputs in pairwise_batches(bundle, family, name):
            flat = users * bundle.n_items + items
            unit[flat] = family.predict(module, inputs).numpy()
            logits[flat] = family.logits(module, inputs).numpy()
    return unit.reshape(bundle.n_users, bundle.n_items), logits.reshape(bundle.n_users, bundle.n_items)


class TorchModel:
    """One model's torch outputs for ``make verify`` (``scoring.tables.TorchOutputs``), each
    computed on first use: every pair's rating and logit, and the unit-length item vectors."""

    def __init__(self, bundle: Bundle, name: str) -> None:
        self.bundle, self.name = bundle, name
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None

    def _outputs(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pairs is None:
            self._pairs = torch_outputs(self.bundle, self.name)
        return self._pairs

    @property
    def unit(self) -> np.ndarray:
        return self._outputs()[0]

    @property
    def logits(self) -> np.ndarray:
        return self._outputs()[1]

    @property
    def item_vectors(self) -> np.ndarray | None:
        family = registry.get(self.name)
        with torch.no_grad():
            vectors = family.item_vectors(load_torch_model(self.bundle, self.name))
            return None if vectors is None else unit_vectors(vectors.float()).numpy().astype(np.float32)
