"""MovieLens' u.data through the ratings reader: good files in, typed frames out; bad lines named
with the file, the line and the column."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.errors import DataError
from export.data.ratings_file import read_ratings


def write(tmp_path, text: str, name: str = "u.data"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_reads_u_data_into_typed_columns(tmp_path):
    read = read_ratings(write(tmp_path, "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"))
    assert read.frame.dtypes.astype(str).tolist() == ["int32", "int32", "float32", "int64"]
    assert read.frame.to_numpy().tolist() == [[196, 242, 3, 881250949], [186, 302, 3, 891717742]]
    assert read.has_order


def test_windows_line_endings_and_a_header_are_accepted(tmp_path):
    assert read_ratings(write(tmp_path, "1\t2\t5\t10\r\n3\t4\t1\t20\r\n")).frame["timestamp"].tolist() == [10, 20]
    headed = read_ratings(write(tmp_path, "user_id\titem_id\trating\ttimestamp\n1\t2\t3\t4\n"))
    assert headed.frame.to_numpy().tolist() == [[1, 2, 3, 4]]


@pytest.mark.parametrize("text, expected", [
    ("", "file is empty"),
    ("1\t2\t3\t4\nx\t2\t3\t4\n", "line 2, column '0': user id 'x' is text where"),
    ("1\t2\tnan\t4\n", "line 1, column '2': expected a finite number, got nan"),
    ("1\t2\tgood\t4\n5\t6\t3\t4\n", "line 1, column '2': expected a number, got 'good'"),
    ("1\t2\t3\t-4\n", "line 1, column '3': expected Unix seconds >= 0, got -4"),
    ("1\t2\t3\t4.5\n", "line 1, column '3': expected whole Unix seconds, got 4.5"),
    ("1.5\t2\t3\t4\n", "line 1, column '0': expected an integer or text user id, got 1.5"),
    ("1\t2\t3\t4\n1\t2\t5\t9\n", "line 1 and"),
    ("1\t2\t3\t4\n1\t2\t3\n", "line 2: expected 4 fields separated by tabs, got 3"),
    ("1 2 3 4\n", "line 1: expected fields separated by a tab, '::', '|' or ','"),
])
def test_bad_lines_are_named(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as error:
        read_ratings(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_missing_file_and_a_folder_without_data(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_ratings(tmp_path / "absent")
    with pytest.raises(DataError, match="folder holds no data files"):
        read_ratings(tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    # CI runs as root, which reads files whatever their mode bits, so the denial is simulated.
    path = write(tmp_path, "1\t2\t3\t4\n")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pa, "input_stream", deny)
    with pytest.raises(DataError, match="cannot be read .*Permission denied"):
        read_ratings(path)


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t2\t3\t4\n\xff\t2\t3\t4\n")
    with pytest.raises(DataError, match="u.data: not valid utf-8 text .column 1"):
        read_ratings(path)


rows = st.lists(st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.integers(1, 5),
                          st.integers(0, 2**40)), min_size=1, max_size=50,
                unique_by=lambda r: (r[0], r[1]))


@settings(max_examples=60, deadline=None)
@given(rows=rows, crlf=st.booleans())
def test_round_trip_of_any_valid_file(tmp_path_factory, rows, crlf):
    newline = "\r\n" if crlf else "\n"
    path = write(tmp_path_factory.mktemp("rt"), "".join("\t".join(map(str, r)) + newline for r in rows))
    frame = read_ratings(path).frame
    assert [tuple(r) for r in frame.to_numpy().astype(np.int64).tolist()] == rows


@settings(max_examples=60, deadline=None)
@given(line=st.text(alphabet=st.sampled_from("0123456789\t -.xe"), min_size=1, max_size=20))
def test_any_line_is_read_or_rejected_with_its_line_number(tmp_path_factory, line):
    path = write(tmp_path_factory.mktemp("fz"), "1\t1\t1\t1\n" + line + "\n")
    try:
        frame = read_ratings(path).frame
    except DataError as error:
        assert "line 2" in str(error) or "line 1" in str(error), str(error)
    else:
        assert len(frame) == 2 and np.isfinite(frame["rating"]).all() and (frame["timestamp"] >= 0).all()


def test_ids_wider_than_32_bits_stay_64_bit(tmp_path):
    read = read_ratings(write(tmp_path, f"{2**40}\t2\t3\t4\n5\t{2**33}\t1\t4\n"))
    assert read.frame["user_id"].dtype == np.int64 and read.frame["user_id"].tolist() == [2**40, 5]
    assert read.frame["item_id"].tolist() == [2, 2**33]
