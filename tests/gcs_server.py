"""A local Google Cloud Storage server for tests: gcp-storage-emulator (pure Python, in memory) on 127.0.0.1.

``gcs_server()`` starts it on a free port of 127.0.0.1 (nothing outside this machine is reached), yields its
endpoint, and stops it. ``gcs_env(endpoint)`` is the environment gcsfs reads: ``STORAGE_EMULATOR_HOST`` (the
endpoint), ``NO_GCE_CHECK=true`` (no metadata server to ask for an identity: gcsfs then connects anonymously),
and ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` (gcsfs otherwise asks Google's storage control API, which the
emulator does not serve, for every bucket's layout, and logs a warning each time; read when gcsfs is imported).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def gcs_server() -> Iterator[str]:
    """The endpoint URL of an in-memory GCS emulator on 127.0.0.1, stopped on exit."""
    import logging

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)  # one line per request otherwise
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def gcs_env(endpoint: str) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": endpoint, "NO_GCE_CHECK": "true", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def make_bucket(name: str) -> str:
    from songcorpus.io.storage import filesystem

    fs, _ = filesystem(f"gs://{name}")
    fs.mkdir(name)
    return f"gs://{name}"
