"""Run configuration as frozen dataclasses; every field is recorded in the bundle manifest."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


REFITS = ("fresh", "continue", "none")
"""The values of ``TrainingConfig.refit``."""


@dataclass(frozen=True)
class TrainingConfig:
    """How one model is fitted."""

    learning_rate: float = 3e-3
    """Adam step size."""
    embedding_decay: float = 0.0
    """L2 penalty on the embeddings and biases of the rows in each mini-batch (training scale)."""
    bias_decay: float = 0.0
    """L2 penalty on the user and item biases of the rows in each mini-batch."""
    weight_decay: float = 0.0
    """Adam weight decay on the dense layers' weights."""
    rank_weight: float = 0.5
    """Weight of the ranking head's loss: binary cross-entropy of rated pairs (label 1) against
    as many uniformly sampled items (label 0), added to the rating MSE. Where the head reads the
    rating representation detached (MF, LSTM) it changes the ranking only, not the ratings."""
    batch_size: int = 1024
    """Ratings per mini-batch."""
    max_epochs: int = 40
    """Upper bound on passes over the training ratings."""
    patience: int = 3
    """Stop after this many epochs without a better validation RMSE; the best epoch is kept."""
    sparse_embeddings: bool | None = None
    """Train the embedding tables with sparse gradients (SparseAdam on the rows each batch
    touches) instead of Adam on whole tables. None: only when the tables are large (see
    ``training.SPARSE_EMBEDDING_PARAMETERS``), where dense updates of every row dominate each step."""
    refit: str = "fresh"
    """How the validation ratings join the model once early stopping has chosen its epoch (so that
    they choose when to stop without being lost to it), one of ``REFITS``: "fresh" trains a fresh
    copy (same initial weights) on training and validation ratings together for the chosen number
    of epochs and keeps it; "continue" trains the early-stopped model ``continue_epochs`` more
    epochs on both (nearly as accurate for the dense net and the LSTM at a fraction of the cost);
    "none" keeps the early-stopped model."""
    continue_epochs: int = 2
    """Epochs over training + validation ratings after early stopping when ``refit`` is "continue"."""
    time_budget_s: float | None = None
    """Stop once training has taken this long (checked every batch; the epoch in progress is
    cut short and validated), for catalogues too large for full epochs. None: no limit."""


@dataclass(frozen=True)
class MFConfig:
    """Biased matrix factorisation."""

    dim: int = 128
    """Size of the user and item embeddings."""
    rank_dim: int = 32
    """Size of the ranking head's own user and item embeddings."""
    training: TrainingConfig = TrainingConfig(learning_rate=2e-3, embedding_decay=0.025, patience=5, rank_weight=2.0)


@dataclass(frozen=True)
class DenseConfig:
    """Feed-forward net on concatenated user and item embeddings."""

    dim: int = 64
    """Size of each of the user and item embeddings."""
    hidden: int = 128
    """Width of the hidden ReLU layer."""
    rank_dim: int = 32
    """Size of the ranking head's own user and item embeddings."""
    training: TrainingConfig = TrainingConfig(learning_rate=2e-3, embedding_decay=0.03, weight_decay=1e-4, patience=5,
                                              rank_weight=2.0, refit="continue")


@dataclass(frozen=True)
class LSTMConfig:
    """LSTM over each user's latest items."""

    window: int = 10
    """Sequence length L: the L - 1 latest history items, then the item to rate."""
    dim: int = 32
    """Size of the item embeddings."""
    hidden: int = 32
    """LSTM state size."""
    user_dim: int = 128
    """Size of the user embedding and of the item factors it meets in ``<user, a_item>``."""
    user_input: int = 32
    """Size of the user embedding's linear projection fed to every step: narrower than the
    embedding, because the LSTM's input product is most of its training cost (figures in the README)."""
    rank_dim: int = 32
    """Size of the ranking head's own user and item embeddings."""
    training_context: str = "latest"
    """Each training rating's history: "latest", the user's latest ``window - 1`` other ratings,
    which is the context the scoring job gives every pair; or "preceding", the ratings just before
    it in time (next-item training, which rates pairs scored from the latest history worse)."""
    training: TrainingConfig = TrainingConfig(learning_rate=3e-3, embedding_decay=0.02, weight_decay=1e-5, patience=3,
                                              rank_weight=2.0, refit="continue")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a trained bundle besides the data."""

    seed: int = 42
    """The one seed; numpy and torch generators are derived from it."""
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / validation / test fractions when a single ratings file is split."""
    validation_fraction: float = 0.1
    """Share of an explicit training file held out for early stopping."""
    models: tuple[str, ...] = ("mf", "dense", "lstm")
    """Which models to train and export."""
    device: str = "cpu"
    """Where torch trains: "cpu" or "cuda" (export, parity and scoring inputs stay on the CPU)."""
    mf: MFConfig = field(default_factory=MFConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    lstm: LSTMConfig = field(default_factory=LSTMConfig)

    def model_config(self, name: str) -> MFConfig | DenseConfig | LSTMConfig:
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PARITY_SAMPLE_PAIRS = 10_000
"""Minimum number of (user, item) pairs per model in the parity sample."""

PARITY_MAX_TEST_PAIRS = 100_000
"""At most this many test pairs (a seeded sample) in the parity sample: every test pair on
MovieLens 100K and 1M, while export of a 20M-rating catalogue does not score every user twice."""

PARITY_MAX_USERS = 5_000
"""At most this many users (a seeded sample) in the parity sample: the all-items graphs score
every item for each of them, so this bounds export's parity work on large catalogues."""

PARITY_FULL_USERS = 5
"""Users whose every item is in the parity sample."""

ONNX_OPSET = 17
"""Opset of the exported graphs."""


def model_config_from_dict(name: str, values: dict[str, Any]) -> MFConfig | DenseConfig | LSTMConfig:
    """Rebuild a model's config from the dictionary a manifest recorded."""
    kinds = {"mf": MFConfig, "dense": DenseConfig, "lstm": LSTMConfig}
    fields = {k: v for k, v in values.items() if k != "training"}
    return kinds[name](**fields, training=TrainingConfig(**values.get("training", {})))
