"""Business rules on the lists: items never to list (``--exclude-items``) and the only items to
list (``--candidates``), read from a Parquet or CSV file of item ids.

A rule removes items from what the ``recommendations`` and ``similar_items`` tables may list
before the lists are cut, so a list is still N long wherever N eligible items remain. Ids the
catalogue does not hold are counted and reported, not fatal (yesterday's withdrawn items);
a file that cannot be read as ids of the data's type is refused.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from contract.checksums import sha256_file
from contract.errors import DataError
from contract.ids import positions
from contract.store import Location, is_remote, read_copy

log = logging.getLogger(__name__)

RULES = {"exclude_items": "--exclude-items", "candidates": "--candidates"}
"""Each rule's name in the manifest and the run folder, and its flag."""
RULES_FOLDER = "rules"
"""Folder of a run holding each rule's known item ids (``<rule>.parquet``), for ``make verify``."""
PARQUET_SUFFIXES = (".parquet", ".pq")
ID_COLUMN = "item_id"


@dataclass(frozen=True, eq=False)
class ItemRules:
    """Which items the lists may hold, as masks over the catalogue's item indices."""

    excluded: np.ndarray | None = None
    """bool [n_items]: True for items never listed; None: no exclusions."""
    candidates: np.ndarray | None = None
    """bool [n_items]: True for the only items that may be listed; None: every item."""
    record: dict[str, Any] = field(default_factory=dict)
    """What the manifest records of each rule file."""

    @property
    def active(self) -> bool:
        return self.excluded is not None or self.candidates is not None

    def eligible(self, n_items: int) -> np.ndarray:
        """bool [n_items]: items the lists may hold."""
        mask = np.ones(n_items, bool) if self.candidates is None else self.candidates.copy()
        if self.excluded is not None:
            mask &= ~self.excluded
        return mask

    def eligible_or_none(self, n_items: int) -> np.ndarray | None:
        """``eligible``, or None when no rule is set (every item may be listed); computed once."""
        return self._eligible if self.active else None

    @cached_property
    def _eligible(self) -> np.ndarray:
        masks = [m for m in (self.candidates, self.excluded) if m is not None]
        return self.eligible(len(masks[0]))

    def penalty(self, n_items: int) -> np.ndarray | None:
        """float32 [n_items]: 0 for eligible items, -inf for the rest, to add to scores before
        they are ranked; None when no rule is set."""
        if not self.active:
            return None
        return np.where(self.eligible(n_items), 0.0, -np.inf).astype(np.float32)


def _read(path: Path, flag: str) -> pa.Array:
    """The id column of a rule file, as read: the ``item_id`` column, or the file's only one."""
    if not path.is_file():
        raise DataError(f"{flag} {path}: no such file")
    parquet = path.suffix.lower() in PARQUET_SUFFIXES
    try:
        if parquet:
            table = pq.read_table(path)
        else:
            names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)).column_names
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names}, strings_can_be_null=True))
    except (OSError, pa.ArrowInvalid) as exc:
        kind = "Parquet" if parquet else "CSV"
        raise DataError(f"{flag} {path}: not a readable {kind} file ({str(exc).splitlines()[0][:200]})") from exc
    if ID_COLUMN in table.column_names:
        column = table.column(ID_COLUMN)
    elif table.num_columns == 1:
        column = table.column(0)
    else:
        raise DataError(f"{flag} {path}: expected a column '{ID_COLUMN}' (or a single column); found columns "
                        f"{table.column_names}")
    if table.num_rows == 0:
        raise DataError(f"{flag} {path}: holds no item ids; expected at least one (leave the flag out for no rule)")
    column = column.combine_chunks()
    if column.null_count:
        row = int(pc.index(pc.is_null(column), True).as_py())
        raise DataError(f"{flag} {path}: row {row + 1} of column '{ID_COLUMN}' is empty; expected an item id")
    return column


def _ids(column: pa.Array, path: Path, flag: str, text_ids: bool) -> np.ndarray:
    """The column as ids of the catalogue's kind; DataError naming the first row that is not one."""
    if text_ids:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return np.asarray(column.to_pylist(), dtype=str)
        raise DataError(f"{flag} {path}: column '{ID_COLUMN}' holds {column.type}; the data's item ids are text")
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        stripped = pc.utf8_trim_whitespace(column)
        ok = pc.match_substring_regex(stripped, r"^[+-]?[0-9]+$")
        if not pc.all(ok).as_py():
            row = int(pc.index(ok, False).as_py())
            raise DataError(f"{flag} {path}: row {row + 1} of column '{ID_COLUMN}' is {column[row].as_py()!r}; "
                            "expected an integer item id (the data's item ids are integers)")
        return pc.cast(stripped, pa.int64()).to_numpy(zero_copy_only=False)
    raise DataError(f"{flag} {path}: column '{ID_COLUMN}' holds {column.type}; expected integer item ids like "
                    "the data's")


def read_rule(location: Location, rule: str, item_ids: np.ndarray) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """The mask over the catalogue of the items a rule file names, what the manifest records of
    it (path, sha256, rows, distinct ids, those in the catalogue and those not), and the known ids.
    A file on an object store is copied here first; messages and the record name its URI."""
    if is_remote(location):
        mask, record, known = read_copy(str(location), lambda local: read_rule(local, rule, item_ids))
        return mask, {**record, "path": str(location)}, known
    flag = RULES[rule]
    path = Path(location)
    ids = _ids(_read(path, flag), path, flag, item_ids.dtype.kind == "U")
    distinct = np.unique(ids)
    index, found = positions(item_ids, distinct if item_ids.dtype.kind == "U" else distinct.astype(item_ids.dtype))
    if item_ids.dtype.kind in "iu":   # ids beyond the catalogue's integer type are unknown, not wrapped
        info = np.iinfo(item_ids.dtype)
        found &= (distinct >= info.min) & (distinct <= info.max)
    mask = np.zeros(len(item_ids), bool)
    mask[index[found]] = True
    record = {"path": str(path.resolve()), "sha256": sha256_file(path), "rows": int(len(ids)),
              "distinct_ids": int(len(distinct)), "in_catalogue": int(found.sum()),
              "not_in_catalogue": int((~found).sum())}
    if record["not_in_catalogue"]:
        log.warning("%s %s: %d of its %d ids are not in the catalogue (%s); they are ignored", flag, path,
                    record["not_in_catalogue"], record["distinct_ids"], ", ".join(map(str, distinct[~found][:5])))
    return mask, record, item_ids[mask]


def load_rules(exclude_items: Location | None, candidates: Location | None,
               item_ids: np.ndarray) -> tuple[ItemRules, dict[str, np.ndarray]]:
    """The rules of the run's flags, and each rule's known ids (to keep with the run)."""
    masks: dict[str, np.ndarray] = {}
    records: dict[str, Any] = {}
    known: dict[str, np.ndarray] = {}
    for rule, path in (("exclude_items", exclude_items), ("candidates", candidates)):
        if path is not None:
            masks[rule], records[rule], known[rule] = read_rule(path, rule, item_ids)
    rules = ItemRules(masks.get("exclude_items"), masks.get("candidates"), records)
    if rules.active:
        eligible = int(rules.eligible(len(item_ids)).sum())
        records["eligible_items"] = eligible
        log.info("rules: %d of the catalogue's %d items may be listed", eligible, len(item_ids))
    return rules, known


def write_rule_ids(run_dir: Path, known: dict[str, np.ndarray], item_type: pa.DataType) -> None:
    """Each rule's known ids into ``run_dir/rules/<rule>.parquet``: a run says what it excluded."""
    for rule, ids in known.items():
        folder = run_dir / RULES_FOLDER
        folder.mkdir(exist_ok=True)
        pq.write_table(pa.table({ID_COLUMN: pa.array(ids.tolist(), item_type)}), folder / f"{rule}.parquet")


def rules_of_run(run_dir: Path, item_ids: np.ndarray) -> ItemRules:
    """The rules a published run was scored under, from its ``rules/`` folder."""
    masks = {}
    for rule in RULES:
        path = run_dir / RULES_FOLDER / f"{rule}.parquet"
        if path.is_file():
            ids = pq.read_table(path).column(ID_COLUMN).to_numpy(zero_copy_only=False)
            index, found = positions(item_ids, ids.astype(str) if item_ids.dtype.kind == "U" else ids)
            masks[rule] = np.zeros(len(item_ids), bool)
            masks[rule][index[found]] = True
    return ItemRules(masks.get("exclude_items"), masks.get("candidates"))
