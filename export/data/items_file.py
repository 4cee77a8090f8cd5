"""Item metadata (titles) in any form a ratings file may take; MovieLens' ``u.item``, ``movies.dat``
and ``movies.csv`` are read with no options."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from contract.errors import DataError
from contract.store import is_remote, read_copy

from .columns import ColumnMapping
from .readers import Part, SourceTable, read_table, sniff
from .ratings_file import id_column


def read_items(spec: str | Path, mapping: ColumnMapping = ColumnMapping(), as_text: bool = False) -> dict:
    """Raw item id -> title (None where the file has no title column); a file on an object store
    is read from a local copy."""
    if is_remote(str(spec)):
        return read_copy(str(spec), lambda local: read_items(local, mapping, as_text))
    source = _read_any_encoding(Path(spec), mapping.header_names("items"))
    roles = mapping.resolve(source.table.column_names, source.has_header, "items", ("item",), source.described)
    ids = id_column(source, source.table.column(roles["item"]), roles["item"], "item", as_text)
    if "title" not in roles:
        return {_plain(i): None for i in ids}
    titles = source.table.column(roles["title"]).cast(pa.string()).to_pylist()
    return {_plain(i): t for i, t in zip(ids, titles)}


def _plain(value: np.generic) -> int | str:
    return value.item() if isinstance(value, np.generic) else value


def _read_any_encoding(path: Path, names: frozenset[str]) -> SourceTable:
    """UTF-8, else Latin-1 (MovieLens' older releases); a '::' file whose titles hold ':' is split
    on the first two '::' of each line."""
    last: DataError | None = None
    for encoding in ("utf-8", "latin-1"):
        try:
            if path.is_file() and sniff(path, encoding).delimiter == "::":
                return _read_double_colon(path, encoding)
            return read_table(path, encoding, names)
        except DataError as exc:
            if "utf" not in str(exc).lower() and "decode" not in str(exc).lower():
                raise
            last = exc
    assert last is not None
    raise last


def _read_double_colon(path: Path, encoding: str) -> SourceTable:
    """``id::title::genres`` lines (MovieLens 1M and 10M's movies.dat); item files are small."""
    try:
        lines = [line for line in path.read_bytes().decode(encoding).splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding} text (byte {exc.start})") from exc
    fields = [line.split("::", 2) for line in lines]
    bad = next((k for k, f in enumerate(fields) if len(f) < 2), None)
    if bad is not None:
        raise DataError(f"{path}, line {bad + 1}: expected 'id::title::...', got {lines[bad][:60]!r}")
    table = pa.table({"0": [f[0].strip() for f in fields], "1": [f[1] for f in fields]})
    return SourceTable(table, [Part(path, 0, table.num_rows, 1)], False)
