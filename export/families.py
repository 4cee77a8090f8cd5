"""One entry per model family: how to build it and how to turn ratings into its inputs.

Pairwise inputs follow the scoring semantics: MF and the dense net see (user, item); the LSTM
sees the user's latest history window from a given context, followed by the item.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import DenseConfig, LSTMConfig, MFConfig
from .dataset import Interactions
from .models import BiasedMF, DenseNet, SequenceLSTM
from .sequences import TRAINING_CONTEXTS, Windows, latest_history, windows_for_pairs

Inputs = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class History:
    """Each user's latest ``window - 1`` items and ratings: the LSTM's context for new pairs."""

    items: np.ndarray
    ratings: np.ndarray

    @classmethod
    def of(cls, interactions: Interactions, n_users: int, n_items: int, window: int) -> "History":
        return cls(*latest_history(interactions, n_users, window - 1, pad=n_items))


def _ids(users: np.ndarray, items: np.ndarray) -> Inputs:
    return torch.as_tensor(users, dtype=torch.int64), torch.as_tensor(items, dtype=torch.int64)


def _windows(w: Windows) -> Inputs:
    return (torch.as_tensor(w.users, dtype=torch.int64), torch.as_tensor(w.items, dtype=torch.int64),
            torch.as_tensor(w.ratings, dtype=torch.float32))


def _training_windows(w: Windows) -> Inputs:
    """``_windows`` plus each window's history label, so that a batch runs the LSTM over each
    distinct history once (pair inputs need none: a pair's history is its user's latest)."""
    return *_windows(w), torch.as_tensor(w.histories, dtype=torch.int64)


@dataclass(frozen=True)
class Family:
    """How one model family is built, fed and penalised."""

    name: str
    build: Callable[[MFConfig | DenseConfig | LSTMConfig, int, int, float], nn.Module]
    outputs: Callable[[nn.Module, Inputs], tuple[torch.Tensor, torch.Tensor]]
    """Scores [B] on [0, 1] and ranking logits [B] for a batch of encoded pairs, in one forward pass."""
    rank: Callable[[nn.Module, Inputs], torch.Tensor]
    """Ranking logits [B] from the ranking head alone (no hidden layer, no LSTM)."""
    penalty: Callable[[nn.Module, Inputs], Penalty]
    """Mean squared norms of the embedding rows and of the biases the batch touches."""
    sequential: bool = False

    def predict(self, model: nn.Module, batch: Inputs) -> torch.Tensor:
        """Scores [B] on [0, 1] for a batch of encoded pairs."""
        return self.outputs(model, batch)[0]

    def training_inputs(self, train: Interactions, config, n_items: int) -> tuple[Inputs, torch.Tensor]:
        """Inputs and [0, 1] targets for every training rating (the LSTM's inputs end with each
        window's history label, see ``SequenceLSTM.last_step``)."""
        if self.sequential:
            if config.training_context not in TRAINING_CONTEXTS:
                raise ValueError(f"lstm training_context: expected one of {sorted(TRAINING_CONTEXTS)}, "
                                 f"got {config.training_context!r}")
            w = TRAINING_CONTEXTS[config.training_context](train, config.window, pad=n_items)
            return _training_windows(w), torch.as_tensor(w.ratings[:, -1].copy())
        return _ids(train.users, train.items), torch.as_tensor(train.unit)

    def with_items(self, batch: Inputs, items: torch.Tensor) -> Inputs:
        """The same batch with each pair's item (the window's last item) replaced by ``items``."""
        if self.sequential:
            windows = batch[1].clone()
            windows[:, -1] = items
            return batch[0], windows, *batch[2:]
        return batch[0], items

    def pair_inputs(self, users: np.ndarray, items: np.ndarray, history: History | None) -> Inputs:
        """Inputs for arbitrary (user, item) index pairs; the LSTM needs the users' history."""
        if self.sequential:
            if history is None:
                raise ValueError("the LSTM needs each user's history to score pairs")
            return _windows(windows_for_pairs(history.items, history.ratings, users, items))
        return _ids(users, items)


Penalty = tuple[torch.Tensor, torch.Tensor]


def _bias_penalty(model: nn.Module, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return (model.user_bias(users)[:, 0] ** 2 + model.item_bias(items)[:, 0] ** 2).mean()


def _pair_penalty(model: nn.Module, batch: Inputs) -> Penalty:
    users, items = batch[0], batch[1]
    embeddings = (model.user_embedding(users) ** 2).sum(-1) + (model.item_embedding(items) ** 2).sum(-1)
    return embeddings.mean(), _bias_penalty(model, users, items)


def _rank_factor_penalty(model: nn.Module, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return ((model.rank_user_embedding(users) ** 2).sum(-1) + (model.rank_item_embedding(items) ** 2).sum(-1)).mean()


def _factor_penalty(model: nn.Module, batch: Inputs) -> Penalty:
    users, items = batch[0], batch[1]
    embeddings, biases = _pair_penalty(model, batch)
    return embeddings + _rank_factor_penalty(model, users, items), biases


def _sequence_penalty(model: nn.Module, batch: Inputs) -> Penalty:
    users, items = batch[0], batch[1][:, -1]
    embeddings = ((model.item_embedding(items) ** 2).sum(-1) + (model.affinity_item_embedding(items) ** 2).sum(-1)
                  + (model.user_embedding(users) ** 2).sum(-1))
    return embeddings.mean() + _rank_factor_penalty(model, users, items), _bias_penalty(model, users, items)


def _last_step(model: nn.Module, batch: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Training windows carry history labels; pair inputs score every pair from its user's
    latest history, so there the user labels it."""
    users, items, ratings, *labels = batch
    return model.last_step(users, items, ratings, labels[0] if labels else users)


FAMILIES: dict[str, Family] = {
    "mf": Family(
        name="mf",
        build=lambda c, n_users, n_items, mean: BiasedMF(n_users, n_items, c.dim, c.rank_dim, mean),
        outputs=lambda model, batch: model(*batch),
        rank=lambda model, batch: model.rank(*batch),
        penalty=_factor_penalty,
    ),
    "dense": Family(
        name="dense",
        build=lambda c, n_users, n_items, mean: DenseNet(n_users, n_items, c.dim, c.hidden, c.rank_dim, mean),
        outputs=lambda model, batch: model(*batch),
        rank=lambda model, batch: model.rank(*batch),
        penalty=_factor_penalty,
    ),
    "lstm": Family(
        name="lstm",
        build=lambda c, n_users, n_items, mean: SequenceLSTM(n_users, n_items, c.dim, c.hidden, c.user_dim, c.user_input,
                                                               c.rank_dim, mean),
        outputs=_last_step,
        rank=lambda model, batch: model.rank(batch[0], batch[1][:, -1]),
        penalty=_sequence_penalty,
        sequential=True,
    ),
}


def init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Initialise every parameter from ``generator`` (no global RNG): embeddings N(0, 0.05),
    biases zero, Linear and LSTM weights uniform(+-1/sqrt(fan)) as torch's defaults, padding zero."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Embedding):
                if name.endswith("bias"):
                    module.weight.zero_()
                else:
                    module.weight.normal_(0.0, 0.05, generator=generator)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, (nn.Linear, nn.LSTM)):
                fan = module.in_features if isinstance(module, nn.Linear) else module.hidden_size
                for param in module.parameters(recurse=False):
                    param.uniform_(-fan ** -0.5, fan ** -0.5, generator=generator)
