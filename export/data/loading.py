"""From the command line's data options to a split ``Dataset``, with checksums of every input."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from contract.checksums import md5_file
from contract.errors import DataError, UsageError
from contract.paths import DEFAULT_DATA_DIR
from contract.store import is_remote
from contract.feedback import EXPLICIT, IMPLICIT, IMPLICIT_SCALE, confidence
from contract.scale import MOVIELENS_STARS, RatingScale

from ..config import RunConfig
from .dataset import Dataset, Interactions, Vocabulary
from .columns import ColumnMapping
from .fetch import fetch_movielens
from .items_file import read_items
from .ratings_file import RatingsFile, RatingsOptions, rating_scale, read_ratings
from .split import split_frame
from .synthetic import as_interactions, generate_ratings

log = logging.getLogger(__name__)


ITEM_FILES = ("u.item", "movies.dat", "movies.csv")
"""MovieLens items files looked for beside a ratings file when ``--items`` is not given."""


@dataclass(frozen=True)
class DataSource:
    """Where the ratings come from and how to read them: the cached MovieLens download, a folder,
    a ratings file (any form ``readers.read_table`` takes), or explicit training and test files."""

    ratings: str | None = None
    """A ratings file, a folder or glob of Parquet part files; split into train/validation/test."""
    data_dir: Path | None = None
    """An ml-100k folder with ``u.data`` and optionally ``u.item``."""
    train_file: str | None = None
    test_file: str | None = None
    items: str | None = None
    """Item titles; default: a MovieLens items file beside the ratings, if there is one."""
    cache_dir: Path = DEFAULT_DATA_DIR
    """Download cache used when no ratings are given."""
    synthetic: tuple[int, int, int] | None = None
    """Generate (users, items, ratings) seeded synthetic ratings instead of reading files."""
    options: RatingsOptions = RatingsOptions()
    item_columns: ColumnMapping = ColumnMapping()
    rating_scale: RatingScale | None = None
    """The ratings' scale; None: the lowest and highest rating seen."""
    as_of: int | None = None
    """Unix seconds: train on the ratings up to this time only (None: all of them)."""

    def ratings_files(self) -> list[str]:
        """Ratings files: one to split, or train then test."""
        given = [x for x in (self.ratings, self.data_dir, self.train_file) if x is not None]
        if len(given) > 1:
            raise UsageError("--ratings, --data-dir and --train-file/--test-file: give one of them")
        if (self.train_file is None) != (self.test_file is None):
            raise UsageError("--train-file and --test-file go together; give both or neither")
        if self.train_file is not None:
            return [self.train_file, self.test_file]
        if self.ratings is not None:
            return [self.ratings]
        folder = self.data_dir if self.data_dir is not None else fetch_movielens(self.cache_dir)
        if not Path(folder).is_dir():
            raise DataError(f"{folder}: --data-dir is not a directory")
        return [str(Path(folder) / "u.data")]

    def items_file(self, ratings: str) -> str | None:
        if self.items is not None:
            return self.items
        if is_remote(ratings):
            return None   # titles beside ratings on a store are not looked for: name them with --items
        folder = Path(ratings).parent if Path(ratings).is_file() else Path(ratings)
        return next((str(folder / name) for name in ITEM_FILES if (folder / name).is_file()), None)


def parse_as_of(text: str | None) -> int | None:
    """``--as-of``: Unix seconds, or an ISO 8601 date or date-time (UTC unless it names a zone)."""
    if text is None:
        return None
    if text.strip().isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--as-of: expected Unix seconds or an ISO 8601 date or date-time such as 2026-11-30 "
                         f"or 2026-11-30T06:00:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def ratings_as_of(files: list[RatingsFile], as_of: int) -> dict[str, str]:
    """Keep each file's ratings up to ``as_of`` (in place); what was left out, for the bundle's
    fingerprint: nothing when no rating is later, so an unchanged selection reuses its bundle."""
    untimed = [f.source.described for f in files if f.time_column is None]
    if untimed:
        raise UsageError(f"--as-of: {untimed[0]} has no timestamp column (map one with --columns timestamp=NAME)")
    total = kept = latest = 0
    for file in files:
        times = file.frame["timestamp"].to_numpy()
        keep = times <= as_of
        total, kept = total + len(times), kept + int(keep.sum())
        latest = max(latest, int(times[keep].max(initial=0)))
        file.frame = file.frame[keep].reset_index(drop=True)
        if file.frame.empty:
            raise DataError(f"{file.source.described}: no rating at or before --as-of "
                            f"{datetime.fromtimestamp(as_of, timezone.utc).isoformat()}")
    if kept == total:
        return {}
    log.info("--as-of %s: %d of %d ratings, the latest at %s", datetime.fromtimestamp(as_of, timezone.utc).isoformat(),
             kept, total, datetime.fromtimestamp(latest, timezone.utc).isoformat())
    return {"as_of": f"{kept} ratings through {latest}"}


def checksums(files: list[RatingsFile]) -> dict[str, str]:
    """md5 of every file the ratings were read from, keyed by its path."""
    return {part.name: md5_file(part.path) for file in files for part in file.source.parts}


def build_dataset(frames: list[pd.DataFrame], config: RunConfig, rng: np.random.Generator,
                  titles: dict[int, str] | None = None, scale: RatingScale = MOVIELENS_STARS,
                  feedback: str = EXPLICIT) -> Dataset:
    """Split one frame into train/validation/test, or an explicit (train, test) pair into
    train/validation plus test; test pairs with a user or item unseen in training are dropped."""
    notes: dict[str, int] = {}
    if len(frames) == 1:
        (train, validation, test), notes["moved_to_train"] = split_frame(frames[0], rng, config.split)
        history_frame = frames[0]
    else:
        fraction = config.validation_fraction
        (train, validation), notes["moved_to_train"] = split_frame(frames[0], rng, (1 - fraction, fraction))
        test, history_frame = frames[1], frames[0]
    vocab = Vocabulary.from_frame(train)
    warm = vocab.known(test)
    notes["cold_start_test_dropped"] = int((~warm).sum())
    if notes["cold_start_test_dropped"]:
        log.warning("test set: %d ratings of users or items with no training rating are left out "
                    "of the metrics (cold start: the models have no embedding for them)",
                    notes["cold_start_test_dropped"])
    dataset = Dataset(
        vocab=vocab,
        scale=scale,
        train=Interactions.from_frame(train, vocab, scale),
        validation=Interactions.from_frame(validation, vocab, scale),
        test=Interactions.from_frame(test[warm], vocab, scale),
        history=Interactions.from_frame(history_frame, vocab, scale),
        item_titles=titles or {},
        notes=notes,
        floor_rmse_stars=_floor(test[warm]),
        feedback=feedback,
    )
    log.info("data: %d users, %d items; %d train, %d validation, %d test ratings",
             vocab.n_users, vocab.n_items, len(dataset.train), len(dataset.validation), len(dataset.test))
    return dataset


def _floor(test: pd.DataFrame) -> float | None:
    """RMSE of the planted truth (the synthetic generator's ``expected`` column) on the test ratings."""
    if "expected" not in test.columns or test.empty:
        return None
    error = test["expected"].to_numpy(np.float64) - test["rating"].to_numpy(np.float64)
    return float(np.sqrt(np.mean(error ** 2)))


def load_dataset(source: DataSource, config: RunConfig,
                 rng: np.random.Generator) -> tuple[Dataset, dict[str, str]]:
    """Read, check and split the configured data; return it with the inputs' checksums."""
    if source.synthetic is not None:
        frame = generate_ratings(*source.synthetic, seed=config.seed, with_truth=True)
        if source.as_of is not None:
            raise UsageError("--as-of: synthetic ratings have no dates; give --ratings with a timestamp column")
        shape = ",".join(map(str, source.synthetic))
        if source.options.implicit:
            interactions = as_interactions(frame, config.seed)
            frame = interactions.drop(columns="weight").assign(rating=confidence(interactions["weight"].to_numpy()))
            dataset = build_dataset([frame], config, rng, scale=IMPLICIT_SCALE, feedback=IMPLICIT)
        else:
            dataset = build_dataset([frame], config, rng)
        return (dataclasses.replace(dataset, sources=(f"--synthetic {shape}",)),
                {f"synthetic:{shape}": f"seed={config.seed}" + (", implicit" if source.options.implicit else "")})
    names = source.ratings_files()
    if source.options.implicit and source.rating_scale is not None:
        raise UsageError("--rating-scale: --feedback implicit has no ratings; its scores lie on [0, 1]")
    files = [read_ratings(name, source.options) for name in names]
    selection = ratings_as_of(files, source.as_of) if source.as_of is not None else {}
    scale = IMPLICIT_SCALE if source.options.implicit else rating_scale(files, source.rating_scale)
    titles = None
    items = source.items_file(names[0])
    if items is not None:
        text_ids = not all(pd.api.types.is_integer_dtype(f.frame["item_id"]) for f in files)
        titles = read_items(items, source.item_columns, as_text=text_ids or source.options.string_ids)
    dataset = build_dataset([f.frame for f in files], config, rng, titles, scale, source.options.feedback)
    ordered = all(f.has_order for f in files)
    sources = tuple(f.source.described for f in files)
    return dataclasses.replace(dataset, ordered=ordered, sources=sources), {**checksums(files), **selection}


def reading(source: DataSource) -> dict[str, str]:
    """How the files were read, where it is not the default, for the bundle's fingerprint: the
    same file read as interactions, or with another column as the rating, is other data."""
    options, default = source.options, RatingsOptions()
    chosen = {"feedback": options.feedback, "columns": options.columns.roles, "duplicates": options.duplicates,
              "string_ids": options.string_ids, "order_by": options.order_by,
              "rating_scale": None if source.rating_scale is None else source.rating_scale.to_dict()}
    defaults = {"feedback": default.feedback, "columns": default.columns.roles, "duplicates": default.duplicates,
                "string_ids": default.string_ids, "order_by": default.order_by, "rating_scale": None}
    if chosen == defaults:
        return {}
    return {"reading": ", ".join(f"{k}={v}" for k, v in chosen.items() if v != defaults[k])}
