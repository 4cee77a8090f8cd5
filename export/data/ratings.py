"""Parse and validate ratings files in MovieLens ``u.data`` format, and items files (``u.item``).

``u.data``: one rating a line, ``user_id<TAB>item_id<TAB>rating<TAB>timestamp``, all integers,
ratings 1-5, timestamps in Unix seconds. Windows line endings are accepted. Anything else is
rejected with the file, the line number, the field and what was expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from contract.errors import DataError
from contract.scale import MOVIELENS_STARS

FIELDS = ("user_id", "item_id", "rating", "timestamp")
MIN_RATING, MAX_RATING = int(MOVIELENS_STARS.low), int(MOVIELENS_STARS.high)
_PREVIEW = 60


def _read_text(path: Path, encoding: str) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a ratings file")
    try:
        return path.read_bytes().decode(encoding)
    except PermissionError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: byte {exc.start} is not valid {encoding} text") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc


def _parse_int(text: str, path: Path, line_no: int, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}, line {line_no}, field '{field}': expected an integer, "
                        f"got {text[:_PREVIEW]!r}") from None


def parse_ratings(path: Path) -> pd.DataFrame:
    """Read a ``u.data``-format file into a frame of int32 ids, int8 ratings and int64 timestamps.

    Raises DataError on the first malformed line, and on duplicate (user, item) pairs, naming
    both lines: a pair rated twice is ambiguous, and guessing which to keep would hide bad data.
    """
    path = Path(path)
    lines = _lines(path)
    columns = np.empty((4, len(lines)), dtype=np.int64)
    for index, line in enumerate(lines):
        columns[:, index] = _parse_line(line, path, index + 1)
    for column, field in ((0, "user_id"), (1, "item_id")):
        if columns[column].max() > np.iinfo(np.int32).max:
            line_no = int(columns[column].argmax()) + 1
            raise DataError(f"{path}, line {line_no}, field '{field}': id exceeds int32")
    frame = pd.DataFrame({
        "user_id": columns[0].astype(np.int32),
        "item_id": columns[1].astype(np.int32),
        "rating": columns[2].astype(np.int8),
        "timestamp": columns[3],
    })
    _reject_duplicates(frame, path)
    return frame


def _lines(path: Path) -> list[str]:
    """The file's lines (Windows endings accepted); DataError for an empty file."""
    lines = _read_text(path, "utf-8").replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"{path}: file is empty, expected lines of "
                        "'user_id<TAB>item_id<TAB>rating<TAB>timestamp'")
    return lines


def _parse_line(line: str, path: Path, line_no: int) -> tuple[int, int, int, int]:
    """(user_id, item_id, rating, timestamp) of one line; DataError naming the line and field."""
    fields = line.split("\t")
    if line_no == 1 and any(c.isalpha() for c in fields[0]):
        raise DataError(f"{path}, line 1: looks like a header line ({line[:_PREVIEW]!r}); "
                        "u.data files have no header, expected 'user_id<TAB>item_id<TAB>rating<TAB>timestamp' integers")
    if len(fields) != 4:
        raise DataError(f"{path}, line {line_no}: expected 4 tab-separated fields "
                        f"(user_id, item_id, rating, timestamp), got {len(fields)}: {line[:_PREVIEW]!r}")
    texts = [text.strip() for text in fields]
    user, item = (_parse_int(texts[k], path, line_no, FIELDS[k]) for k in (0, 1))
    rating = _parse_rating(texts[2], path, line_no)
    timestamp = _parse_int(texts[3], path, line_no, FIELDS[3])
    for field, value, text in (("user_id", user, fields[0]), ("item_id", item, fields[1])):
        if value <= 0:
            raise DataError(f"{path}, line {line_no}, field '{field}': expected a positive id, got {text!r}")
    if timestamp < 0:
        raise DataError(f"{path}, line {line_no}, field 'timestamp': expected Unix seconds >= 0, got {fields[3]!r}")
    return user, item, rating, timestamp


def _parse_rating(text: str, path: Path, line_no: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (MIN_RATING <= value <= MAX_RATING) or value != int(value):
        raise DataError(f"{path}, line {line_no}, field 'rating': expected an integer from "
                        f"{MIN_RATING} to {MAX_RATING}, got {text[:_PREVIEW]!r}")
    return int(value)


def _reject_duplicates(frame: pd.DataFrame, path: Path) -> None:
    duplicated = frame.duplicated(["user_id", "item_id"], keep=False).to_numpy()
    if not duplicated.any():
        return
    first, second = np.flatnonzero(duplicated)[:2]
    row = frame.iloc[first]
    raise DataError(f"{path}, lines {first + 1} and {second + 1}: user {row.user_id} rated item "
                    f"{row.item_id} twice; expected one rating per (user_id, item_id) pair")


def parse_items(path: Path) -> pd.DataFrame:
    """Read ``u.item`` (pipe-separated, latin-1) into ``item_id`` int32 and ``title`` string."""
    path = Path(path)
    ids, titles = [], []
    for line_no, line in enumerate(_read_text(path, "latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 2:
            raise DataError(f"{path}, line {line_no}: expected 'item_id|title|...', "
                            f"got {line[:_PREVIEW]!r}")
        ids.append(_parse_int(fields[0], path, line_no, "item_id"))
        titles.append(fields[1])
    return pd.DataFrame({"item_id": np.asarray(ids, dtype=np.int32),
                         "title": pd.array(titles, dtype="string")})
