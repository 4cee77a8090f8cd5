"""Locations on object stores (``s3://``, ``gs://``, ``hdfs://`` and whatever else ``pyarrow.fs``
resolves): reading, writing, listing and deleting through pyarrow, and the conditional writes
(create-only, replace-if-unchanged) that publishing needs through boto3, for S3.

Credentials and the endpoint come from the standard AWS environment and configuration files
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``), read by
both libraries; no option takes a secret. Every failure becomes one ``StoreError`` line naming
the location and what to check.
"""
from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.fs as pafs

from .errors import PublishError, RecJobError, StoreError

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
CONDITIONAL_SCHEMES = ("s3",)
"""Stores whose conditional writes this job sends; publishing elsewhere is refused."""
UPLOAD_THREADS = 8
"""Files sent to a store at once: object stores reward parallel requests."""

T = TypeVar("T")

Location = Path | str
"""A local path, or the URI of a folder on an object store."""


def is_remote(location: Location | None) -> bool:
    """Whether ``location`` is on an object store (a URI other than ``file://``)."""
    return isinstance(location, str) and (m := SCHEME.match(location)) is not None and m.group(1) != "file"


def parse_location(text: str | Path) -> Location:
    """An option's value as a local ``Path`` (``file://`` URIs included) or a store URI without
    a trailing slash."""
    text = str(text)
    match = SCHEME.match(text)
    if match is None:
        return Path(text)
    if match.group(1) == "file":
        return Path(text[len("file://"):])
    return text.rstrip("/")


def _reason(exc: BaseException) -> str:
    """What a store's failure means to the user, in a few words."""
    text = str(exc)
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code", "")
    joined = f"{code} {text}"
    if any(k in joined for k in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ACCESS_DENIED", "AccessDenied",
                                 "Forbidden", "NoCredentials", "Unable to locate credentials")):
        return ("access denied: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_PROFILE) and the bucket's policy")
    if "NoSuchBucket" in joined or "NO_SUCH_BUCKET" in joined:
        return "the bucket does not exist"
    if any(k in joined for k in ("Could not connect", "Connection refused", "Couldn't connect",
                                 "NETWORK_CONNECTION", "EndpointConnectionError", "Failed to connect")):
        return "the store cannot be reached: check AWS_ENDPOINT_URL and the network"
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextlib.contextmanager
def _errors(where: str, doing: str) -> Iterator[None]:
    """StoreError naming ``where`` for any failure of pyarrow or boto3 while ``doing``."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError, boto3 its own tree; both mean one thing here
        if type(exc).__module__.startswith(("botocore", "boto3")) or isinstance(exc, (OSError, ValueError)):
            raise StoreError(f"{where}: cannot {doing} ({_reason(exc)})") from exc
        raise


@dataclass(frozen=True)
class Store:
    """A folder on an object store: ``uri`` is what users see, ``path`` what ``fs`` takes."""

    uri: str
    fs: pafs.FileSystem = field(repr=False, compare=False)
    path: str

    @classmethod
    def open(cls, uri: str) -> "Store":
        """The store folder at ``uri``; StoreError when its filesystem cannot be made."""
        with _errors(uri, "open the store"):
            fs, path = pafs.FileSystem.from_uri(uri)
        return cls(uri.rstrip("/"), fs, path.rstrip("/"))

    @property
    def scheme(self) -> str:
        return SCHEME.match(self.uri).group(1)

    @property
    def name(self) -> str:
        """The last part of the folder's path."""
        return self.path.rsplit("/", 1)[-1]

    def child(self, *parts: str) -> "Store":
        suffix = "/".join(parts)
        return Store(f"{self.uri}/{suffix}", self.fs, f"{self.path}/{suffix}")

    def uri_of(self, name: str) -> str:
        return f"{self.uri}/{name}"

    # -- plain reads and writes, through pyarrow --------------------------------------------------

    def read_bytes(self, name: str) -> bytes | None:
        """The object ``name`` under this folder, or None when there is none."""
        with _errors(self.uri_of(name), "read"):
            try:
                with self.fs.open_input_stream(f"{self.path}/{name}") as stream:
                    return stream.read()
            except FileNotFoundError:
                return None

    def write_bytes(self, name: str, data: bytes) -> None:
        with _errors(self.uri_of(name), "write"):
            with self.fs.open_output_stream(f"{self.path}/{name}") as stream:
                stream.write(data)

    def exists(self, name: str) -> bool:
        with _errors(self.uri_of(name), "look up"):
            return self.fs.get_file_info(f"{self.path}/{name}").type != pafs.FileType.NotFound

    def folders(self) -> list[str]:
        """Names of the folders (common prefixes) directly under this one, sorted."""
        with _errors(self.uri, "list"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def files(self) -> list[str]:
        """Paths, relative to this folder, of every object below it, sorted."""
        with _errors(self.uri, "list"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        start = len(self.path) + 1
        return sorted(i.path[start:] for i in infos if i.type == pafs.FileType.File)

    def delete(self, name: str) -> None:
        self._delete([name])

    def delete_folder(self, name: str) -> None:
        """Every object under ``name``; its ``_SUCCESS`` first, so that a deletion cut short
        leaves a folder the next run sees as unfinished."""
        self._delete([f"{name}/_SUCCESS"])
        self._delete([f"{name}/{f}" for f in self.child(name).files()])

    def _delete(self, names: list[str]) -> None:
        """Remove objects; on S3 through boto3, since pyarrow leaves an empty folder marker behind
        the last object of a folder."""
        if not names:
            return
        if self.scheme != "s3":
            for name in names:
                with _errors(self.uri_of(name), "delete"), contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(f"{self.path}/{name}")
            return
        client = _s3_client()
        for start in range(0, len(names), 1000):   # the most one DeleteObjects request takes
            batch = names[start:start + 1000]
            bucket = self._bucket_key("")[0]
            with _errors(self.uri_of(batch[0]), "delete"):
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": self._bucket_key(n)[1]}
                                                                        for n in batch], "Quiet": True})

    def upload(self, local: Path, names: list[str], prefix: str) -> None:
        """Send the files ``names`` (relative to ``local``) to ``prefix/<name>``, several at once."""
        source = pafs.LocalFileSystem()

        def send(name: str) -> None:
            key = f"{prefix}/{name}" if prefix else name
            with _errors(self.uri_of(key), "write"):
                pafs.copy_files(str(local / name), f"{self.path}/{key}",
                                source_filesystem=source, destination_filesystem=self.fs)

        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(send, names))

    def download(self, target: Path) -> list[str]:
        """Copy every object below this folder into ``target``; returns their relative paths."""
        names = self.files()
        destination = pafs.LocalFileSystem()

        def fetch(name: str) -> None:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            with _errors(self.uri_of(name), "read"):
                pafs.copy_files(f"{self.path}/{name}", str(target / name),
                                source_filesystem=self.fs, destination_filesystem=destination)

        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(fetch, names))
        return names

    # -- conditional writes, through boto3 (S3 only) ------------------------------------------------

    def _client(self) -> Any:
        if self.scheme not in CONDITIONAL_SCHEMES:
            raise PublishError(f"{self.uri}: publishing to {self.scheme}:// needs conditional writes, which this job "
                               f"sends to {', '.join(s + '://' for s in CONDITIONAL_SCHEMES)} only; publish to a "
                               "local path or an s3:// URI")
        return _s3_client()

    def _bucket_key(self, name: str) -> tuple[str, str]:
        bucket, _, prefix = self.path.partition("/")
        return bucket, f"{prefix}/{name}" if prefix else name

    def read_tagged(self, name: str) -> tuple[bytes | None, str | None, dict[str, Any]]:
        """The object's bytes and ETag, and the response's metadata (None, None, {} when absent)."""
        client = self._client()
        bucket, key = self._bucket_key(name)
        with _errors(self.uri_of(name), "read"):
            try:
                response = client.get_object(Bucket=bucket, Key=key)
            except client.exceptions.NoSuchKey:
                return None, None, {}
            return response["Body"].read(), response["ETag"], response

    def put_conditional(self, name: str, data: bytes, etag: str | None) -> str | None:
        """Write ``name`` only if it does not exist (``etag`` None) or still has ``etag``; its new
        ETag, or None when the condition failed (someone else wrote or removed it first)."""
        client = self._client()
        bucket, key = self._bucket_key(name)
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        with _errors(self.uri_of(name), "write"):
            try:
                return client.put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"]
            except client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                                                  "NoSuchKey"):
                    return None
                raise

    def check_access(self) -> None:
        """StoreError now, naming the bucket, when it does not exist or the credentials are refused."""
        if self.scheme not in CONDITIONAL_SCHEMES:
            self.folders()
            return
        client = _s3_client()
        bucket, key = self._bucket_key("")
        with _errors(self.uri, "use the bucket"):
            client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)


_CLIENT: Any = None


def _s3_client() -> Any:
    """One boto3 S3 client per process, configured from the standard AWS environment."""
    global _CLIENT
    if _CLIENT is None:
        try:
            import boto3
        except ImportError:
            raise PublishError("publishing to s3:// needs boto3 for its conditional writes: "
                               "pip install 'movielens-batch-recs[s3]'") from None
        _CLIENT = boto3.client("s3")
    return _CLIENT


_MIRRORS: dict[str, Path] = {}


def mirror(uri: str) -> Path:
    """A local copy of the file or folder at ``uri`` (or of the files a glob in its last part
    matches, as a folder), in a temporary folder removed when the process ends. Readers of input
    files take local paths; inputs are read whole anyway, so a copy costs one transfer."""
    if uri in _MIRRORS:
        return _MIRRORS[uri]
    import atexit
    import fnmatch
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="recjob-input-"))
    atexit.register(shutil.rmtree, target, True)
    parent, _, last = uri.rstrip("/").rpartition("/")
    if any(ch in last for ch in "*?["):
        folder = Store.open(parent)
        names = [n for n in folder.files() if "/" not in n and fnmatch.fnmatch(n, last)]
        if not names:
            raise StoreError(f"{uri}: no files match this pattern")
        for name in names:
            with _errors(folder.uri_of(name), "read"):
                pafs.copy_files(f"{folder.path}/{name}", str(target / name), source_filesystem=folder.fs,
                                destination_filesystem=pafs.LocalFileSystem())
        local = target if len(names) > 1 else target / names[0]
    else:
        store = Store.open(uri)
        with _errors(uri, "look up"):
            kind = store.fs.get_file_info(store.path).type
        if kind == pafs.FileType.NotFound:
            raise StoreError(f"{uri}: file not found")
        if kind == pafs.FileType.Directory:
            local = target / last
            local.mkdir()
            store.download(local)
        else:
            local = target / last
            with _errors(uri, "read"):
                pafs.copy_files(store.path, str(local), source_filesystem=store.fs,
                                destination_filesystem=pafs.LocalFileSystem())
    _MIRRORS[uri] = local
    return local


def follow_latest(uri: str) -> Store | None:
    """The published folder ``uri`` names: itself when it holds a ``manifest.json``, else the folder
    its ``_LATEST`` pointer names (``uri`` is a root); None when it is neither."""
    folder = Store.open(uri)
    if folder.exists("manifest.json"):
        return folder
    pointer = folder.read_bytes("_LATEST")
    name = pointer.decode().strip() if pointer is not None else ""
    return folder.child(name) if name else None


def read_copy(uri: str, read: Callable[[Path], T]) -> T:
    """``read`` applied to a local copy of ``uri`` (``mirror``); the messages of the errors it
    raises name the URI, not the copy."""
    local = mirror(uri)
    try:
        return read(local)
    except RecJobError as exc:
        exc.args = (str(exc).replace(str(local), uri),)
        raise
