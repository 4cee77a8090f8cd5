"""moto's S3 server on 127.0.0.1 in a process of its own, with credentials checked: a user whose
key the job is given, any other key refused as AWS would. The object-store tests and
``make bench BENCH_ARGS="--store s3"`` publish to it; ``moto[server]`` is in the ``test`` extra."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

UNCHECKED_SETUP_REQUESTS = 4
"""Requests moto serves before it checks credentials: create the bucket policy's user, its policy and its key."""


@dataclass
class S3Server:
    """The server's endpoint and a user's key; ``env`` is what the job's processes are given."""

    endpoint: str
    process: subprocess.Popen = field(repr=False)
    key: str = ""
    secret: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self) -> Any:
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret)

    def new_bucket(self) -> str:
        name = f"recjob-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server() -> S3Server:
    import boto3
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(UNCHECKED_SETUP_REQUESTS)}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto's S3 server did not start")
            time.sleep(0.1)
    server = S3Server(f"http://127.0.0.1:{port}", process)
    iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="recjob")
    iam.put_user_policy(UserName="recjob", PolicyName="everything", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="recjob")["AccessKey"]
    server.key, server.secret = key["AccessKeyId"], key["SecretAccessKey"]
    return server
