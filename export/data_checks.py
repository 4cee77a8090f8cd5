"""Checks of the training data before anything trains: the minimums any run needs, and the
comparison with the data the current bundle was trained on.

A nightly job's most common failure is a broken upstream export: a truncated file, ids that
turned from integers into text, a rating scale that moved. Each would train and publish models
of a different data set. So, before training (as TFX's ExampleValidator runs before its
evaluator), the new data's profile is compared with the current bundle's: ratings, users or
items shrinking by more than ``max_shrink``, an id type or the rating scale changing refuse the
run (exit 3, nothing trained or published) unless ``accept_change`` says the change is meant.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from contract import bundle_format as layout
from contract.feedback import EXPLICIT
from contract.errors import DataError, GateRefused

from .data.dataset import Dataset

log = logging.getLogger(__name__)

MIN_RATINGS = 50
"""Fewest training ratings a run accepts: the split holds out a tenth for validation and a tenth
for the test, and with fewer than 50 ratings those hold a handful each, too few for any figure."""
MIN_USERS = MIN_ITEMS = 2
"""Fewest users and items: with one of either there is nothing to rank or to personalise."""
OVERRIDE = "--accept-data-change"


@dataclass(frozen=True)
class DataCheckOptions:
    """How far the data may move from the current bundle's before a run is refused."""

    max_shrink: float = 0.5
    """Largest share by which the ratings, users or items may shrink."""
    accept_change: bool = False
    """Train and publish even if a check fails (the checks are still recorded)."""


@dataclass(frozen=True)
class DataProfile:
    """What the checks compare: sizes, id types and the rating scale of one training data set."""

    ratings: int
    """Ratings read (training and test files together), after ``--as-of`` and duplicates."""
    users: int
    """Users of the training vocabulary."""
    items: int
    """Items of the training vocabulary."""
    user_ids: str
    """"integer" or "text"."""
    item_ids: str
    rating_scale: tuple[float, float]
    feedback: str = EXPLICIT
    """``explicit`` or ``implicit`` (``contract.feedback``)."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rating_scale": list(self.rating_scale)}


def _id_kind(kind: str | pa.DataType) -> str:
    if isinstance(kind, pa.DataType):
        return "integer" if pa.types.is_integer(kind) else "text"
    return "integer" if kind in "iu" else "text"


def profile_of(dataset: Dataset) -> DataProfile:
    """The profile of a loaded data set."""
    notes = dataset.notes
    ratings = (len(dataset.train) + len(dataset.validation) + len(dataset.test)
               + int(notes.get("cold_start_test_dropped", 0)))
    return DataProfile(ratings, dataset.vocab.n_users, dataset.vocab.n_items,
                       _id_kind(dataset.vocab.user_ids.dtype.kind), _id_kind(dataset.vocab.item_ids.dtype.kind),
                       (dataset.scale.low, dataset.scale.high), dataset.feedback)


def bundle_profile(bundle: Path, manifest: dict[str, Any]) -> DataProfile:
    """The profile a bundle recorded; for bundles written before profiles were, derived from its
    manifest's counts and its vocabulary files' types."""
    data = manifest.get("data", {})
    if "profile" in data:
        recorded = data["profile"]
        return DataProfile(**{**recorded, "rating_scale": tuple(recorded["rating_scale"])})
    ratings = sum(int(data.get(k, 0)) for k in ("n_train", "n_validation", "n_test", "cold_start_test_dropped"))
    scale = manifest["rating_scale"]
    return DataProfile(ratings, int(manifest["n_users"]), int(manifest["n_items"]),
                       _id_kind(pq.read_schema(bundle / layout.USERS).field("user_id").type),
                       _id_kind(pq.read_schema(bundle / layout.ITEMS).field("item_id").type),
                       (float(scale["low"]), float(scale["high"])), manifest.get("feedback", EXPLICIT))


def check_minimums(dataset: Dataset, described: str) -> None:
    """DataError (exit 1) for data no model can be trained on."""
    vocab = dataset.vocab
    if vocab.n_users < MIN_USERS or vocab.n_items < MIN_ITEMS:
        raise DataError(f"{described}: {vocab.n_users} user(s) and {vocab.n_items} item(s) in the training data; "
                        f"expected at least {MIN_USERS} users and {MIN_ITEMS} items")
    trained_on = len(dataset.train) + len(dataset.validation)
    if trained_on < MIN_RATINGS:
        raise DataError(f"{described}: {trained_on} training rating(s); expected at least {MIN_RATINGS}")


def _scale(scale: tuple[float, float]) -> str:
    return f"{scale[0]:g}-{scale[1]:g}"


def compare_profiles(new: DataProfile, old: DataProfile, max_shrink: float) -> list[str]:
    """What changed beyond the limits, one phrase each (empty: nothing)."""
    problems = []
    for name in ("ratings", "users", "items"):
        now, before = getattr(new, name), getattr(old, name)
        if before and now < before * (1 - max_shrink):
            problems.append(f"{now:,} {name} against {before:,} (shrank {1 - now / before:.0%}, more than "
                            f"--max-data-shrink {max_shrink:g})")
    for name in ("user_ids", "item_ids"):
        now, before = getattr(new, name), getattr(old, name)
        if now != before:
            problems.append(f"{name.replace('_', ' ')} are {now} where they were {before}")
    if new.feedback != old.feedback:
        problems.append(f"the feedback is {new.feedback} where it was {old.feedback}")
    elif new.rating_scale != old.rating_scale:
        problems.append(f"the rating scale is {_scale(new.rating_scale)} where it was {_scale(old.rating_scale)}")
    return problems


def check_data(dataset: Dataset, described: str, previous: Path | None, previous_manifest: dict[str, Any] | None,
               options: DataCheckOptions) -> dict[str, Any]:
    """The record of the data checks (for the manifest); GateRefused (exit 3) when the data moved
    past a limit from the current bundle's and ``accept_change`` is off."""
    profile = profile_of(dataset)
    record: dict[str, Any] = {"profile": profile.to_dict(), "max_shrink": options.max_shrink,
                              "accept_change": options.accept_change}
    if previous is None or previous_manifest is None:
        return {**record, "compared_with": None, "problems": [], "passed": True}
    old = bundle_profile(previous, previous_manifest)
    problems = compare_profiles(profile, old, options.max_shrink)
    record.update(compared_with=previous.name, previous_profile=old.to_dict(), problems=problems,
                  passed=not problems)
    if problems and not options.accept_change:
        raise GateRefused(f"{described}: against the current bundle {previous.name}'s data, {'; '.join(problems)}; "
                          f"nothing was trained or published (pass {OVERRIDE} if the data really changed)")
    if problems:
        log.warning("%s: %s (accepted: %s)", described, "; ".join(problems), OVERRIDE)
    return record
