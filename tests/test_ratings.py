"""The ratings and items parsers: good files in, typed frames out; bad lines named precisely."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.data.ratings import parse_items, parse_ratings
from contract.errors import DataError


def write(tmp_path, text: str, name: str = "u.data"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_parses_u_data_into_typed_columns(tmp_path):
    frame = parse_ratings(write(tmp_path, "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"))
    assert frame.dtypes.astype(str).tolist() == ["int32", "int32", "int8", "int64"]
    assert frame.to_numpy().tolist() == [[196, 242, 3, 881250949], [186, 302, 3, 891717742]]


def test_windows_line_endings_are_accepted(tmp_path):
    frame = parse_ratings(write(tmp_path, "1\t2\t5\t10\r\n3\t4\t1\t20\r\n"))
    assert frame["timestamp"].tolist() == [10, 20]


@pytest.mark.parametrize("text, expected", [
    ("", "file is empty"),
    ("user_id\titem_id\trating\ttimestamp\n1\t2\t3\t4\n", "line 1: looks like a header line"),
    ("user,item,rating\n", "line 1: looks like a header line"),
    ("1\t2\t3\n", "line 1: expected 4 tab-separated fields"),
    ("1\t2\t3\t4\t5\n", "got 5"),
    ("1\t2\t3\t4\nx\t2\t3\t4\n", "line 2, field 'user_id': expected an integer, got 'x'"),
    ("1\tfoo\t3\t4\n", "field 'item_id': expected an integer"),
    ("1\t2\t6\t4\n", "field 'rating': expected an integer from 1 to 5, got '6'"),
    ("1\t2\t0\t4\n", "field 'rating'"),
    ("1\t2\tnan\t4\n", "field 'rating'"),
    ("1\t2\t3.5\t4\n", "field 'rating'"),
    ("1\t2\t3\t-4\n", "field 'timestamp': expected Unix seconds >= 0"),
    ("1\t2\t3\t4.5\n", "field 'timestamp': expected an integer"),
    ("0\t2\t3\t4\n", "field 'user_id': expected a positive id"),
    ("1\t2\t3\t4\n1\t2\t5\t9\n", "lines 1 and 2: user 1 rated item 2 twice"),
    ("1 2 3 4\n", "expected 4 tab-separated fields"),
])
def test_bad_lines_are_named(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as error:
        parse_ratings(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        parse_ratings(tmp_path / "absent")
    with pytest.raises(DataError, match="is a directory"):
        parse_ratings(tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    # CI runs as root, which reads files whatever their mode bits, so the denial is simulated.
    path = write(tmp_path, "1\t2\t3\t4\n")

    def deny(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "read_bytes", deny)
    with pytest.raises(DataError, match="cannot be read .Permission denied"):
        parse_ratings(path)


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t2\t3\t4\n\xff\t2\t3\t4\n")
    with pytest.raises(DataError, match="byte 8 is not valid utf-8"):
        parse_ratings(path)


def test_items_file_titles(tmp_path):
    path = write(tmp_path, "1|Toy Story (1995)|01-Jan-1995||url|0|0\n2|GoldenEye (1995)\n", "u.item")
    frame = parse_items(path)
    assert frame["item_id"].tolist() == [1, 2]
    assert frame["title"].tolist() == ["Toy Story (1995)", "GoldenEye (1995)"]


rows = st.lists(st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.integers(1, 5),
                          st.integers(0, 2**40)), min_size=1, max_size=50,
                unique_by=lambda r: (r[0], r[1]))


@settings(max_examples=60, deadline=None)
@given(rows=rows, crlf=st.booleans())
def test_round_trip_of_any_valid_file(tmp_path_factory, rows, crlf):
    newline = "\r\n" if crlf else "\n"
    path = write(tmp_path_factory.mktemp("rt"), "".join("\t".join(map(str, r)) + newline for r in rows))
    frame = parse_ratings(path)
    assert [tuple(r) for r in frame.to_numpy().tolist()] == rows


@settings(max_examples=60, deadline=None)
@given(line=st.text(alphabet=st.sampled_from("0123456789\t -.xe"), min_size=1, max_size=20))
def test_any_line_is_parsed_or_rejected_with_its_line_number(tmp_path_factory, line):
    path = write(tmp_path_factory.mktemp("fz"), "1\t1\t1\t1\n" + line + "\n")
    try:
        frame = parse_ratings(path)
    except DataError as error:
        assert "line 2" in str(error) or "lines 1 and 2" in str(error)
    else:
        assert len(frame) == 2
        assert frame["rating"].between(1, 5).all() and (frame["timestamp"] >= 0).all()
        assert np.all(frame[["user_id", "item_id"]].to_numpy() > 0)
