"""The data fetch: checksums guard the cache, and a verified cache is used without the network."""
from __future__ import annotations

import hashlib

import pytest

from export.data import fetch
from export.data.fetch import fetch_movielens, require_checksum
from contract.errors import ChecksumError, FetchError


def test_checksum_rejects_a_corrupted_file(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"good bytes")
    require_checksum(path, hashlib.md5(b"good bytes").hexdigest(), "md5", "file")
    path.write_bytes(b"good byteZ")
    with pytest.raises(ChecksumError, match="expected"):
        require_checksum(path, hashlib.md5(b"good bytes").hexdigest(), "md5", "file")


def test_corrupted_download_never_reaches_the_cache(tmp_path, monkeypatch):
    def corrupted(target):
        (target / "u.data").write_bytes(b"1\t2\t3\t4\n")

    with pytest.raises(FetchError, match="u.data has md5"):
        fetch_movielens(tmp_path, sources=[("corrupted mirror", corrupted)])
    assert not (tmp_path / fetch.DATASET_DIR).exists()
    assert list(tmp_path.iterdir()) == []


def test_falls_back_to_the_next_source_and_caches(tmp_path, monkeypatch):
    good = b"196\t242\t3\t881250949\n"
    monkeypatch.setattr(fetch, "U_DATA_MD5", hashlib.md5(good).hexdigest())
    calls = []

    def unreachable(target):
        calls.append("first")
        raise FetchError("unreachable")

    def mirror(target):
        calls.append("second")
        (target / "u.data").write_bytes(good)

    folder = fetch_movielens(tmp_path, sources=[("a", unreachable), ("b", mirror)])
    assert calls == ["first", "second"]
    assert (folder / "u.data").read_bytes() == good

    def no_network(target):
        raise AssertionError("a verified cache must not touch the network")

    assert fetch_movielens(tmp_path, sources=[("c", no_network)]) == folder


def test_a_cache_that_no_longer_matches_is_fetched_again(tmp_path, monkeypatch):
    good = b"1\t2\t3\t4\n"
    monkeypatch.setattr(fetch, "U_DATA_MD5", hashlib.md5(good).hexdigest())
    (tmp_path / fetch.DATASET_DIR).mkdir()
    (tmp_path / fetch.DATASET_DIR / "u.data").write_bytes(b"tampered")
    folder = fetch_movielens(tmp_path, sources=[("mirror", lambda t: (t / "u.data").write_bytes(good))])
    assert (folder / "u.data").read_bytes() == good


def test_recbole_items_become_u_item_titles():
    text = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" \
           "1\tToy Story\t1995\tAnimation\n2\tNo Year\t\tDrama\n"
    assert fetch._recbole_items_as_u_item(text) == "1|Toy Story (1995)\n2|No Year\n"
