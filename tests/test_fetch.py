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


@pytest.fixture
def grouplens(tmp_path):
    """A local stand-in for GroupLens on 127.0.0.1 serving ml-1m.zip and its published md5."""
    import functools
    import http.server
    import threading
    import zipfile

    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "ml-1m.zip", "w") as archive:
        archive.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
        archive.writestr("ml-1m/movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n")
    digest = hashlib.md5((served / "ml-1m.zip").read_bytes()).hexdigest()
    (served / "ml-1m.zip.md5").write_text(f"MD5 (ml-1m.zip) = {digest}\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_release_is_fetched_checked_and_cached_by_name(grouplens, tmp_path):
    from conftest import run_cli
    served, url = grouplens
    cache = tmp_path / "cache"
    result = run_cli("export.data.fetch", "--dataset", "ml-1m", "--cache-dir", str(cache), "--base-url", url)
    assert result.returncode == 0, result.stderr
    ratings = cache / "ml-1m" / "ratings.dat"
    assert result.stdout.strip() == str(ratings) and ratings.read_text().startswith("1::1193::5")
    (served / "ml-1m.zip").unlink()   # cached now: no network needed
    again = run_cli("export.data.fetch", "--dataset", "ml-1m", "--cache-dir", str(cache), "--base-url", url)
    assert again.returncode == 0 and again.stdout.strip() == str(ratings)


def test_a_corrupted_release_is_refused_and_never_cached(grouplens, tmp_path):
    from conftest import run_cli
    served, url = grouplens
    data = bytearray((served / "ml-1m.zip").read_bytes())
    data[40] ^= 0xFF
    (served / "ml-1m.zip").write_bytes(bytes(data))
    result = run_cli("export.data.fetch", "--dataset", "ml-1m", "--cache-dir", str(tmp_path / "c"), "--base-url", url)
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "ml-1m.zip: md5" in error and "as published in" in error
    assert not (tmp_path / "c" / "ml-1m").exists()


def test_an_unreachable_source_says_how_to_pass_a_downloaded_copy(tmp_path):
    from conftest import run_cli
    import socket
    with socket.socket() as probe:   # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("export.data.fetch", "--dataset", "ml-25m", "--cache-dir", str(tmp_path),
                     "--base-url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "unreachable" in error and "pass its ratings.csv with --ratings PATH" in error
