"""Content-addressed artefact store: stage results (JSON) and standardised audio (FLAC).

Keys are sha256 digests, so the same input, stage version, model and config always land on the same
entry: a re-run or a resumed run after a crash reuses what exists and recomputes only what changed.
Every write goes to a temporary name, is flushed and fsynced, then renamed, so a crash never leaves a
half entry that looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
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
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
        self.root = Path(root)

    def result_path(self, stage: str, key: str) -> Path:
        return self.root / "results" / stage / key[:2] / f"{key}.json"

    def get_result(self, stage: str, key: str) -> dict[str, Any] | None:
        path = self.result_path(stage, key)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return None  # unreadable entry: recompute and overwrite

    def put_result(self, stage: str, key: str, value: dict[str, Any]) -> None:
        from songcorpus.transforms.base import canonical_json

        atomic_write_bytes(self.result_path(stage, key), canonical_json(value).encode())

    def put_blob(self, data: bytes, suffix: str) -> str:
        """Store bytes by content (``blobs/<sha[:2]>/<sha><suffix>``); returns the path relative to the root."""
        digest = hashlib.sha256(data).hexdigest()
        rel = f"blobs/{digest[:2]}/{digest}{suffix}"
        path = self.root / rel
        if not path.exists():
            atomic_write_bytes(path, data)
        return rel

    def put_array(self, array: np.ndarray) -> str:
        """Store one array as ``.npy`` (no pickle; same array, same bytes, same path)."""
        return self.put_blob(npy_bytes(array), ".npy")

    def get_array(self, rel: str) -> np.ndarray:
        return np.load(self.root / rel, allow_pickle=False)

    def put_pcm16(self, pcm: np.ndarray, rate: int, sha256: str) -> str:
        """Store 16-bit PCM (frames, channels) as FLAC under the sha256 of its samples; returns the relative path."""
        import soundfile as sf

        final = self.audio_path(sha256)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.new_temp(".flac")
            try:
                sf.write(str(tmp), pcm, rate, format="FLAC", subtype="PCM_16")
                commit_file(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
        return str(final.relative_to(self.root))

    def audio_path(self, sha256: str) -> Path:
        return self.root / "audio" / sha256[:2] / f"{sha256}.flac"

    def new_temp(self, suffix: str) -> Path:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=suffix, dir=tmp_dir)
        os.fchmod(fd, _FILE_MODE)
        os.close(fd)
        return Path(name)
