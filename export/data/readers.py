"""Read a table file in the forms teams have them, with pyarrow: Parquet (one file, a folder or glob
of part files, Hive-partitioned datasets included) or delimited text (tab, comma, ``::`` or ``|``,
with or without a header, plain, gzip or zstd). Every table remembers where each of its rows came
from, so that a later check can name the file and the line or row."""
from __future__ import annotations

import dataclasses
import glob as globbing
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from contract.errors import DataError
from contract.store import is_remote, mirror, read_copy

DELIMITERS = ("\t", "::", "|", ",")
"""Delimiters recognised in text files, in the order they are tried."""

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_SNIFF_BYTES = 1 << 16
_NUMBER = re.compile(r"^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


@dataclass(frozen=True)
class Part:
    """One file a table was read from: its rows are ``[start, start + rows)`` of the table."""

    path: Path
    start: int
    rows: int
    first_line: int | None
    """Line number of the file's first data row, for text; None for Parquet (rows are counted)."""
    label: str = ""
    """The file's name in messages and checksums: its URI when read from an object store, else its path."""

    @property
    def name(self) -> str:
        return self.label or str(self.path)


@dataclass
class SourceTable:
    """A table and the files it came from."""

    table: pa.Table
    parts: list[Part]
    has_header: bool
    """Whether the columns have names from the file (a text header or Parquet), not positions."""

    def where(self, row: int) -> str:
        """Where row ``row`` of the table was read: 'FILE, line N' or 'FILE, row N'."""
        for part in self.parts:
            if part.start <= row < part.start + part.rows:
                if part.first_line is not None:
                    return f"{part.name}, line {part.first_line + row - part.start}"
                return f"{part.name}, row {row - part.start + 1}"
        return f"row {row + 1}"

    @property
    def described(self) -> str:
        """The source's name in messages about the whole table."""
        first = self.parts[0].name
        return first if len(self.parts) == 1 else f"{first.rsplit('/', 1)[0]} ({len(self.parts)} files)"


def read_table(spec: str | Path, encoding: str = "utf-8", names: frozenset[str] = frozenset()) -> SourceTable:
    """Read ``spec``: a Parquet file, a folder or glob of Parquet files, or a delimited text file
    (``names``: column names that mark a first line as a header). On an object store (``s3://...``)
    the file or folder is copied here first, and messages name it by its URI."""
    if is_remote(str(spec)):
        return _read_remote(str(spec), encoding, names)
    text = str(spec)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in globbing.glob(text) if Path(p).is_file())
        if not files:
            raise DataError(f"{text}: no files match this pattern")
        return _read_parquet_files(files, text)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        return _read_parquet_folder(path)
    if path.suffix.lower() in PARQUET_SUFFIXES or _is_parquet(path):
        return _read_parquet_files([path], str(path))
    return read_text(path, encoding, names)


def _read_remote(uri: str, encoding: str, names: frozenset[str]) -> SourceTable:
    source = read_copy(uri, lambda local: read_table(local, encoding, names))
    local = str(mirror(uri))
    source.parts = [dataclasses.replace(p, label=str(p.path).replace(local, uri)) for p in source.parts]
    return source


def _is_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc


def _read_parquet_folder(folder: Path) -> SourceTable:
    """Every Parquet file below ``folder`` (hidden and ``_`` files skipped), Hive partition
    folders (``key=value``) becoming columns."""
    try:
        dataset = pads.dataset(folder, format="parquet", partitioning="hive",
                               exclude_invalid_files=False, ignore_prefixes=[".", "_"])
        fragments = list(dataset.get_fragments())
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{folder}: not a readable Parquet dataset ({_first_line(exc)})") from exc
    if not fragments:
        raise DataError(f"{folder}: folder holds no data files (expected Parquet files, e.g. part-0.parquet)")

    def read(fragment: pads.Fragment) -> pa.Table:
        table = fragment.to_table(schema=fragment.physical_schema)
        for key, value in pads.get_partition_keys(fragment.partition_expression).items():
            table = table.append_column(key, pa.array([value] * table.num_rows))
        return table

    ordered = sorted(fragments, key=lambda f: f.path)
    return _read_parts([(Path(f.path), lambda f=f: read(f)) for f in ordered], "unreadable Parquet part file")


def _read_parquet_files(files: list[Path], described: str) -> SourceTable:
    return _read_parts([(path, lambda path=path: pq.read_table(path)) for path in files], "unreadable Parquet file")


def _read_parts(readers: list[tuple[Path, Callable[[], pa.Table]]], unreadable: str) -> SourceTable:
    """Each part read, checked non-empty and placed after the ones before it; one table of all."""
    tables, parts, start = [], [], 0
    for path, read in readers:
        try:
            table = read()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: {unreadable} ({_first_line(exc)})") from exc
        tables.append(_non_empty(table, path))
        parts.append(Part(path, start, table.num_rows, None))
        start += table.num_rows
    return SourceTable(_concat(tables, parts), parts, True)


def _non_empty(table: pa.Table, path: Path) -> pa.Table:
    if table.num_rows == 0 or table.num_columns == 0:
        raise DataError(f"{path}: Parquet file holds no rows")
    return table


def _concat(tables: list[pa.Table], parts: list[Part]) -> pa.Table:
    """One table of all parts; DataError naming the first part whose columns differ in type."""
    first = tables[0].schema
    for table, part in zip(tables[1:], parts[1:]):
        for field in table.schema:
            if field.name in first.names and first.field(field.name).type != field.type:
                raise DataError(f"{part.path}: column '{field.name}' holds {field.type} values where "
                                f"{parts[0].path} holds {first.field(field.name).type}; every part file "
                                "must give a column the same type")
    try:
        return pa.concat_tables(tables, promote_options="default")
    except pa.ArrowInvalid as exc:
        raise DataError(f"{parts[0].path.parent}: part files do not fit together ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


# -- text ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextLayout:
    """How a text file is laid out, sniffed from its first lines."""

    delimiter: str
    header: list[str] | None
    columns: int


def _head_lines(path: Path, encoding: str, count: int = 3) -> list[str]:
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            data = stream.read(_SNIFF_BYTES)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: cannot be read ({_first_line(exc)})") from exc
    if not data.strip():
        raise DataError(f"{path}: file is empty, expected delimited lines of ratings")
    text = data.decode(encoding, errors="replace").replace("\r\n", "\n")
    lines = [line for line in text.split("\n") if line.strip()]
    if len(data) == _SNIFF_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut
    return lines[:count]


def sniff(path: Path, encoding: str = "utf-8", names: frozenset[str] = frozenset()) -> TextLayout:
    """Delimiter (the first of ``DELIMITERS`` that splits the first lines alike) and header (a first
    line with no number in it, above a line with one; or one naming a column of ``names``,
    compared case-insensitively, for files of text alone)."""
    lines = _head_lines(path, encoding)
    delimiter = next((d for d in DELIMITERS if lines[0].count(d) and all(line.count(d) == lines[0].count(d)
                                                                           for line in lines[1:])),
                     next((d for d in DELIMITERS if d in lines[0]), None))
    if delimiter is None:
        raise DataError(f"{path}, line 1: expected fields separated by a tab, '::', '|' or ',', "
                        f"got {lines[0][:60]!r}")
    first = [f.strip().strip('"') for f in lines[0].split(delimiter)]
    second = [f.strip().strip('"') for f in lines[1].split(delimiter)] if len(lines) > 1 else []
    header = not any(_NUMBER.match(f) for f in first) and (
        any(_NUMBER.match(f) for f in second) or bool({f.lower() for f in first} & {n.lower() for n in names}))
    return TextLayout(delimiter, first if header else None, len(first))


def read_text(path: Path, encoding: str = "utf-8", names: frozenset[str] = frozenset()) -> SourceTable:
    """A delimited text file (compression detected from its name) as a table; columns are named by
    its header, or ``0``, ``1``, ... by position when it has none."""
    layout = sniff(path, encoding, names)
    double = layout.delimiter == "::"
    width = 2 * layout.columns - 1 if double else layout.columns
    names = [str(i) for i in range(width)]
    read = pacsv.ReadOptions(column_names=names, skip_rows=1 if layout.header else 0, encoding=encoding,
                             block_size=1 << 24)
    parse = pacsv.ParseOptions(delimiter=":" if double else layout.delimiter,
                               quote_char='"' if layout.delimiter == "," else False)
    # Only an empty field is missing: 'nan' or 'NA' is a value, and the checks say what is wrong with it.
    convert = pacsv.ConvertOptions(null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        table = pacsv.read_csv(str(path), read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _locate_text_error(path, layout, encoding, exc) from exc
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    if binary:
        raise DataError(f"{path}: not valid {encoding} text (column {int(binary[0]) + 1} holds other bytes)")
    if double:
        table = _join_double_colon(table, path, layout)
    if layout.header:
        table = table.rename_columns(layout.header)
    if table.num_rows == 0:
        raise DataError(f"{path}: file holds a header and no ratings")
    first_line = 2 if layout.header else 1
    return SourceTable(table, [Part(path, 0, table.num_rows, first_line)], layout.header is not None)


def _join_double_colon(table: pa.Table, path: Path, layout: TextLayout) -> pa.Table:
    """A ``::``-separated file read with ':' as the delimiter: the even columns are the fields, and
    the odd ones must be empty (else a field held a ':' of its own)."""
    for k in range(1, table.num_columns, 2):
        column = table.column(k)
        bad = pc.not_equal(pc.cast(column, pa.string()), "")
        if pc.any(bad).as_py():
            row = pc.index(bad, True).as_py()
            line = row + (2 if layout.header else 1)
            raise DataError(f"{path}, line {line}: expected {layout.columns} fields separated by '::', "
                            "found a single ':' inside a field")
    return table.select(list(range(0, table.num_columns, 2))).rename_columns([str(i) for i in range(layout.columns)])


def _locate_text_error(path: Path, layout: TextLayout, encoding: str, exc: BaseException) -> DataError:
    """Name the first line that does not fit the layout (read again line by line, only on failure)."""
    width = layout.columns
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            handle = io.TextIOWrapper(stream, encoding=encoding, newline="")
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line or (number == 1 and layout.header):
                    continue
                fields = line.split(layout.delimiter) if layout.delimiter != "," else _csv_fields(line)
                if len(fields) != width:
                    return DataError(f"{path}, line {number}: expected {width} fields separated by "
                                     f"{_delimiter_name(layout.delimiter)}, got {len(fields)}: {line[:60]!r}")
    except UnicodeDecodeError as decode:
        return DataError(f"{path}: not valid {encoding} text ({decode.reason} at byte {decode.start} of a line)")
    return DataError(f"{path}: cannot be parsed as delimited text ({_first_line(exc)})")


def _csv_fields(line: str) -> list[str]:
    import csv
    return next(csv.reader([line]))


def _delimiter_name(delimiter: str) -> str:
    return {"\t": "tabs", ",": "commas", "|": "'|'", "::": "'::'"}[delimiter]
