"""A local S3 server for tests: moto's server mode on 127.0.0.1, a fresh bucket, the AWS_* environment.

``s3_server()`` starts moto's ThreadedMotoServer on a free port of 127.0.0.1 (nothing outside this machine is
reached), yields the endpoint, and stops it. The ``s3`` fixture in conftest.py wraps it: it sets
``AWS_ENDPOINT_URL``, a dummy key and a secret that tests can grep outputs for, creates a bucket and yields
its ``s3://`` URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

BUCKET = "songcorpus-test"
SECRET = "sEcReT-0f-the-test-never-written-anywhere-7c1d"
KEY_ID = "AKIASONGCORPUSTEST01"


@contextmanager
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on 127.0.0.1, stopped on exit."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one request line per GET otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """The standard variables an S3 client reads: endpoint, identity and region."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def make_bucket(name: str = BUCKET) -> str:
    from songcorpus.io.storage import filesystem

    fs, _ = filesystem(f"s3://{name}")
    fs.mkdir(name)
    return f"s3://{name}"
