"""Content-addressed artefact store: stage results (JSON) and standardised audio (FLAC).

Keys are sha256 digests, so the same input, stage version, model and config always land on the same
entry: a re-run or a resumed run after a crash reuses what exists and recomputes only what changed.
Every write goes to a temporary name, is flushed and fsynced, then renamed, so a crash never leaves a
half entry that looks complete.

The store may be an object-store URL (``s3://bucket/cache``, through ``songcorpus/io/storage.py``): workers on
other machines then share it without a shared disk. ``root`` is then a local mirror private to this process
(a temporary folder, removed at exit): every write goes to the object store first (one atomic PUT) and then
to the mirror, every read takes the mirror, else the object store (filling the mirror). So the mirror only
ever holds what the store holds, and a crash between the two leaves the entry in the store, where any worker
finds it. Stages read files by ``store.path(rel)``, which fetches a missing one.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.io import storage
from songcorpus.io.atomic import FILE_MODE, atomic_write_bytes, commit_file, npy_bytes, write_file
from songcorpus.schemas.row import canonical_json


class ArtefactStore:
    """A directory of ``results/<stage>/<k[:2]>/<k>.json`` and ``audio/<sha[:2]>/<sha>.flac``."""

    def __init__(self, root: str | Path) -> None:
        self.remote = storage.is_url(root)
        self.root = _mirror(str(root)) if self.remote else Path(root)
        self.url = str(root).rstrip("/") if self.remote else str(self.root)  # what workers are given

    def _remote(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def path(self, rel: str) -> Path:
        """The local file of a store entry (``rel`` as recorded in results); on an object store a file not in
        the mirror yet is fetched. Raises FileNotFoundError when the store has no such entry."""
        local = self.root / rel
        if self.remote and not local.exists():
            storage.download(self._remote(rel), local)
        return local

    def exists(self, rel: str) -> bool:
        if (self.root / rel).exists():
            return True
        if not self.remote:
            return False

        return storage.exists(self._remote(rel))

    def commit_temp(self, tmp: Path, rel: str) -> None:
        """Publish a finished temporary file (from :meth:`new_temp`) as entry ``rel``: uploaded first on an object
        store (skipped when the content-addressed entry is there already), then renamed into the mirror."""
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        if self.remote:
            if not storage.exists(self._remote(rel)):
                storage.upload(tmp, self._remote(rel))
        commit_file(tmp, final)

    def _put(self, rel: str, data: bytes) -> None:
        if self.remote:
            storage.write_bytes(self._remote(rel), data)
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

        rel = path.relative_to(self.root).as_posix()
        try:
            data = storage.read_bytes(self._remote(rel))
            value = json.loads(data)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        atomic_write_bytes(path, data)
        return value

    def put_result(self, stage: str, key: str, value: dict[str, Any]) -> None:
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
        os.fchmod(fd, FILE_MODE)
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
