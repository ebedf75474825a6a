"""FingerprintStage: a Chromaprint audio fingerprint of each track, the stored score near-duplicate matching reads.

Reads: the standardised audio ingest wrote (``results.ingest.audio_file``: 16-bit FLAC), decoded here with
libsndfile and piped to ``fpcalc`` as raw s16le, so every input format reaches Chromaprint as the same PCM
(an mp3 and its FLAC original differ only by what the codec changed) and fpcalc decodes nothing itself.
Writes: the raw fingerprint (uint32 sub-fingerprints, one per 1365/11025 s, Chromaprint's default algorithm 2)
as a ``.npy`` blob in the artefact store. Provides: fingerprint_file (its path in the store), fingerprint_items.
Needs: the ``fpcalc`` program (Debian/Ubuntu: ``apt-get install libchromaprint-tools``; setup.sh installs it);
its version (with the FFmpeg resampler it links) is the stage's model id, so another fpcalc build recomputes.
Never rejects: an input too short for Chromaprint (about 3 s) gets an empty fingerprint and is simply never
matched; an fpcalc failure fails the row with its message. Matching is transforms/corpus/near_duplicates.py.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
from typing import Any

import numpy as np
import soundfile as sf

from songcorpus.schemas.row import Row, audio_file, audio_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.models.registry import ModelError

FPCALC_HELP = "install Chromaprint's fpcalc (Debian/Ubuntu: apt-get install libchromaprint-tools; setup.sh does this)"
ALGORITHM = 2  # Chromaprint's default (TEST2); the near-duplicate thresholds were measured with it
ITEM_S = 1365 / 11025  # one sub-fingerprint per 1365 samples at Chromaprint's 11025 Hz analysis rate


class FingerprintError(RuntimeError):
    """fpcalc is missing or failed; the message says what to do."""


@functools.cache
def fpcalc_version() -> str:
    """fpcalc's version line, e.g. ``1.5.1 (FFmpeg Lavc59.18.100 Lavf59.16.100 SwR4.3.100)``."""
    exe = shutil.which("fpcalc")
    if exe is None:
        raise FingerprintError(f"the fingerprint stage needs the fpcalc program, not found on PATH: {FPCALC_HELP}")
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
    line = (out.stdout or out.stderr).strip()
    if out.returncode != 0 or not line.startswith("fpcalc version "):
        raise FingerprintError(f"'{exe} -version' failed (exit {out.returncode}: {line[:200]}): {FPCALC_HELP}")
    return line.removeprefix("fpcalc version ")


def chromaprint(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Raw Chromaprint sub-fingerprints (uint32) of 16-bit PCM (frames, channels), via ``fpcalc -raw``.

    fpcalc 1.5.1 exits 3 (with the fingerprint printed) whenever the input is no longer than ``-length``,
    and 2 with "Empty fingerprint" when the input is shorter than one fingerprint item: both are results."""
    exe = shutil.which("fpcalc")
    if exe is None:
        raise FingerprintError(f"fpcalc not found on PATH: {FPCALC_HELP}")
    pcm = pcm.reshape(pcm.shape[0], -1)
    length = math.ceil(pcm.shape[0] / rate) + 1
    cmd = [exe, "-format", "s16le", "-rate", str(rate), "-channels", str(pcm.shape[1]), "-algorithm", str(ALGORITHM),
           "-length", str(length), "-raw", "-json", "-"]
    out = subprocess.run(cmd, input=pcm.astype("<i2").tobytes(), capture_output=True, timeout=600)
    stderr = out.stderr.decode(errors="replace")
    if out.returncode == 2 and "Empty fingerprint" in stderr:
        return np.zeros(0, np.uint32)
    if out.returncode not in (0, 3) or not out.stdout.strip():
        raise FingerprintError(f"fpcalc exited {out.returncode}: {stderr.strip()[-300:]}")
    values = json.loads(out.stdout)["fingerprint"]
    return np.asarray(values, dtype=np.int64).astype(np.uint32)


class FingerprintStage(Stage):
    name = "fingerprint"
    version = "1"
    requires = ("audio_file",)
    provides = ("fingerprint_file", "fingerprint_items")
    resources = Resources(num_cpus=1.0, memory_mb=1024)
    batch_size = 4

    def config_digest(self) -> str:
        return self.config.fingerprint.digest() + self.config.ingest.digest()

    def preflight(self) -> None:
        """A missing fpcalc fails before any input is read, naming the package that has it."""
        try:
            fpcalc_version()
        except FingerprintError as exc:
            raise ModelError(str(exc)) from exc

    def model_id(self) -> str:
        return f"chromaprint-fpcalc@{fpcalc_version()} algorithm {ALGORITHM}"

    def model_checksum(self) -> str | None:
        return None  # a program, not weights: its version line (with FFmpeg's) is in model_id and the cache key

    def input_identity(self, row: Row) -> str:
        return audio_sha256(row)

    def process_one(self, row: Row) -> dict[str, Any]:
        path = self.store.path(audio_file(row))
        limit = self.config.fingerprint.max_length_s
        with sf.SoundFile(str(path)) as fh:
            frames = fh.frames if limit is None else min(fh.frames, int(limit * fh.samplerate))
            pcm = fh.read(frames, dtype="int16", always_2d=True)
            rate = fh.samplerate
        fp = chromaprint(pcm, rate)
        return {"fingerprint_file": self.store.put_array(fp), "fingerprint_items": int(fp.shape[0])}
