"""What a model family is: one object that owns its config, its ``nn.Module``, how ratings become
its training inputs, its penalty, and its three ONNX graphs with their input names.

A family module defines a subclass of ``Family`` (or of ``PairFamily``, for models that read a
(user, item) pair) and registers an instance with ``export.models.registry.register``; nothing
else in the project names families. Graph input names are feeds of
``contract.bundle_format.FEEDS``, which the scoring job builds without knowing the family.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from contract.scale import RatingScale
from scoring.feeds import UserContext, build_feeds

from ..data.dataset import Interactions
from ..training.config import TrainingConfig

@dataclasses.dataclass(frozen=True)
class FamilyOption:
    """A command-line option a family declares: ``flag`` sets its config's ``field`` (parsed as
    ``type``); the training commands list it in ``--help`` and apply it when the family trains."""

    flag: str
    field: str
    type: type
    help: str


RANKING_PREFIX = "rank_"
"""A module's attributes whose names start with this are its ranking head's own parameters: the
rating loss never reads them, and the ranking fit trains them alone."""

RANKING_INITIAL_STD = 0.01
"""Standard deviation of the ranking head's own embeddings when the ranking fit starts."""

@dataclasses.dataclass(frozen=True)
class RankingBlocks:
    """The ranking head as alternating least squares solves it (``export.training.ranking_als``):
    ``logit[u, i] = <read_users[u] * scale, read_items[i]> + <users[u], items[i]> + offsets[i]``.
    ``users``, ``items``, ``offsets`` and ``scale`` are views of the module's own parameters (the
    solver writes them in place); ``read_users`` and ``read_items`` are the rating representation
    the head reads, never moved (None, with ``scale``, where the head reads none while it is fitted)."""

    users: torch.Tensor
    """[n_users, k]"""
    items: torch.Tensor
    """[n_items, k]"""
    offsets: torch.Tensor
    """[n_items]"""
    scale: torch.Tensor | None = None
    """[d]"""
    read_users: torch.Tensor | None = None
    """[n_users, d]"""
    read_items: torch.Tensor | None = None
    """[n_items, d]"""


Inputs = tuple[torch.Tensor, ...]
"""A batch of model inputs, in the order the family's module takes them."""


class TrainingRows(Protocol):
    """A family's training ratings as training draws them: its own layout, batches of module inputs."""

    users: torch.Tensor
    """User index of each row, int64 [N] on the CPU (the epoch's order groups rows by user)."""

    def __len__(self) -> int: ...

    def to(self, device: torch.device) -> "TrainingRows":
        """The same rows, their batches on ``device``."""

    def batch(self, index: torch.Tensor) -> Inputs:
        """The module inputs of the rows ``index`` names, on the rows' device."""


@dataclasses.dataclass(frozen=True)
class RowInputs:
    """Training rows held as the module's inputs themselves: a batch is the rows ``index`` names."""

    inputs: Inputs

    def __len__(self) -> int:
        return self.inputs[0].shape[0]

    @property
    def users(self) -> torch.Tensor:
        return self.inputs[0].cpu()

    def to(self, device: torch.device) -> "RowInputs":
        return RowInputs(tuple(x.to(device) for x in self.inputs))

    def batch(self, index: torch.Tensor) -> Inputs:
        index = index.to(self.inputs[0].device)
        return tuple(x[index] for x in self.inputs)


IMPLICIT_RANKING_FIT = {"rank_loss": "squared", "rank_decay": 10.0, "rank_recency_window": 10.0}
"""The ranking fit for implicit feedback: the weighted squared loss over each user's catalogue row,
solved by alternating least squares, with ALS's regularisation (10, as implicit's ALS chooses on
MovieLens 100K), and recent interactions weighted up over about a user's latest ten (the LSTM's
window), by as much as each user's latest training interactions say."""


class Family(ABC):
    """One model family. Subclasses set the class attributes and implement ``build`` and
    ``all_items_core`` (abstract: a family without them cannot be instantiated); the defaults fit a module whose ``forward(*inputs)`` returns
    ``(unit_rating [B], logit [B])`` and whose ``ranking_logit(users, items)`` is its ranking head alone."""

    name: ClassVar[str]
    """The model's name in options, bundles and tables."""
    config_type: ClassVar[type]
    """Frozen dataclass of the family's settings; it has a ``training: TrainingConfig`` field."""
    training_cost: ClassVar[float] = 1.0
    """Relative training time; training workers take the costliest models first."""
    needs_order: ClassVar[bool] = False
    """Whether the model reads each user's ratings in time order (it needs a timestamp or an
    ``--order-by`` column in the data)."""
    untuned_reference_rmse: ClassVar[float | None] = None
    """Test RMSE on [0, 1] that the introductory article reported for its untuned version, shown in
    the report as a labelled reference; None for families the article does not have."""
    pairwise_inputs: ClassVar[tuple[str, ...]] = ("user", "item")
    """Input names (feeds) of the pairwise graph, in the module's argument order."""
    all_items_inputs: ClassVar[tuple[str, ...]] = ("user",)
    """Input names (feeds) of the all-items graph."""
    ranking_inputs: ClassVar[tuple[str, ...]] = ("user",)
    """Input names (feeds) of the ranking graph."""
    user_tables: ClassVar[tuple[str, ...]] = ()
    """Embedding attributes indexed by user whose rows the penalty covers."""
    item_tables: ClassVar[tuple[str, ...]] = ()
    """Embedding attributes indexed by item whose rows the penalty covers."""
    bias_tables: ClassVar[tuple[str, ...]] = ("user_bias", "item_bias")
    """The user and item bias embeddings, penalised by ``TrainingConfig.bias_decay``."""
    options: ClassVar[tuple[FamilyOption, ...]] = ()
    """Command-line options of the family's own (the LSTM's ``--window``)."""
    ranking_fixed: ClassVar[tuple[str, ...]] = ()
    """Ranking parameters the ranking fit leaves as ``restart_ranking`` sets them (the rating fit's
    joint loss still trains them, as a regulariser)."""
    closed_form: ClassVar[bool] = False
    """Whether the family is solved (``choose`` then ``solve``) instead of trained by epochs."""

    # -- configuration -------------------------------------------------------------------------
    def default_config(self) -> Any:
        return self.config_type()

    def config_from_dict(self, values: dict[str, Any]) -> Any:
        """Rebuild the config a manifest recorded."""
        fields = {k: v for k, v in values.items() if k != "training"}
        return self.config_type(**fields, training=TrainingConfig(**values.get("training", {})))

    def with_training(self, config: Any, **changes: Any) -> Any:
        """``config`` with its training settings changed."""
        return dataclasses.replace(config, training=dataclasses.replace(config.training, **changes))

    def context_length(self, config: Any) -> int:
        """Latest rated items per user the model reads (0: none)."""
        return 0

    def catalogue_limit(self, config: Any) -> int | None:
        """The largest catalogue (items) the family accepts; None: no limit."""
        return None

    def implicit_config(self, config: Any) -> Any:
        """``config`` for implicit feedback, where every interaction is a positive: the rating output
        learns interactions against sampled non-interactions, each interaction ranks first against
        sampled items in the joint loss, and every held-out one is relevant to the ranking fit's
        validation NDCG@10."""
        return self.with_training(config, negative_targets=True, rank_positive_min=0.0, rank_relevant_min=0.0,
                                  **IMPLICIT_RANKING_FIT)

    def trained_config(self, config: Any, model: nn.Module) -> Any:
        """The config that builds a module of ``model``'s shape: ``config``, with whatever the fit
        changed (a ``cut`` rank) written into it."""
        return config

    # -- rank ----------------------------------------------------------------------------------
    def rank(self, model: nn.Module) -> int | None:
        """The rank of a module whose rating factors can be cut (``cut``); None: the family's can't."""
        return None

    def cut(self, model: nn.Module, rank: int) -> nn.Module:
        """A new module: ``model`` with its rating factors cut to their ``rank`` leading directions;
        only for a family whose ``rank`` is not None."""
        raise TypeError(f"model '{self.name}' has no rank to cut (its family's rank() is None)")

    # -- closed form (``closed_form`` families only) ----------------------------------------------
    def choose(self, config: Any, fit: Interactions, validation: Interactions, n_users: int, n_items: int) -> Any:
        """``config`` with its settings chosen by fitting on ``fit`` and scoring ``validation``."""
        raise TypeError(f"model '{self.name}' is trained by epochs, not solved (its closed_form is False)")

    def solve(self, config: Any, ratings: Interactions, n_users: int, n_items: int) -> nn.Module:
        """The module fitted to ``ratings`` in closed form with ``config``'s chosen settings."""
        raise TypeError(f"model '{self.name}' is trained by epochs, not solved (its closed_form is False)")

    # -- the network ---------------------------------------------------------------------------
    @abstractmethod
    def build(self, config: Any, n_users: int, n_items: int, global_mean: float) -> nn.Module:
        """A fresh module; ``global_mean`` is the training ratings' mean on [0, 1]."""

    def outputs(self, model: nn.Module, batch: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(unit_rating [B], logit [B])`` of a batch, in one forward pass (training and evaluation)."""
        return model(*batch)

    def logits(self, model: nn.Module, batch: Inputs) -> torch.Tensor:
        """Ranking logits [B] from the ranking head alone (training scores sampled items with it)."""
        return model.ranking_logit(batch[0], batch[1])

    def sampled_outputs(self, model: nn.Module, batch: Inputs,
                        sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``outputs`` of a batch and the ranking logits [B] of ``sampled`` items for its users:
        what the training loss reads. A family whose module can share the users' side of the
        ranking head between both overrides it; the result must equal this one."""
        unit, logit = self.outputs(model, batch)
        return unit, logit, self.logits(model, self.with_items(batch, sampled))

    def negative_outputs(self, model: nn.Module, batch: Inputs,
                         negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``outputs`` of a batch and of the same rows with ``negatives`` as their items: unit
        ratings and logits [B] of both, what implicit feedback's loss reads. By default one pass
        over the batch doubled (a sequence model then runs each history once); a family whose
        module can share the users' side overrides it; the result must equal this one."""
        both = tuple(torch.cat(pair) for pair in zip(batch, self.with_items(batch, negatives)))
        units, logits = self.outputs(model, both)
        return (*units.split(len(negatives)), *logits.split(len(negatives)))

    def ranking_factors(self, model: nn.Module,
                        users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The ranking head as a product, ``logit = user [B, D] @ items [n_items, D]^T + offsets
        [n_items]``, from the module's ``ranking_user(users)`` and ``ranking_items()``, differentiable
        in the head's own parameters (``ranking_parameters``); None where the module has no such
        methods, and then no ranking fit (``export.training.ranking_fit``)."""
        if not (hasattr(model, "ranking_user") and hasattr(model, "ranking_items")):
            return None
        return model.ranking_user(users), *model.ranking_items()

    def ranking_blocks(self, model: nn.Module) -> RankingBlocks | None:
        """The head's blocks (``RankingBlocks``) from the module's ``ranking_blocks()``, as the head
        stands after ``restart_ranking``; None where the module has none, and then the "squared"
        ranking fit does not apply."""
        return model.ranking_blocks() if hasattr(model, "ranking_blocks") else None

    def ranking_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The ranking head's own parameters: the module's attributes named ``RANKING_PREFIX``...
        (tables, layers and scales)."""
        return {name: p for name, p in model.named_parameters() if name.startswith(RANKING_PREFIX)}

    def ranking_fit_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters the ranking fit trains: ``ranking_parameters`` less ``ranking_fixed``."""
        return {k: v for k, v in self.ranking_parameters(model).items() if k not in self.ranking_fixed}

    @torch.no_grad()
    def restart_ranking(self, model: nn.Module, generator: torch.Generator) -> None:
        """The head as the ranking fit starts it: its own embeddings drawn N(0, ``RANKING_INITIAL_STD``)
        (one-column tables, the item offsets, zero), its maps over the rating representation
        neutral: scales one, linear maps zero."""
        for name, p in self.ranking_parameters(model).items():
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else None
            if isinstance(owner, nn.Embedding):
                if owner.embedding_dim == 1:
                    p.zero_()
                else:
                    p.normal_(0.0, RANKING_INITIAL_STD, generator=generator)
                if owner.padding_idx is not None:
                    p[owner.padding_idx].zero_()
            elif owner is None:   # a scale of the module's own
                p.fill_(1.0)
            else:
                p.zero_()

    def item_vectors(self, model: nn.Module) -> torch.Tensor | None:
        """Each item's representation in the model, [n_items, D]: what the ``similar_items`` table
        compares (cosine similarity). By default the items' side of the ranking head
        (``ranking_items``), which the ranking fit trains on which items the same users pick;
        None where the module has none, and then the model has no ``item_vectors`` graph."""
        if not hasattr(model, "ranking_items"):
            return None
        return model.ranking_items()[0].detach()

    def predict(self, model: nn.Module, batch: Inputs) -> torch.Tensor:
        """``unit_rating`` [B] of a batch."""
        return self.outputs(model, batch)[0]

    # -- data ----------------------------------------------------------------------------------
    def training_inputs(self, train: Interactions, config: Any, n_items: int) -> tuple[TrainingRows, torch.Tensor]:
        """The training ratings as rows to draw batches from, and their [0, 1] targets in row order."""
        return RowInputs(self.pair_inputs(train.users, train.items, None)), torch.as_tensor(train.unit)

    def pair_inputs(self, users: np.ndarray, items: np.ndarray, context: UserContext | None) -> Inputs:
        """Inputs for (user, item) index pairs, in the pairwise graph's order: the same feeds the
        scoring job gives that graph (``context`` cut to the model's length)."""
        if context is None:
            context = UserContext(np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32))
        feeds = build_feeds(self.pairwise_inputs, users, items, context)
        return tuple(torch.as_tensor(feeds[name]) for name in self.pairwise_inputs)

    def with_items(self, batch: Inputs, items: torch.Tensor) -> Inputs:
        """The same batch with each row's item replaced (sampled items for the ranking loss)."""
        return batch[0], items, *batch[2:]

    def penalty_ids(self, batch: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item indices of a batch's rows: the rows of ``user_tables``, ``item_tables`` and
        ``bias_tables`` the L2 penalty covers (``export.training.penalty``)."""
        return batch[0], batch[1]

    # -- graphs --------------------------------------------------------------------------------
    def pairwise_core(self, model: nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """What the pairwise graph runs: ``(*pairwise inputs) -> (unit_rating, logit)``, [B] each."""
        return model

    @abstractmethod
    def all_items_core(self, model: nn.Module) -> nn.Module:
        """A module ``(*all_items inputs) -> (unit_rating, logit)`` [B, n_items] each, with
        ``ranking(users) -> logit`` [B, n_items]: the same arithmetic as the model, rearranged."""

    def graphs(self, model: nn.Module, scale: RatingScale) -> dict[str, nn.Module]:
        """The modules exported to ONNX, by graph kind (``contract.bundle_format.GRAPH_KINDS``, and
        ``item_vectors`` where the family has ``item_vectors``)."""
        core = self.all_items_core(model).eval()
        graphs = {"pairwise": RatedGraph(self.pairwise_core(model), scale).eval(),
                  "all_items": RatedGraph(core, scale).eval(),
                  "ranking": RankingGraph(core).eval()}
        with torch.no_grad():
            vectors = self.item_vectors(model)
        if vectors is not None:
            graphs["item_vectors"] = ItemVectorsGraph(vectors).eval()
        return graphs

    def graph_inputs(self) -> dict[str, tuple[str, ...]]:
        """Input names of each graph, as the bundle manifest records them."""
        return {"pairwise": self.pairwise_inputs, "all_items": self.all_items_inputs, "ranking": self.ranking_inputs,
                "item_vectors": ("item",)}


class PairFamily(Family):
    """A family whose module reads (user, item) pairs; ``user_embedding`` and ``item_embedding``
    (and the ranking head's ``rank_*_embedding``) are penalised."""

    user_tables = ("user_embedding", "rank_user_embedding")
    item_tables = ("item_embedding", "rank_item_embedding")

    def sampled_outputs(self, model: nn.Module, batch: Inputs,
                        sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The module's ``with_sampled(users, items, sampled)`` where it has one (MF and the dense net
        share the users' side of their ranking heads), else the two passes."""
        if hasattr(model, "with_sampled"):
            return model.with_sampled(batch[0], batch[1], sampled)
        return super().sampled_outputs(model, batch, sampled)

    def negative_outputs(self, model: nn.Module, batch: Inputs,
                         negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The module's ``with_negatives(users, items, negatives)`` where it has one (the users'
        side computed once), else the doubled batch."""
        if hasattr(model, "with_negatives"):
            return model.with_negatives(batch[0], batch[1], negatives)
        return super().negative_outputs(model, batch, negatives)


class RatedGraph(nn.Module):
    """A core's ``(unit_rating, logit)`` with the clipped rating between them: the graph outputs
    ``contract.bundle_format.PAIR_OUTPUTS``."""

    def __init__(self, core: Callable[..., tuple[torch.Tensor, torch.Tensor]], scale: RatingScale) -> None:
        super().__init__()
        self.core = core
        self.scale = scale

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        unit, logit = self.core(*inputs)
        return unit, self.scale.clipped_rating(unit), logit


class RankingGraph(nn.Module):
    """An all-items core cut down to its ranking head, ``(*ranking inputs) -> logit [B, n_items]``:
    what a top-N-only run needs, with no rating arithmetic per pair."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.core.ranking(*inputs)


class ItemVectorsGraph(nn.Module):
    """``item [B] -> item_vector [B, D]``: the family's item representation scaled to unit length,
    so that a dot product of two is their cosine similarity (a zero vector stays zero)."""

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("vectors", vectors.detach().clone().float())

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return unit_vectors(self.vectors[items])


def unit_vectors(vectors: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length; rows of length zero stay zero (the one definition: the graph
    and ``make verify`` both use it)."""
    return torch.nn.functional.normalize(vectors, dim=1)


def init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Initialise every parameter from ``generator`` (no global RNG): embeddings N(0, 0.05),
    biases zero, Linear and LSTM weights uniform(+-1/sqrt(fan)) as torch's defaults, padding zero,
    any other parameter left as its module built it."""
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
