"""How one model is fitted: ``TrainingConfig``, a frozen dataclass that checks itself when built."""
from __future__ import annotations

from dataclasses import dataclass

from contract.errors import ConfigError

from .ranking_metric import RELEVANT_MIN

REFITS = ("fresh", "continue", "none")
"""The values of ``TrainingConfig.refit``."""

RANK_LOSSES = ("softmax", "squared")
"""The values of ``TrainingConfig.rank_loss``."""

MIN_STEPS_PER_EPOCH = 64
"""An automatic batch size leaves at least this many steps per epoch (MovieLens 100K's 80K
training ratings stay at 1,024)."""
AUTO_BATCH_RANGE = (1024, 32_768)
"""Smallest and largest automatic batch size."""


@dataclass(frozen=True)
class TrainingConfig:
    """How one model is fitted."""

    learning_rate: float = 3e-3
    """Adam step size."""
    embedding_decay: float = 0.0
    """L2 penalty on the embedding rows each mini-batch touches (training scale)."""
    bias_decay: float = 0.0
    """L2 penalty on the user and item biases of the rows in each mini-batch."""
    weight_decay: float = 0.0
    """Adam weight decay on the dense layers' weights (scaled down for large sets: ``reference_ratings``)."""
    rank_weight: float = 0.5
    """Weight of the joint ranking loss, added to the rating MSE: a softmax cross-entropy of each
    rated pair's logit against those of ``rank_negatives`` uniformly sampled items (the rated item
    is the one to pick). It gives the ranking fit (``rank_fit_patience``) a head to beat, and where
    the head reads the rating representation undetached (the dense net) it regularises the rating."""
    rank_negatives: int = 8
    """Sampled items each rated item competes with in the ranking loss: more approach a softmax
    over the whole catalogue (a top-N objective) at a cost of one ranking-head lookup each."""
    rank_positive_min: float = 0.5
    """Smallest rating on [0, 1] whose pair the ranking loss learns to rank first (0.5: the
    scale's midpoint): the lists then hold what users rate highly, not what they rate at all, so
    that they do not recommend what the same model predicts they will dislike. 0: every rating."""
    rank_fit_patience: int = 3
    """The ranking fit (``ranking_fit``): after the rating fit, the ranking head's own parameters
    are trained alone by a softmax over the catalogue, each rated item weighted by its rating on
    [0, 1], until this many epochs bring no better validation NDCG@10; 0: no ranking fit (the
    head as the joint loss above left it)."""
    rank_learning_rate: float = 3e-3
    """Adam step size of the "softmax" ranking fit at ``reference_batch`` (square-root rule above it)."""
    rank_decay: float = 1e-4
    """L2 penalty of the ranking fit on each batch's user vectors and rated items' vectors
    ("softmax", per rated item); with the "squared" loss, on each user's vector and on the item
    vectors, in the units of the summed squared error of a user's row (ALS's regularisation)."""
    rank_candidates: int = 2048
    """The ranking fit's softmax runs over the whole catalogue up to this many items; over a
    larger one, over this many items drawn uniformly for each batch, plus each rating's own item."""
    rank_loss: str = "softmax"
    """The ranking fit's objective, one of ``RANK_LOSSES``. "softmax": the softmax above, each
    rated item against the catalogue. "squared" (implicit feedback): the squared error of each
    user's whole catalogue row of logits against 1 for the user's interactions and 0 elsewhere,
    an interaction weighted ``rank_positive_weight * confidence`` and every other pair 1, solved
    by alternating least squares (``ranking_als``; an epoch is one sweep): implicit-feedback ALS's
    objective and solver, where every item a user has not touched counts against it, not a
    sample, so that a list ranks what users pick above what they merely could."""
    rank_positive_weight: float = 1.0
    """The "squared" loss's weight of an interaction, times its confidence (ALS's alpha)."""
    rank_recency_window: float = 0.0
    """The "squared" loss weighs each interaction up by how recent it is in its user's history,
    ``1 + w * exp(-later / window)`` for ``later`` interactions after it, with ``w`` chosen per
    run (``recency``); 0: no recency weighting."""
    rank_tolerance: float = 1e-4
    """The "squared" fit stops at the first sweep that lowers its objective by less than this share."""
    rank_validation_users: int = 2000
    """At most this many validation users (a seeded sample) measure the ranking fit's NDCG@10."""
    negative_targets: bool = False
    """Implicit feedback: each training row's first sampled item (of ``rank_negatives``) is also a
    non-interaction whose rating output the loss pulls to 0, as the rated item's is pulled to its
    confidence, so that the rating output learns which items a user interacts with (the
    ``predictions`` table's ``score``), not a constant."""
    rank_relevant_min: float = RELEVANT_MIN
    """Validation ratings on [0, 1] at or above this count as relevant in the ranking fit's NDCG@10
    (4 stars on 1-5, as ``make evaluate``; 0 for implicit feedback: every held-out interaction)."""
    batch_size: int | None = None
    """Ratings per mini-batch; None: ``batch_size_for`` the training set (1,024 up to about 128K
    training ratings, larger for larger sets)."""
    reference_batch: int = 1024
    """The batch size ``learning_rate`` is tuned for: a batch of B ratings steps with
    ``learning_rate * sqrt(B / reference_batch)`` (Adam's square-root rule), so that a larger batch
    trains alike in fewer, cheaper-per-rating steps."""
    reference_ratings: int | None = None
    """The training-set size ``weight_decay`` is tuned for: a set of N ratings above it trains
    with ``weight_decay * reference_ratings / N`` (``weight_decay_for``), smaller sets with the
    tuned decay. The loss is a mean over the ratings, so a fixed decay weighs as much against 16M
    ratings as against 80K; scaled, it is a fixed prior against their summed loss, and a large
    catalogue's dense layers are free to fit what its ratings show. None: the tuned decay at every
    size."""
    user_chunk: int | None = 1
    """Each epoch visits a user's ratings in runs of this many, the runs shuffled
    (``batches.epoch_order``); 1 shuffles the ratings uniformly. Runs let a model that reads each
    distinct user history once per batch (the LSTM) share that work between a user's ratings.
    None: ``user_chunk_for`` the batch size."""
    plateau_step_factor: float = 0.5
    """Each epoch that does not improve the validation RMSE multiplies the step size by this
    (1: a constant step). Early stopping then ends a run only after the step has shrunk, so the
    step that suits a catalogue is found on its own validation split; a fresh refit replays the
    same steps, a continued one goes on at the best epoch's."""
    plateau_step_floor: float = 0.0
    """The plateaus' shrinking stops at this multiple of ``learning_rate`` (0: none). A step that
    starts above it (a large batch's ``learning_rate_for``) shrinks down to it and no further; one
    that starts at or below it (at ``reference_batch``, where 1 keeps the tuned step constant)
    stays where it is. For a model whose best step at the reference batch is its tuned one, so
    that a large batch may start with the square-root rule's larger step and settle, not fall
    past the tuned step."""
    min_improvement: float = 1e-4
    """An epoch counts as better only if it lowers the best validation RMSE by at least this
    share of it: at ever smaller steps a run would otherwise go on for gains far below the
    validation split's own noise."""
    decay_steps: int = 0
    """The regularisation path: after early stopping, up to this many more phases, each from the
    best weights so far (a fresh optimizer at the configured step: a step the phase before halved
    on its plateaus is too small to reach the optimum of a weaker decay) and the embedding decay
    multiplied by ``decay_step_factor`` once more; the first phase that does not improve the
    validation RMSE ends it. A strong decay first keeps the embeddings from fitting noise while the structure is
    learnt; the weaker ones after it fit what the strong one shrank away. The decay a catalogue
    wants is so found on its own validation split: on one that wants the configured decay the
    path costs a phase of ``patience`` epochs and changes nothing."""
    decay_step_factor: float = 0.5
    """What each phase of the decay path multiplies the embedding decay by."""
    rank_cut: bool = False
    """At each plateau of a phase (an epoch that does not improve) and after each phase of the fit
    (and of the decay path), cut the best weights' rating factors, in a family that has them
    (``Family.rank``: MF, the dense net), to the smallest rank whose validation RMSE stays within
    ``min_improvement`` of the uncut model's (none where rank 1 is: the factors are not learnt yet);
    training goes on from the cut weights. A strong
    decay first shrinks the directions the catalogue does not have to nearly nothing; cut away,
    they cannot fit noise once the path weakens the decay, and every later epoch is cheaper (cut
    at the first plateau, most epochs train the smaller rank). The rank is so found on the
    catalogue's own validation split; a fresh refit cuts after the same epochs."""
    rank_cut_min_gain: float = 0.01
    """The rank cut (``rank_cut``) waits until the best validation RMSE is at least this share
    below the fit's first epoch's. Before the rating factors have learnt the catalogue's taste
    every rank rates alike, so the rank the cut would choose is noise, and a net cut then to a
    few dimensions may never learn it (the dense net learns the taste in steps, flat for some
    epochs first); by the time the factors have moved the RMSE by this much, the ranks differ."""
    max_epochs: int = 200
    """Upper bound on passes over the training ratings, in each phase: a guard against a run that
    never stops, not a setting that ends training (early stopping does that)."""
    patience: int = 3
    """Stop after this many epochs without a better validation RMSE; the best epoch is kept."""
    sparse_embeddings: bool | None = None
    """Train the embedding tables with sparse gradients (lazy Adam on the rows each batch
    touches, ``row_adam.RowAdam``) instead of Adam on whole tables. None: only when the tables are large (see
    ``optimizer.SPARSE_EMBEDDING_PARAMETERS``), where dense updates of every row dominate each step."""
    refit: str = "fresh"
    """How the validation ratings join the model once early stopping has chosen its epoch, so that
    they choose when to stop without being lost to it; one of ``REFITS``. "fresh" trains a fresh
    copy (same initial weights) on training and validation ratings together for the chosen number
    of epochs; "continue" trains the early-stopped model ``continue_epochs`` more epochs on both;
    "none" keeps the early-stopped model."""
    continue_epochs: int = 2
    """Epochs over training + validation ratings after early stopping when ``refit`` is "continue"."""
    time_budget_s: float | None = None
    """Stop once training (early-stopped fit and refit together) has taken this long, checked
    every batch; an epoch of the fit cut short is still validated, and a fit cut short has no
    refit. A cap on top of early stopping for catalogues too large to wait for; None: no limit."""

    def __post_init__(self) -> None:
        if self.rank_loss not in RANK_LOSSES:
            raise ConfigError(f"training rank_loss: expected one of {list(RANK_LOSSES)}, got {self.rank_loss!r}")
        if self.refit not in REFITS:
            raise ConfigError(f"training refit: expected one of {list(REFITS)}, got {self.refit!r}")
        positive = {"learning_rate": self.learning_rate, "batch_size": self.batch_size,
                    "reference_batch": self.reference_batch, "reference_ratings": self.reference_ratings,
                    "user_chunk": self.user_chunk, "max_epochs": self.max_epochs, "patience": self.patience}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ConfigError(f"training {name}: expected a positive number, got {value!r}")
        if not 0 < self.plateau_step_factor <= 1:
            raise ConfigError(f"training plateau_step_factor: expected a number in (0, 1], got {self.plateau_step_factor!r}")
        if not 0 < self.decay_step_factor < 1:
            raise ConfigError(f"training decay_step_factor: expected a number in (0, 1), got {self.decay_step_factor!r}")
        if not 0 <= self.rank_cut_min_gain < 1:
            raise ConfigError(f"training rank_cut_min_gain: expected a number in [0, 1), got {self.rank_cut_min_gain!r}")
        if not 0 <= self.min_improvement < 1:
            raise ConfigError(f"training min_improvement: expected a number in [0, 1), got {self.min_improvement!r}")
        for name in ("rank_candidates", "rank_validation_users", "rank_learning_rate", "rank_positive_weight",
                     "rank_tolerance"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"training {name}: expected a positive number, got {getattr(self, name)!r}")
        if self.rank_negatives < 1:
            raise ConfigError(f"training rank_negatives: expected a positive integer, got {self.rank_negatives!r}")
        if not 0 <= self.rank_relevant_min <= 1:
            raise ConfigError(f"training rank_relevant_min: expected a number in [0, 1], got {self.rank_relevant_min!r}")
        if not 0 <= self.rank_positive_min <= 1:
            raise ConfigError(f"training rank_positive_min: expected a number in [0, 1], got {self.rank_positive_min!r}")
        for name in ("embedding_decay", "bias_decay", "weight_decay", "rank_weight", "continue_epochs", "time_budget_s",
                     "decay_steps", "plateau_step_floor", "rank_fit_patience", "rank_decay",
                     "rank_recency_window"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"training {name}: expected a number >= 0, got {getattr(self, name)!r}")


def batch_size_for(config: TrainingConfig, n_ratings: int) -> int:
    """``config.batch_size``, or when None the largest power of two in ``AUTO_BATCH_RANGE`` that
    leaves ``MIN_STEPS_PER_EPOCH`` steps per epoch over ``n_ratings``: per-batch overheads dominate
    small batches, and on a large training set a larger batch (with ``learning_rate_for``) costs
    no epochs."""
    if config.batch_size is not None:
        return config.batch_size
    low, high = AUTO_BATCH_RANGE
    size = low
    while size * 2 <= high and size * 2 * MIN_STEPS_PER_EPOCH <= n_ratings:
        size *= 2
    return size


def learning_rate_for(config: TrainingConfig, batch_size: int) -> float:
    """``config.learning_rate`` scaled to ``batch_size`` by the square-root rule (``reference_batch``)."""
    return config.learning_rate * (batch_size / config.reference_batch) ** 0.5


def plateau_step(config: TrainingConfig, learning_rate: float) -> float:
    """The step after a plateau at ``learning_rate``: ``plateau_step_factor`` times it, but not
    below ``plateau_step_floor * config.learning_rate`` unless it already was."""
    floor = config.plateau_step_floor * config.learning_rate
    return max(learning_rate * config.plateau_step_factor, min(learning_rate, floor))


def weight_decay_for(config: TrainingConfig, n_ratings: int) -> float:
    """``config.weight_decay`` for a training set of ``n_ratings``: scaled by
    ``reference_ratings / n_ratings`` where that is below 1."""
    if config.reference_ratings is None:
        return config.weight_decay
    return config.weight_decay * min(1.0, config.reference_ratings / max(n_ratings, 1))


def user_chunk_for(config: TrainingConfig, batch_size: int) -> int:
    """``config.user_chunk``, or when None runs of ``batch_size // reference_batch`` (at least 1):
    a batch then holds about ``reference_batch`` runs whatever its size, as many users as the
    batch the settings were tuned at. A uniform batch of a large training set holds about one
    rating per user, so a model that runs once per distinct history (the LSTM) would share
    nothing; runs share a history between a user's ratings."""
    if config.user_chunk is not None:
        return config.user_chunk
    return max(1, batch_size // config.reference_batch)


def decay_path(config: TrainingConfig) -> list[float]:
    """The embedding decay of each phase of a fit: the configured one, then ``decay_steps`` more,
    each ``decay_step_factor`` times the one before."""
    return [config.embedding_decay * config.decay_step_factor ** k for k in range(config.decay_steps + 1)]
