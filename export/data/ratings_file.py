"""Ratings as teams have them, read and checked in whole columns: ids of any integer or text type,
ratings on any scale (or, for implicit feedback, interactions with an optional weight), an
optional timestamp, duplicates resolved as asked. Each failure names the file and the line (text)
or part file and row (Parquet), what was expected and what was found."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from contract.errors import DataError, UsageError
from contract.feedback import EXPLICIT, FEEDBACK_KINDS, IMPLICIT, confidence
from contract.ids import fits_int32
from contract.scale import RatingScale

from .columns import RATING_ROLES, ColumnMapping
from .readers import SourceTable, read_table

log = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("error", "last", "mean", "sum")
"""What ``--duplicates`` may ask for when a (user, item) pair appears more than once ("sum":
implicit feedback only, its weights added up)."""
DEFAULT_DUPLICATES = {EXPLICIT: "error", IMPLICIT: "sum"}
"""The duplicates policy when ``--duplicates`` is not given: a repeated rating is a mistake to
report, a repeated interaction (a second play) is more evidence."""

_INTEGER = r"^-?[0-9]+$"
_NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$|^\s*[-+]?(nan|NaN|inf|Inf|infinity)\s*$"


@dataclass(frozen=True)
class RatingsOptions:
    """How ratings files are read: column mapping, id kind, order, duplicates."""

    columns: ColumnMapping = ColumnMapping()
    string_ids: bool = False
    """Read every id as text, even ids that look like integers."""
    order_by: str | None = None
    """A column that orders each user's ratings when there is no timestamp."""
    duplicates: str | None = None
    """One of ``DUPLICATE_POLICIES``; None: the feedback's default (``DEFAULT_DUPLICATES``)."""
    feedback: str = EXPLICIT
    """``explicit``: a rating per row; ``implicit``: each row one interaction, weighed by its
    ``weight`` column where there is one (``contract.feedback.confidence``)."""

    def __post_init__(self) -> None:
        if self.feedback not in FEEDBACK_KINDS:
            raise UsageError(f"--feedback: expected one of {', '.join(FEEDBACK_KINDS)}, got {self.feedback!r}")
        if self.duplicates is None:
            object.__setattr__(self, "duplicates", DEFAULT_DUPLICATES[self.feedback])
        if self.duplicates not in DUPLICATE_POLICIES:
            raise UsageError(f"--duplicates: expected one of {', '.join(DUPLICATE_POLICIES)}, got {self.duplicates!r}")
        if self.feedback == EXPLICIT and self.duplicates == "sum":
            raise UsageError("--duplicates sum: adds up the weights of repeated interactions, for --feedback "
                             "implicit; for ratings use error, last or mean")
        if self.feedback == EXPLICIT and "weight" in self.columns.roles:
            raise UsageError("--columns weight=...: a weight is read with --feedback implicit; ratings are read "
                             "from the rating column")
        if self.feedback == IMPLICIT and "rating" in self.columns.roles:
            raise UsageError(f"--columns rating={self.columns.roles['rating']}: --feedback implicit reads no "
                             f"rating; to weigh each interaction by that column map it as "
                             f"weight={self.columns.roles['rating']}, or train on ratings with --feedback explicit")

    @property
    def implicit(self) -> bool:
        return self.feedback == IMPLICIT


@dataclass
class RatingsFile:
    """One file's ratings as a frame of ``user_id``, ``item_id``, ``rating`` (float32; for
    implicit feedback each pair's confidence on (0, 1]) and ``timestamp`` (int64; each user's
    order, 0 where the file gives none), and where they came from."""

    frame: pd.DataFrame
    source: SourceTable
    has_order: bool
    """Whether the file gives each user's ratings an order (a timestamp or ``--order-by`` column)."""
    rating_column: str | None
    """The rating column (explicit), or the weight column (implicit; None without one)."""
    time_column: str | None = None
    """The timestamp column, when the order is a time (not an ``--order-by`` column)."""


def read_ratings(spec: str | Path, options: RatingsOptions = RatingsOptions()) -> RatingsFile:
    """Read and check one ratings file (any form ``readers.read_table`` takes)."""
    source = read_table(spec, names=options.columns.header_names("ratings"))
    check_positions(source, options.columns)
    required = ("user", "item") if options.implicit else ("user", "item", "rating")
    roles = options.columns.resolve(source.table.column_names, source.has_header, "ratings", required,
                                    source.described, ("weight",) if options.implicit else ())
    if options.implicit and (ignored := roles.pop("rating", None)) is not None:
        log.warning("%s: column '%s' is not read: with --feedback implicit every row is one interaction (to "
                    "weigh each by that column, pass --columns weight=%s)", source.described, ignored, ignored)
    order_column = options.order_by or roles.get("timestamp")
    if options.order_by is not None and options.order_by not in source.table.column_names:
        raise DataError(f"{source.described}: no column '{options.order_by}' (--order-by); columns found: "
                        f"{', '.join(source.table.column_names)}")
    # Each column leaves the Arrow table as it is converted, so memory holds about one copy of the data.
    columns = {role: source.table.column(name) for role, name in roles.items()}
    if order_column:
        columns["order"] = source.table.column(order_column)
    names = {**roles, "order": order_column}
    n = source.table.num_rows
    source.table = pa.table({})
    users = id_column(source, columns.pop("user"), names["user"], "user", options.string_ids)
    items = id_column(source, columns.pop("item"), names["item"], "item", options.string_ids)
    value_role = "weight" if options.implicit else "rating"
    if value_role in columns:
        values = number_column(source, columns.pop(value_role), names[value_role], value_role)
        ratings = _weights(source, values, names[value_role]) if options.implicit else values.astype(np.float32)
    else:   # implicit, without a weight column: each row one interaction
        ratings = np.ones(n, np.float32)
    order = order_values(source, columns.pop("order"), order_column, options.order_by is not None) \
        if order_column else np.zeros(n, np.int64)
    columns.clear()
    frame = pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings, "timestamp": order}, copy=False)
    frame = resolve_duplicates(frame, source, options.duplicates)
    if options.implicit:
        frame = _confidences(frame, source)
    time_column = roles.get("timestamp") if options.order_by is None else None
    return RatingsFile(frame, source, order_column is not None, roles.get(value_role), time_column)


def _weights(source: SourceTable, values: np.ndarray, name: str) -> np.ndarray:
    """Interaction weights: numbers >= 0 (a zero-weight row is no interaction)."""
    negative = values < 0
    if negative.any():
        row = _first(negative)
        raise DataError(f"{source.where(row)}, column '{name}': expected a weight >= 0 (a count, a duration, an "
                        f"amount), got {values[row]:g}")
    return values.astype(np.float32)


def _confidences(frame: pd.DataFrame, source: SourceTable) -> pd.DataFrame:
    """Each pair's summed weight turned into its confidence (``contract.feedback.confidence``);
    pairs of weight zero left out. DataError when no pair is left."""
    weights = frame["rating"].to_numpy(np.float64)
    kept = weights > 0
    if not kept.any():
        raise DataError(f"{source.described}: every interaction has weight 0; expected some with a weight > 0")
    if not kept.all():
        log.info("%s: %d interactions of weight 0 left out", source.described, int((~kept).sum()))
        frame, weights = frame[kept].reset_index(drop=True), weights[kept]
    return frame.assign(rating=confidence(weights))


def check_positions(source: SourceTable, columns: ColumnMapping) -> None:
    """DataError for a file without a header holding more fields than there are roles, unless
    ``--columns`` says which to read: a reshaped export (a column inserted upstream) would
    otherwise be read by position into the wrong roles without a word."""
    width = source.table.num_columns
    if source.has_header or columns.roles or width <= len(RATING_ROLES):
        return
    positions = ",".join(f"{role}={k}" for k, role in enumerate(RATING_ROLES))
    raise DataError(f"{source.where(0)}: {width} fields in a file without a header; expected at most "
                    f"{len(RATING_ROLES)} ({', '.join(RATING_ROLES)}); say which to read with --columns "
                    f"(positions from 0, e.g. --columns {positions})")


def _first(mask: pa.ChunkedArray | pa.Array | np.ndarray) -> int:
    if isinstance(mask, np.ndarray):
        return int(np.argmax(mask))
    return int(pc.index(mask, True).as_py())


def id_column(source: SourceTable, column: pa.ChunkedArray, name: str, role: str, as_text: bool) -> np.ndarray:
    """Ids as integers (int32 where every id fits, else int64), or as text (numpy unicode) when any
    id is not an integer or ``as_text``."""
    where = lambda row: f"{source.where(row)}, column '{name}'"  # noqa: E731
    if column.null_count:
        raise DataError(f"{where(_first(column.is_null()))}: missing {role} id")
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind):
        values = _narrow(column.to_numpy())
        return values.astype(str) if as_text else values
    if pa.types.is_floating(kind):
        values = _narrow(_whole_numbers(column, where, f"an integer or text {role} id"))
        return values.astype(str) if as_text else values
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{source.described}, column '{name}': expected integer or text {role} ids, got {kind} values")
    empty = pc.equal(pc.utf8_length(column), 0)
    if pc.any(empty).as_py():
        raise DataError(f"{where(_first(empty))}: missing {role} id (an empty field)")
    if not as_text:
        integer = pc.match_substring_regex(column, _INTEGER)
        if pc.all(integer).as_py():
            try:
                return _narrow(pc.cast(column, pa.int64()).to_numpy())
            except pa.ArrowInvalid:
                raise DataError(f"{source.described}, column '{name}': {role} ids exceed 64-bit integers; "
                                "pass --string-ids to read them as text") from None
        if pc.any(integer).as_py():
            row = _first(pc.invert(integer))
            first_int = _first(integer)
            raise DataError(f"{where(row)}: {role} id {column[row].as_py()!r} is text where "
                            f"{source.where(first_int)} holds the integer id {column[first_int].as_py()!r}; "
                            "ids of one column must be all integers or all text (pass --string-ids to read "
                            "them all as text)")
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str)


def _narrow(values: np.ndarray) -> np.ndarray:
    """Integer ids as int32 where every one fits (half the memory of int64), else int64."""
    return values.astype(np.int32 if fits_int32(values) else np.int64, copy=False)


def _whole_numbers(column: pa.ChunkedArray, where, expected: str) -> np.ndarray:
    """A floating column whose values are all whole numbers, as int64; DataError at the first other."""
    values = column.to_numpy()
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        row = _first(bad)
        raise DataError(f"{where(row)}: expected {expected}, got {float(values[row])}")
    return values.astype(np.int64)


def number_column(source: SourceTable, column: pa.ChunkedArray, name: str, role: str = "rating") -> np.ndarray:
    """Ratings (or weights) as float64: numbers, finite."""
    where = lambda row: f"{source.where(row)}, column '{name}'"  # noqa: E731
    if column.null_count:
        raise DataError(f"{where(_first(column.is_null()))}: missing {role}, expected a number")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        numeric = pc.match_substring_regex(column, _NUMBER)
        if not pc.all(numeric).as_py():
            row = _first(pc.invert(numeric))
            raise DataError(f"{where(row)}: expected a number, got {column[row].as_py()!r}")
    elif not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)):
        raise DataError(f"{source.described}, column '{name}': expected numeric {role}s, got {column.type} values")
    values = pc.cast(column, pa.float64()).to_numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first(bad)
        raise DataError(f"{where(row)}: expected a finite number, got {float(values[row])}")
    return values


def order_values(source: SourceTable, column: pa.ChunkedArray, name: str, ranked: bool) -> np.ndarray:
    """Each rating's place in time as int64: Unix seconds of a timestamp column (integers, or
    date-times), or, for an ``--order-by`` column of any other type, the rank of its value."""
    where = lambda row: f"{source.where(row)}, column '{name}'"  # noqa: E731
    if column.null_count:
        raise DataError(f"{where(_first(column.is_null()))}: missing value, expected each rating's time or order")
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64()).to_numpy()
    if pa.types.is_integer(kind) or (pa.types.is_floating(kind) and not ranked):
        values = column.to_numpy().astype(np.int64) if pa.types.is_integer(kind) else \
            _whole_numbers(column, where, "whole Unix seconds")
        if not ranked and (values < 0).any():
            row = _first(values < 0)
            raise DataError(f"{where(row)}: expected Unix seconds >= 0, got {values[row]}")
        return values
    if ranked:
        return np.unique(np.asarray(column.to_numpy(zero_copy_only=False)), return_inverse=True)[1].astype(np.int64)
    try:
        return pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = _first_not_a_time(column)
        raise DataError(f"{where(row)}: expected Unix seconds or a date-time, got {column[row].as_py()!r} (map "
                        "another column with --columns timestamp=NAME, or order by any column with --order-by "
                        "NAME)") from None


def _first_not_a_time(column: pa.ChunkedArray) -> int:
    """The first row of a text time column that is neither whole Unix seconds nor a date-time
    (the first row at all when the column mixes the two kinds)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return 0
    seconds = np.asarray(pc.match_substring_regex(column, r"^\s*[0-9]+\s*$").to_numpy(zero_copy_only=False))
    for row in np.flatnonzero(~seconds):
        try:
            pa.scalar(column[int(row)].as_py()).cast(pa.timestamp("s"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return int(row)
    return 0


def resolve_duplicates(frame: pd.DataFrame, source: SourceTable, policy: str) -> pd.DataFrame:
    """One rating per (user, item): DataError naming two rows of a pair under "error"; the latest
    rating (by time, then by row) under "last"; the mean (or "sum") of the ratings (or weights),
    at the latest time, under "mean"."""
    if not _may_have_duplicates(frame["user_id"].to_numpy(), frame["item_id"].to_numpy()):
        return frame
    duplicated = frame.duplicated(["user_id", "item_id"], keep=False).to_numpy()
    if not duplicated.any():
        return frame
    if policy == "error":
        rows = np.flatnonzero(duplicated)
        first = rows[0]
        key = (frame["user_id"].iat[first], frame["item_id"].iat[first])
        second = next(r for r in rows[1:] if (frame["user_id"].iat[r], frame["item_id"].iat[r]) == key)
        raise DataError(f"{source.where(first)} and {source.where(second)}: user {key[0]} rated item {key[1]} "
                        "more than once; expected one rating per (user, item) pair (pass --duplicates last to "
                        "keep the latest rating, or --duplicates mean to average them)")
    ordered = frame.assign(_row=np.arange(len(frame))).sort_values(["timestamp", "_row"], kind="stable")
    groups = ordered.groupby(["user_id", "item_id"], sort=False)
    kept = groups.tail(1).set_index(["user_id", "item_id"])
    if policy in ("mean", "sum"):
        kept["rating"] = groups["rating"].agg(policy).astype(np.float32).reindex(kept.index)
    return kept.reset_index().sort_values("_row").drop(columns="_row").reset_index(drop=True)


def _may_have_duplicates(users: np.ndarray, items: np.ndarray) -> bool:
    """False when no (user, item) pair repeats, decided by sorting one 64-bit key per rating for
    integer ids of up to 32 bits (the usual case: far faster and leaner than hashing two columns);
    True when there are repeats, or when the ids are text or wider (then pandas decides)."""
    if users.dtype.kind not in "iu" or items.dtype.kind not in "iu" or not len(users):
        return True
    if users.min() < 0 or items.min() < 0 or users.max() >= 2**31 or items.max() >= 2**32:
        return True
    key = (users.astype(np.int64) << 32) | items.astype(np.int64)
    key.sort()
    return bool((key[1:] == key[:-1]).any())


def rating_scale(files: list[RatingsFile], given: RatingScale | None) -> RatingScale:
    """The scale given (every rating must lie on it), or the lowest and highest rating seen."""
    if given is not None:
        for file in files:
            values = file.frame["rating"].to_numpy()
            outside = (values < given.low) | (values > given.high)
            if outside.any():
                row = _first(outside)
                raise DataError(f"{file.source.where(row)}, column '{file.rating_column}': expected a rating from "
                                f"{given.low:g} to {given.high:g} (--rating-scale), got {values[row]:g}")
        return given
    low = min(float(f.frame["rating"].min()) for f in files)
    high = max(float(f.frame["rating"].max()) for f in files)
    if not high > low:
        raise DataError(f"{files[0].source.described}: every rating is {low:g}; pass the scale with "
                        "--rating-scale MIN,MAX")
    return RatingScale(low, high)
