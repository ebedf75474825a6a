"""Content-addressed artefact store: stage results (JSON) and standardised audio (FLAC).

Keys are sha256 digests, so the same input, stage version, model and config always land on the same
entry: a re-run or a resumed run after a crash reuses what exists and recomputes only what changed.
Every write goes to a temporary name, is flushed and fsynced, then renamed, so a crash never leaves a
half entry that looks complete.

The store may be an object-store URL (``s3://bucket/cache``, through ``pipelines/storage.py``): workers on
other machines then share it without a shared disk. ``root`` is then a local mirror private to this process
(a temporary folder, removed at exit): every write goes to the object store first (one atomic PUT) and then
to the mirror, every read takes the mirror, else the object store (filling the mirror). So the mirror only
ever holds what the store holds, and a crash between the two leaves the entry in the store, where any worker
finds it. Stages read files by ``store.path(rel)``, which fetches a missing one.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; outputs should read like any written file
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


class ArtefactStore:
    """A directory of ``results/<stage>/<k[:2]>/<k>.json`` and ``audio/<sha[:2]>/<sha>.flac``."""

    def __init__(self, root: str | Path) -> None:
        from songcorpus.pipelines.storage import is_url

        self.remote = is_url(root)
        self.root = _mirror(str(root)) if self.remote else Path(root)
        self.url = str(root).rstrip("/") if self.remote else str(self.root)  # what workers are given

    def _remote(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def path(self, rel: str) -> Path:
        """The local file of a store entry (``rel`` as recorded in results); on an object store a file not in
        the mirror yet is fetched. Raises FileNotFoundError when the store has no such entry."""
        local = self.root / rel
        if self.remote and not local.exists():
            from songcorpus.pipelines.storage import download

            download(self._remote(rel), local)
        return local

    def exists(self, rel: str) -> bool:
        if (self.root / rel).exists():
            return True
        if not self.remote:
            return False
        from songcorpus.pipelines.storage import exists

        return exists(self._remote(rel))

    def commit_temp(self, tmp: Path, rel: str) -> None:
        """Publish a finished temporary file (from :meth:`new_temp`) as entry ``rel``: uploaded first on an object
        store (skipped when the content-addressed entry is there already), then renamed into the mirror."""
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        if self.remote:
            from songcorpus.pipelines.storage import exists, upload

            if not exists(self._remote(rel)):
                upload(tmp, self._remote(rel))
        commit_file(tmp, final)

    def _put(self, rel: str, data: bytes) -> None:
        if self.remote:
            from songcorpus.pipelines.storage import write_bytes

            write_bytes(self._remote(rel), data)
        atomic_write_bytes(self.root / rel, data)

    def result_path(self, stage: str, key: str) -> Path:
        return self.root / "results" / stage / key[:2] / f"{key}.json"

    def get_result(self, stage: str, key: str) -> dict[str, Any] | None:
        path = self.result_path(stage, key)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            if not self.remote:
                return None
        except (OSError, json.JSONDecodeError):
            return None  # unreadable entry: recompute and overwrite
        from songcorpus.pipelines.storage import read_bytes

        rel = path.relative_to(self.root).as_posix()
        try:
            data = read_bytes(self._remote(rel))
            value = json.loads(data)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        atomic_write_bytes(path, data)
        return value

    def put_result(self, stage: str, key: str, value: dict[str, Any]) -> None:
        from songcorpus.transforms.base import canonical_json

        path = self.result_path(stage, key)
        self._put(path.relative_to(self.root).as_posix(), canonical_json(value).encode())

    def put_blob(self, data: bytes, suffix: str) -> str:
        """Store bytes by content (``blobs/<sha[:2]>/<sha><suffix>``); returns the path relative to the root."""
        digest = hashlib.sha256(data).hexdigest()
        rel = f"blobs/{digest[:2]}/{digest}{suffix}"
        if not self.exists(rel):
            self._put(rel, data)
        elif not (self.root / rel).exists():  # in the object store already: the mirror gets it, no PUT
            atomic_write_bytes(self.root / rel, data)
        return rel

    def put_array(self, array: np.ndarray) -> str:
        """Store one array as ``.npy`` (no pickle; same array, same bytes, same path)."""
        return self.put_blob(npy_bytes(array), ".npy")

    def get_array(self, rel: str) -> np.ndarray:
        return np.load(self.path(rel), allow_pickle=False)

    def put_pcm16(self, pcm: np.ndarray, rate: int, sha256: str) -> str:
        """Store 16-bit PCM (frames, channels) as FLAC under the sha256 of its samples; returns the relative path."""
        import soundfile as sf

        final = self.audio_path(sha256)
        rel = str(final.relative_to(self.root))
        if not final.exists():
            # Encoded in memory, then written as bytes: libsndfile reports a full or failing disk as an opaque
            # "unspecified error", a Python write as the OSError (ENOSPC, EIO...) with the path that stops the job.
            buf = io.BytesIO()
            sf.write(buf, pcm, rate, format="FLAC", subtype="PCM_16")
            tmp = self.new_temp(".flac")
            try:
                write_file(tmp, buf.getbuffer())
                self.commit_temp(tmp, rel)
            finally:
                tmp.unlink(missing_ok=True)
        return rel

    def audio_path(self, sha256: str) -> Path:
        return self.root / "audio" / sha256[:2] / f"{sha256}.flac"

    def new_temp(self, suffix: str) -> Path:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=suffix, dir=tmp_dir)
        os.fchmod(fd, _FILE_MODE)
        os.close(fd)
        return Path(name)


_MIRRORS: dict[tuple[int, str], Path] = {}


def _mirror(url: str) -> Path:
    """This process's local mirror of the object-store store at ``url`` (removed when the process exits)."""
    key = (os.getpid(), url.rstrip("/"))
    if key not in _MIRRORS:
        path = Path(tempfile.mkdtemp(prefix="songcorpus-mirror-"))
        atexit.register(shutil.rmtree, path, True)
        _MIRRORS[key] = path
    return _MIRRORS[key]
