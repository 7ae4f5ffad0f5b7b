"""A real S3-compatible server on loopback for the object-storage tests: moto's standalone server.

moto's in-process mocking patches boto's Python client only; Lance speaks S3 from Rust, so it needs a
server it can reach over HTTP. The same server speaks DynamoDB, which the `s3+ddb://` commit store uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from moto.server import ThreadedMotoServer

KEY_ID, SECRET, REGION = "seerec-key", "seerec-secret", "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    @property
    def storage_options(self) -> dict[str, str]:
        """Everything in `store.storage_options`: a custom endpoint over plain HTTP, and the keys."""
        return {"aws_endpoint": self.endpoint, "allow_http": "true", "aws_region": REGION,
                "aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}

    @property
    def env(self) -> dict[str, str]:
        """The same settings as environment variables, for a config without storage_options."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}

    def client(self, service: str = "s3"):
        return boto3.client(service, endpoint_url=self.endpoint, aws_access_key_id=KEY_ID,
                            aws_secret_access_key=SECRET, region_name=REGION)

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextmanager
def s3_server(bucket: str = "seerec-test") -> Iterator[S3Server]:
    """Start moto on 127.0.0.1 (a free port), create the bucket, and stop the server on exit."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(f"http://{host}:{port}", bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
