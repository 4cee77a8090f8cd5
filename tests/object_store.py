"""A bucket of a test's own on moto's S3 server (``benchmarks.s3_server``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.s3_server import S3Server


@dataclass
class Bucket:
    """A bucket of the test's own; ``env``: the variables its CLIs are run with."""

    name: str
    server: S3Server
    env: dict[str, str]

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.name}", *parts])

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.server.client().put_object(Bucket=self.name, Key=key, Body=data)

    def put_bundle(self, bundle: Path, prefix: str = "artifacts") -> str:
        """Copy a local bundle folder as ``prefix/<its name>`` and point ``prefix/_LATEST`` at it; its URI."""
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            self.write(f"{prefix}/{bundle.name}/{path.relative_to(bundle).as_posix()}", path.read_bytes())
        self.write(f"{prefix}/_LATEST", f"{bundle.name}\n".encode())
        return self.uri(prefix, bundle.name)
