"""Durable local writes, written once for every writer in the project: a file is written under a temporary name,
flushed, fsynced and renamed, so a crash leaves the old file or the new one, never half of one; a failed write names
its file (the job's fault message says which disk filled up).

Reads and writes: only the paths it is given. Fails: OSError, with the file's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def sha256_file(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, by reading it in 1 MiB chunks (stat sizes lie for special files);
    raises OSError naming the problem (permission, I/O error...)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` encoding of an array (C order, no pickle): byte-stable for equal arrays."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; outputs should read like any written file
        with naming_the_file(path), os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` (a temporary file its caller commits); a failed write names the file."""
    with naming_the_file(path), open(path, "wb") as fh:
        fh.write(data)


@contextlib.contextmanager
def naming_the_file(path: Path) -> Iterator[None]:
    """A failed ``write()`` raises an OSError without a file name (only ``open()`` sets one); the job's fault
    message (``schemas/failures.py``) should say which disk filled up."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise


def commit_file(tmp: Path, path: Path) -> None:
    """fsync a finished temporary file and rename it into place."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["FILE_MODE", "atomic_write_bytes", "commit_file", "fsync_dir", "naming_the_file", "npy_bytes", "sha256_file",
           "write_file"]
