"""Ratings files in the forms teams have them: every format and layout reads to the same ratings,
columns map by name or position, ids keep their type, and every kind of bad input is named."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contract.errors import DataError, UsageError
from contract.scale import RatingScale
from export.data.columns import RATING_ROLES, ColumnMapping
from export.data.items_file import read_items
from export.data.ratings_file import RatingsOptions, rating_scale, read_ratings
from export.data.synthetic import generate_ratings

FRAME = generate_ratings(30, 20, 200, seed=3)
HEADER = ["userId", "movieId", "rating", "timestamp"]


def text(path, frame=FRAME, sep="\t", header=None, compress=None):
    lines = [sep.join(header)] if header else []
    lines += [sep.join(str(v) for v in row) for row in frame.itertuples(index=False)]
    data = ("\n".join(lines) + "\n").encode()
    if compress == "gz":
        data = gzip.compress(data)
    elif compress == "zst":
        import pyarrow as pa
        with pa.CompressedOutputStream(str(path), "zstd") as out:
            out.write(data)
        return path
    path.write_bytes(data)
    return path


def expect_same(read, frame=FRAME):
    got = read.frame
    assert got["user_id"].tolist() == frame["user_id"].tolist()
    assert got["item_id"].tolist() == frame["item_id"].tolist()
    assert np.allclose(got["rating"], frame["rating"])
    assert got["timestamp"].tolist() == frame["timestamp"].tolist()


@pytest.mark.parametrize("name, sep, header, compress", [
    ("u.data", "\t", None, None),
    ("ratings.dat", "::", None, None),
    ("ratings.csv", ",", HEADER, None),
    ("ratings.psv", "|", ["user_id", "item_id", "rating", "ts"], None),
    ("ratings.csv.gz", ",", HEADER, "gz"),
    ("ratings.tsv.zst", "\t", ["user", "item", "rating", "time"], "zst"),
])
def test_text_layouts_read_the_same_ratings(tmp_path, name, sep, header, compress):
    expect_same(read_ratings(text(tmp_path / name, sep=sep, header=header, compress=compress)))


def test_parquet_file_folder_glob_and_hive_partitions_read_the_same_ratings(tmp_path):
    table = pa.Table.from_pandas(FRAME.rename(columns={"user_id": "userId", "item_id": "movieId"}),
                                 preserve_index=False)
    pq.write_table(table, tmp_path / "one.parquet")
    expect_same(read_ratings(tmp_path / "one.parquet"))
    parts = tmp_path / "parts"
    parts.mkdir()
    for k, start in enumerate(range(0, len(FRAME), 70)):
        pq.write_table(table.slice(start, 70), parts / f"part-{k:05d}.parquet")
    (parts / "_SUCCESS").write_text("")
    expect_same(read_ratings(parts))
    expect_same(read_ratings(str(parts / "part-*.parquet")))
    hive = tmp_path / "hive"
    for k, start in enumerate(range(0, len(FRAME), 70)):
        (hive / f"day=2024-01-0{k + 1}").mkdir(parents=True)
        pq.write_table(table.slice(start, 70), hive / f"day=2024-01-0{k + 1}" / "data.parquet")
    expect_same(read_ratings(hive))
    by_day = read_ratings(hive, RatingsOptions(order_by="day")).frame["timestamp"]   # a partition key as a column
    assert by_day.tolist() == [0] * 70 + [1] * 70 + [2] * 60


def test_columns_map_by_name_or_by_position(tmp_path):
    renamed = FRAME[["rating", "item_id", "user_id", "timestamp"]]
    path = text(tmp_path / "r.csv", renamed, ",", ["stars", "sku", "account", "when"])
    mapping = ColumnMapping.parse("user=account,item=sku,rating=stars,timestamp=when", RATING_ROLES)
    expect_same(read_ratings(path, RatingsOptions(columns=mapping)))
    bare = text(tmp_path / "r.tsv", renamed, "\t")
    expect_same(read_ratings(bare, RatingsOptions(columns=ColumnMapping.parse("user=2,item=1,rating=0,timestamp=3",
                                                                               RATING_ROLES))))


def test_ids_keep_their_type(tmp_path):
    frame = FRAME.assign(user_id="acct-" + FRAME["user_id"].astype(str), item_id=FRAME["item_id"].astype(np.int64) + 2**40)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "r.parquet")
    read = read_ratings(tmp_path / "r.parquet")
    assert read.frame["user_id"].iloc[0].startswith("acct-")
    assert read.frame["item_id"].dtype == np.int64 and read.frame["item_id"].min() > 2**40
    digits = read_ratings(text(tmp_path / "r.tsv"), RatingsOptions(string_ids=True))
    assert digits.frame["user_id"].tolist() == FRAME["user_id"].astype(str).tolist()


def test_half_stars_and_the_scale(tmp_path):
    frame = FRAME.assign(rating=FRAME["rating"] / 2 + 0.5)   # 1-5 stars -> 1-3 in half stars
    read = read_ratings(text(tmp_path / "r.csv", frame, ",", HEADER))
    assert rating_scale([read], None) == RatingScale(1.0, 3.0)
    assert rating_scale([read], RatingScale(0.5, 5.0)) == RatingScale(0.5, 5.0)
    with pytest.raises(DataError, match=r"r.csv, line \d+, column 'rating': expected a rating from 1 to 2.5 "
                                        r"\(--rating-scale\), got 3"):
        rating_scale([read], RatingScale(1.0, 2.5))


def test_duplicates_error_last_or_mean(tmp_path):
    frame = pd.DataFrame({"user_id": [1, 1, 2, 1], "item_id": [5, 5, 5, 6], "rating": [2.0, 4.0, 3.0, 1.0],
                          "timestamp": [10, 20, 5, 1]})
    path = text(tmp_path / "r.csv", frame, ",", HEADER)
    with pytest.raises(DataError, match=r"r.csv, line 2 and .*r.csv, line 3: user 1 rated item 5 more than once; "
                                        r".*--duplicates last.*--duplicates mean"):
        read_ratings(path)
    last = read_ratings(path, RatingsOptions(duplicates="last")).frame
    assert last.values.tolist() == [[1, 5, 4.0, 20], [2, 5, 3.0, 5], [1, 6, 1.0, 1]]
    mean = read_ratings(path, RatingsOptions(duplicates="mean")).frame
    assert mean.values.tolist() == [[1, 5, 3.0, 20], [2, 5, 3.0, 5], [1, 6, 1.0, 1]]


def test_no_timestamp_and_an_order_column(tmp_path):
    frame = FRAME[["user_id", "item_id", "rating"]].assign(seq=np.arange(len(FRAME))[::-1])
    path = text(tmp_path / "r.csv", frame, ",", ["user", "item", "rating", "seq"])
    assert not read_ratings(path).has_order
    ordered = read_ratings(path, RatingsOptions(order_by="seq"))
    assert ordered.has_order and ordered.frame["timestamp"].tolist() == list(range(len(FRAME)))[::-1]


def test_movielens_items_files_give_titles(tmp_path):
    (tmp_path / "u.item").write_bytes("1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n2|Caf\xe9 (1990)|||x|0|0\n"
                                      .encode("latin-1"))
    assert read_items(tmp_path / "u.item") == {1: "Toy Story (1995)", 2: "Café (1990)"}
    (tmp_path / "movies.dat").write_bytes("1::Star Wars: Episode IV (1977)::Action\n".encode("latin-1"))
    assert read_items(tmp_path / "movies.dat") == {1: "Star Wars: Episode IV (1977)"}
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n1,"Heat, the (1995)",Action\n')
    assert read_items(tmp_path / "movies.csv") == {1: "Heat, the (1995)"}


def bad_parquet(tmp_path, **columns):
    pq.write_table(pa.table(columns), tmp_path / "bad.parquet")
    return tmp_path / "bad.parquet"


BASE = {"userId": [1, 2, 3], "movieId": [1, 2, 3], "rating": [4.0, 3.0, 5.0], "timestamp": [1, 2, 3]}


@pytest.mark.parametrize("make, message", [
    (lambda p: text(p / "r.csv", header=["userId", "moveId", "rating", "timestamp"], sep=","),
     r"r.csv: no item column; columns found: userId, moveId, rating, timestamp; expected one named "
     r"movieid or itemid or item_id or movie_id or item, or map it with --columns item=NAME"),
    (lambda p: (p / "r.csv").write_text("userId,movieId,rating\n1,5,4\nabc,6,3\n") and p / "r.csv",
     r"r.csv, line 3, column 'userId': user id 'abc' is text where .*r.csv, line 2 holds the integer id '1'"),
    (lambda p: bad_parquet(p, **{**BASE, "userId": [1, None, 3]}), r"bad.parquet, row 2, column 'userId': missing user id"),
    (lambda p: (p / "r.csv").write_text("userId,movieId,rating\n1,5,4\n2,6,good\n") and p / "r.csv",
     r"r.csv, line 3, column 'rating': expected a number, got 'good'"),
    (lambda p: bad_parquet(p, **{**BASE, "rating": [4.0, float("nan"), 5.0]}),
     r"bad.parquet, row 2, column 'rating': expected a finite number, got nan"),
    (lambda p: bad_parquet(p, **{**BASE, "rating": [4.0, 3.0, float("inf")]}),
     r"bad.parquet, row 3, column 'rating': expected a finite number, got inf"),
    (lambda p: (p / "r.csv").write_text("userId,movieId,rating\n1,5,4\n2,6\n3,7,5\n") and p / "r.csv",
     r"r.csv, line 3: expected 3 fields separated by commas, got 2: '2,6'"),
    (lambda p: bad_parquet(p, **{k: pa.array([], pa.int64()) for k in BASE}), r"bad.parquet: Parquet file holds no rows"),
    (lambda p: (p / "empty").mkdir() or p / "empty", r"empty: folder holds no data files"),
    (lambda p: bad_parquet(p, **{**BASE, "timestamp": [1, -5, 3]}),
     r"bad.parquet, row 2, column 'timestamp': expected Unix seconds >= 0, got -5"),
    (lambda p: (p / "r.csv").write_text("") or p / "r.csv", r"r.csv: file is empty"),
    (lambda p: p / "nowhere.csv", r"nowhere.csv: file not found"),
])
def test_bad_input_is_named(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        read_ratings(make(tmp_path))


def test_bad_part_files_are_named(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table(BASE), folder / "part-0.parquet")
    pq.write_table(pa.table({**BASE, "userId": ["a", "b", "c"]}), folder / "part-1.parquet")
    with pytest.raises(DataError, match=r"part-1.parquet: column 'userId' holds string values where .*part-0.parquet "
                                        r"holds int64"):
        read_ratings(folder)
    (folder / "part-1.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    with pytest.raises(DataError, match=r"part-1.parquet: unreadable Parquet part file"):
        read_ratings(folder)


def test_a_column_named_twice_or_an_unknown_role_is_bad_usage():
    with pytest.raises(UsageError, match="--columns: column 'x' is named twice"):
        ColumnMapping.parse("user=x,item=x", RATING_ROLES)
    with pytest.raises(UsageError, match="--columns: unknown role 'genre'"):
        ColumnMapping.parse("genre=g", RATING_ROLES)
    with pytest.raises(UsageError, match="--columns: expected ROLE=COLUMN pairs"):
        ColumnMapping.parse("user", RATING_ROLES)


def test_a_header_over_text_ids_is_recognised_by_its_column_names(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("customer,sku,score\nc-1,s-9,4\nc-2,s-9,5\n")
    mapping = ColumnMapping.parse("user=customer,item=sku,rating=score", RATING_ROLES)
    read = read_ratings(path, RatingsOptions(columns=mapping))
    assert read.frame["user_id"].tolist() == ["c-1", "c-2"] and read.frame["rating"].tolist() == [4.0, 5.0]
    titles = tmp_path / "items.csv"
    titles.write_text("item_id,title\ns-9,Nine\n")
    assert read_items(titles, as_text=True) == {"s-9": "Nine"}
