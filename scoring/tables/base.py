"""What an output table is: its schema, how a pass produces its rows, how many it must hold, how
it is compared with the previous run, how ``make verify`` recomputes it, what the report shows.

A table module defines a subclass of ``Table`` and registers an instance with
``scoring.tables.register``; the engines, the run's checks and manifest, drift, the report and
``make verify`` read every table through this interface and name none.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from ..bundle import Bundle
from ..sessions import ModelScorer, Outputs
from ..settings import PassSettings
from ..writer import TableWriter

USERS = "users"
"""Unit of a table whose rows come from the users' pass: one onnxruntime pass over every user's
items feeds all such tables."""
ITEMS = "items"
"""Unit of a table whose rows are keyed by item: it runs its own pass over spans of items."""
UNITS = (USERS, ITEMS)


@dataclass
class UserChunk:
    """Users ``[start, stop)`` of one model's users' pass: every item's outputs for each."""

    bundle: Bundle
    scorer: ModelScorer
    settings: PassSettings
    start: int
    stop: int
    outputs: Outputs
    seconds: dict[str, float]
    """Where the table adds its own timings ("top_n", "onnxruntime_pairs"); the pass sums them."""


@dataclass(frozen=True)
class ItemSpan:
    """Items ``[start, stop)`` of one model, for a table with unit ``ITEMS``."""

    bundle: Bundle
    model: str
    settings: PassSettings
    start: int
    stop: int
    threads: int
    device: str = "cpu"


class TorchOutputs(Protocol):
    """Torch's outputs of one model for ``make verify``, as numpy arrays computed on first use."""

    @property
    def unit(self) -> np.ndarray:
        """``unit_rating`` [n_users, n_items]."""

    @property
    def logits(self) -> np.ndarray:
        """Ranking ``logit`` [n_users, n_items]."""

    @property
    def item_vectors(self) -> np.ndarray | None:
        """Unit-length item vectors [n_items, D]; None where the family has none."""


@dataclass(frozen=True)
class DriftInputs:
    """What a table's run-to-run comparison may need besides the two runs' files."""

    n_items: int
    previous_n_items: int
    user_ids: pa.Array
    """The new run's users (the bundle's), for sampling."""


class Table(ABC):
    """One output table, Hive-partitioned by ``model=<name>``."""

    name: ClassVar[str]
    """The table's name in ``--tables``, its folder in a run and the manifest."""
    columns: ClassVar[pa.Schema]
    """The columns with int32 ids; ``id_columns`` are retyped to the data's ids (``schema``)."""
    id_columns: ClassVar[dict[str, str]] = {"user_id": "user", "item_id": "item"}
    """Columns holding raw ids, and whose ("user" or "item")."""
    unit: ClassVar[str] = USERS
    """``USERS`` or ``ITEMS``: what the table's rows are keyed by and its passes are cut into."""
    needs_ratings: ClassVar[bool] = False
    """Whether the table reads every pair's rating, so the users' pass runs the all-items graphs;
    when no table does, it runs the ranking graphs alone."""
    value_column: ClassVar[str | None] = None
    """The column (as ``columns`` names it, ``prediction``) holding each row's predicted rating; for
    an implicit-feedback bundle it is named ``score`` and holds the model's score (``schema``)."""
    implicit_description: ClassVar[str | None] = None
    """The table's description for an implicit-feedback bundle, where it differs."""
    examples_title: ClassVar[str] = "{table} by {model}"
    """Heading of the report's examples of one model; may name ``{table}``, ``{model}``,
    ``{top_n}`` and ``{similar_k}``."""

    def schema(self, bundle: Bundle) -> pa.Schema:
        """The table's schema, its id columns typed as ``bundle``'s ids."""
        schema = self.columns
        types = {"user": bundle.user_id_array.type, "item": bundle.item_id_array.type}
        for column, whose in self.id_columns.items():
            index = schema.get_field_index(column)
            schema = schema.set(index, schema.field(index).with_type(types[whose]))
        if self.value_column is not None and bundle.value_column != self.value_column:
            index = schema.get_field_index(self.value_column)
            schema = schema.set(index, schema.field(index).with_name(bundle.value_column))
            if self.implicit_description is not None:
                schema = schema.with_metadata({"description": self.implicit_description})
        return schema

    def description(self, bundle: Bundle) -> str | None:
        """What the table holds, for the run manifest."""
        metadata = self.schema(bundle).metadata or {}
        return metadata[b"description"].decode() if b"description" in metadata else None

    def unavailable(self, bundle: Bundle, model: str) -> str | None:
        """Why this table cannot be written for ``model`` of ``bundle``, or None."""
        return None

    def chunk_rows(self, chunk: UserChunk) -> dict[str, pa.Array]:
        """The rows of a chunk of users (tables with unit ``USERS``)."""
        raise TypeError(f"table '{self.name}' has unit {self.unit!r}; it writes its rows with write_span")

    def write_span(self, span: ItemSpan, sink: TableWriter) -> dict[str, float]:
        """Write the rows of a span of items to ``sink`` (tables with unit ``ITEMS``), checking what it
        computed against the bundle's torch reference; the parity figures it measured."""
        raise TypeError(f"table '{self.name}' has unit {self.unit!r}; its rows come from the users' pass")

    @abstractmethod
    def expected_rows(self, bundle: Bundle, settings: PassSettings) -> int:
        """Rows a complete partition of one model must hold."""

    def run_figures(self, run_dir: Path, bundle: Bundle, model: str) -> dict[str, Any]:
        """Figures of a finished partition for the manifest (``tables_figures``); none by default."""
        return {}

    @abstractmethod
    def drift(self, now: ds.Dataset, before: ds.Dataset, inputs: DriftInputs) -> tuple[dict[str, Any], float]:
        """How one model's partition changed since the previous run, and the share of the new
        partition the comparison covers."""

    @abstractmethod
    def verify(self, run_dir: Path, bundle: Bundle, model: str, torch: TorchOutputs,
               settings: PassSettings) -> dict[str, float]:
        """Recompute the partition from torch's outputs; VerificationError at the first row beyond
        tolerance, else the figures of the comparison."""

    def examples(self, run_dir: Path, bundle: Bundle, model: str, keys: list[Any]) -> dict[str, Any]:
        """A few rows to show in the report, keyed by ``keys`` (users or items); none by default."""
        return {}
