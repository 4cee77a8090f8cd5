"""Helpers the tables share to compare a partition with the previous run's and with torch."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from contract.bundle_format import PARITY_TOLERANCE
from contract.errors import VerificationError
from contract.feedback import SCORE_COLUMN
from contract.ids import index_of

from ..bundle import Bundle

SAMPLE_USERS = 2_000
"""Most users whose rows a comparison reads where reading every row would cost as much as
writing them (predictions)."""


def read_rows(dataset: ds.Dataset, columns: list[str], key: str | None = None,
              values: pa.Array | None = None) -> pa.Table:
    """``columns`` of the rows whose ``key`` is in ``values`` (all rows for None); integer ids of
    another width than the table's are matched by value."""
    if values is None or key is None:
        return dataset.to_table(columns=columns)
    kind = dataset.schema.field(key).type
    if values.type == kind or not pa.types.is_integer(kind):
        condition = pc.field(key).isin(values)
    else:
        condition = pc.field(key).cast(pa.int64()).isin(pc.cast(values, pa.int64()))
    return dataset.to_table(columns=columns, filter=condition)


def widened(table: pa.Table, keys: list[str]) -> pa.Table:
    """Integer ids widened to int64, so that int32 and int64 ids of two runs join."""
    for key in keys:
        if pa.types.is_integer(table.schema.field(key).type):
            table = table.set_column(table.schema.get_field_index(key), key, pc.cast(table.column(key), pa.int64()))
    return table


def lists(table: pa.Table, key: str, member: str) -> dict[Any, tuple]:
    """Each ``key``'s ``member`` values in rank order (its top-N or similar-items list)."""
    table = table.take(pc.sort_indices(table, [(key, "ascending"), ("rank", "ascending")]))
    out: dict[Any, list] = {}
    for owner, value in zip(table.column(key).to_pylist(), table.column(member).to_pylist()):
        out.setdefault(owner, []).append(value)
    return {k: tuple(v) for k, v in out.items()}


def list_change(now: pa.Table, before: pa.Table, key: str, member: str) -> tuple[int, float, float | None]:
    """Owners (``key``) in both tables, their share of the new table's owners, and the share of
    them whose list (members and order) changed."""
    ours, theirs = lists(widened(now, [key, member]), key, member), lists(widened(before, [key, member]), key, member)
    shared = ours.keys() & theirs.keys()
    changed = sum(ours[k] != theirs[k] for k in shared) / len(shared) if shared else None
    return len(shared), (len(shared) / len(ours) if ours else 0.0), changed


def sample(users: pa.Array, seed: int = 0) -> pa.Array:
    """At most ``SAMPLE_USERS`` of ``users``, seeded."""
    if len(users) <= SAMPLE_USERS:
        return users
    picked = np.sort(np.random.default_rng(seed).choice(len(users), SAMPLE_USERS, replace=False))
    return users.take(pa.array(picked))


def stars_tolerance(bundle: Bundle) -> float:
    """The parity tolerance on [0, 1] carried to the bundle's rating scale."""
    return PARITY_TOLERANCE * bundle.scale.span


def indices(bundle: Bundle, values: np.ndarray, whose: str, where: str) -> np.ndarray:
    """Raw user or item ids (``whose``) as indices; VerificationError naming ``where`` for an unknown id."""
    return index_of(bundle.user_ids if whose == "user" else bundle.item_ids, values, VerificationError, where)


def list_examples(dataset: ds.Dataset, bundle: Bundle, key: str, keys: list[Any], member: str,
                  value: str) -> dict[str, Any]:
    """``{key: [{rank, member, title, value}]}`` of a list table, for the report."""
    rows = read_rows(dataset, [key, "rank", member, value], key, pa.array(keys, dataset.schema.field(key).type))
    rows = rows.take(pc.sort_indices(rows, [(key, "ascending"), ("rank", "ascending")])).to_pylist()
    titles = dict(zip(bundle.item_ids.tolist(), bundle.item_titles))
    out: dict[str, Any] = {}
    for row in rows:
        out.setdefault(str(row[key]), []).append({"rank": row["rank"], "item_id": row[member],
                                                  "title": titles.get(row[member]) or "", value: row[value]})
    return out


def value_name(dataset: ds.Dataset) -> str:
    """The column of a written table holding its model's rating or score (``prediction`` or
    ``score``, ``contract.feedback.SCORE_COLUMN``)."""
    names = dataset.schema.names
    return next((name for name in SCORE_COLUMN.values() if name in names), "prediction")
