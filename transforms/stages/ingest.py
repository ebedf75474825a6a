"""IngestStage: decode any input, standardise it, hash it, measure it.

Reads: the input file named by ``track.path`` (a local path, or an object-store URL: then fetched once into a
local temporary file, which is hashed and decoded, so the URL is read once whether or not the cache hits).
Writes: the standardised audio (16-bit FLAC at ``ingest.sample_rate``, ``ingest.channels``) into the
artefact store under its sha256, and the fields below (with ``keep_file`` off, as the stems stage reads a given
stem, no file: the samples come back as ``pcm`` instead of ``audio_file``).
Provides: audio_sha256, audio_file, n_frames, duration_s, source_sample_rate, source_channels,
source_format, loudness_lufs (ITU-R BS.1770 via pyloudnorm; -70 LUFS, the standard's absolute gate, when
every block is below it, so the ``too_quiet`` gate sees near-silence), clipping_ratio and nonfinite_ratio
(measured on the source samples, before any processing), and source_sha256 (the input file's bytes:
the song's identity wherever the file lives, which the corpus splits on when no artist is known).
Fails when: the file is missing, unreadable or not audio (failed); it is empty, truncated, or longer
than ``ingest.max_duration_s`` (rejected, with the limit named). Decoding streams in blocks, so memory
is bounded by the duration limit, never by the file.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import soundfile as sf
import soxr

from songcorpus.io.atomic import sha256_file, write_file
from songcorpus.io.audio import AudioStream, DecodeError, downmix, to_int16
from songcorpus.io.hf_remote import is_row_ref
from songcorpus.io.storage import is_url
from songcorpus.schemas.failures import is_machine_error
from songcorpus.schemas.row import Row, track_of
from songcorpus.transforms.base import Rejection, Resources, Stage


class IngestStage(Stage):
    name = "ingest"
    version = "4"  # 2: int16 <-> float scaled by 32768 (lossless round trip of 16-bit sources); 3: source_sha256;
    # 4: loudness_lufs is LOUDNESS_FLOOR_LUFS, not None, for audio whose every block is below the absolute gate
    requires = ("track.path",)
    provides = ("audio_sha256", "audio_file", "n_frames", "duration_s", "source_sample_rate",
                "source_channels", "source_format", "loudness_lufs", "clipping_ratio", "nonfinite_ratio",
                "source_sha256")
    resources = Resources(num_cpus=1.0, memory_mb=1536)
    batch_size = 4
    measure_loudness = True  # False where only the standardised audio is wanted (the stems stage's given stems)
    keep_file = True  # False: no FLAC is written, the result carries the samples as ``pcm`` (given stems, kept mono)

    def config_digest(self) -> str:
        return self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        track = track_of(row)
        if track.get("scan_error"):
            raise DecodeError(track["scan_error"], "not_a_file")
        if is_url(track["path"]) or is_row_ref(track["path"]):
            return self._fetched_input(track["path"])[1]
        path = Path(track["path"])
        if path.is_dir():
            raise DecodeError(f"is a directory, not an audio file: {path}", "not_a_file")
        if not path.exists():
            if path.is_symlink():
                target = os.fsencode(os.readlink(path)).decode("utf-8", "backslashreplace")  # any bytes, as text
                raise DecodeError(f"broken symlink: {path} -> {target}", "missing")
            raise DecodeError(f"file not found: {path}", "missing")
        try:
            digest, size = sha256_file(path)
        except OSError as exc:  # reading the input itself (EACCES, EIO on its sectors...): this input's row
            raise DecodeError(f"unreadable: {exc.strerror or exc} ({path})", "unreadable") from None
        if size == 0:
            raise DecodeError(f"empty file (0 bytes): {path}", "empty")
        self._last_identity = (str(path), digest)  # process_one's source_sha256, without a second read
        return digest

    def source_sha256(self, path: Path) -> str:
        """The input file's sha256: the one ``input_identity`` just computed for it, else read now."""
        last = getattr(self, "_last_identity", None)
        return last[1] if last is not None and last[0] == str(path) else sha256_file(path)[0]

    def _fetched_input(self, url: str) -> tuple[Path, str]:
        """A local copy of the input at ``url`` and its sha256; the last one is kept for ``process_one`` (and
        removed when the next input is fetched)."""
        last = getattr(self, "_fetched", None)
        if last is not None and last[0] == url:
            return last[1], last[2]
        if last is not None:
            last[1].unlink(missing_ok=True)
            self._fetched = None
        from songcorpus.io.hf_remote import read_row_audio
        from songcorpus.io.storage import basename, download

        suffix = ".bin" if is_row_ref(url) else Path(basename(url)).suffix  # decoders probe content, not names
        fd, name = tempfile.mkstemp(prefix="songcorpus-input-", suffix=suffix)
        os.close(fd)
        local = Path(name)
        if not getattr(self, "_cleanup_registered", False):  # the last copy goes when the process ends
            atexit.register(lambda: self._fetched and self._fetched[1].unlink(missing_ok=True))
            self._cleanup_registered = True
        try:
            if is_row_ref(url):  # one row of a Hugging Face dataset's Parquet/Arrow files (songcorpus/io/hf_remote.py)
                local.write_bytes(read_row_audio(url)[0])
            else:
                download(url, local)
        except FileNotFoundError:
            local.unlink(missing_ok=True)
            raise DecodeError(f"file not found: {url}", "missing") from None
        except OSError as exc:
            local.unlink(missing_ok=True)
            if is_machine_error(exc):  # a full temp disk, a dropped connection: the job stops
                raise
            raise DecodeError(f"unreadable: {exc.strerror or exc} ({url})", "unreadable") from None
        digest, size = sha256_file(local)
        if size == 0:
            local.unlink(missing_ok=True)
            raise DecodeError(f"empty file (0 bytes): {url}", "empty")
        self._fetched = (url, local, digest)
        return local, digest

    def process_one(self, row: Row) -> dict[str, Any]:
        src = track_of(row)["path"]
        if not (is_url(src) or is_row_ref(src)):
            return self._process_file(Path(src))
        local, digest = self._fetched_input(src)
        try:
            return {**self._process_file(local), "source_sha256": digest}
        except DecodeError as exc:  # name the input by its URL, never by the temporary copy
            raise DecodeError(str(exc).replace(str(local), src), exc.code) from None
        except Rejection as exc:
            raise Rejection(exc.code, exc.reason.replace(str(local), src)) from None

    def _process_file(self, path: Path) -> dict[str, Any]:
        cfg = self.config.ingest
        with AudioStream(path, cfg.block_frames) as stream:
            info = stream.info
            limit = cfg.max_duration_s
            declared = info.declared_duration_s
            if declared is not None and declared > limit:
                raise Rejection("too_long", f"declared duration {declared:.1f} s exceeds ingest.max_duration_s={limit:g}"
                                " (raise the limit to keep it; it is refused before decoding)")
            out = self._standardise(stream, limit)
        return {**out, "source_sha256": self.source_sha256(path)}

    def _standardise(self, stream: AudioStream, limit: float) -> dict[str, Any]:
        cfg = self.config.ingest
        info = stream.info
        resampler = None
        if info.sample_rate != cfg.sample_rate:
            resampler = soxr.ResampleStream(info.sample_rate, cfg.sample_rate, cfg.channels,
                                            dtype="float32", quality=cfg.resample_quality)
        hasher = hashlib.sha256()
        pcm_blocks: list[np.ndarray] = []
        n_source = n_nonfinite = n_clipped = 0
        max_source_frames = int(limit * info.sample_rate) + 1
        # FLAC encoded in memory and written as bytes: libsndfile says "System error." for a full disk, a Python
        # write says ENOSPC and the path, which stops the job (schemas/failures.py); same bytes either way.
        flac = io.BytesIO()
        tmp = self.store.new_temp(".flac") if self.keep_file else None
        try:
            with (sf.SoundFile(flac, "w", samplerate=cfg.sample_rate, channels=cfg.channels, format="FLAC",
                               subtype="PCM_16") if self.keep_file else contextlib.nullcontext()) as out:

                def emit(y: np.ndarray) -> None:
                    if y.size:
                        pcm = to_int16(y)
                        hasher.update(pcm.astype("<i2").tobytes())
                        if out is not None:
                            out.write(pcm)
                        pcm_blocks.append(pcm)

                for block in stream.blocks():
                    n_source += block.shape[0]
                    if n_source > max_source_frames:
                        raise Rejection("too_long", f"duration exceeds ingest.max_duration_s={limit:g} while "
                                        "streaming (the header did not declare it); raise the limit to keep it")
                    finite = np.isfinite(block)
                    if not finite.all():
                        n_nonfinite += int((~finite).sum())
                        block = np.where(finite, block, 0.0).astype(np.float32)
                    n_clipped += int((np.abs(block) >= cfg.clip_level).sum())
                    y = downmix(block, cfg.channels)
                    if resampler is not None:
                        y = resampler.resample_chunk(y, last=False)
                    emit(y)
                if resampler is not None:
                    emit(resampler.resample_chunk(np.zeros((0, cfg.channels), np.float32), last=True))
            if n_source == 0:
                raise Rejection("empty", "no audio frames decoded (empty stream)")
            declared = wav_declared_frames(stream.path) if info.format.startswith("WAV") else info.frames
            if declared is not None and n_source < declared:
                raise Rejection("truncated", f"header declares {declared} frames, only {n_source} are in the file")
            pcm = np.concatenate(pcm_blocks) if pcm_blocks else np.zeros((0, cfg.channels), np.int16)
            sha = hasher.hexdigest()
            if tmp is not None:
                final = self.store.audio_path(sha)
                write_file(tmp, flac.getbuffer())
                self.store.commit_temp(tmp, str(final.relative_to(self.store.root)))
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        n_samples = n_source * info.channels
        kept = {"audio_file": str(final.relative_to(self.store.root))} if tmp is not None else {"pcm": pcm}
        return {
            "audio_sha256": sha,
            **kept,
            "n_frames": int(pcm.shape[0]),
            "duration_s": round(pcm.shape[0] / cfg.sample_rate, 6),
            "source_sample_rate": info.sample_rate,
            "source_channels": info.channels,
            "source_format": info.format,
            "loudness_lufs": integrated_loudness(pcm, cfg.sample_rate) if self.measure_loudness else None,
            "clipping_ratio": n_clipped / n_samples,
            "nonfinite_ratio": n_nonfinite / n_samples,
        }


def wav_declared_frames(path: Path) -> int | None:
    """Frames a PCM WAV header declares. libsndfile trusts the file size over the header, so a cut-off
    WAV would otherwise pass as a shorter song; the stdlib parser reads the header's own claim."""
    import wave

    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes()
    except (wave.Error, EOFError, OSError):
        return None  # float or extensible WAVs: nothing the stdlib can check


LOUDNESS_FLOOR_LUFS = -70.0  # BS.1770's absolute gate: blocks quieter than this are not counted


def integrated_loudness(pcm: np.ndarray, rate: int) -> float | None:
    """BS.1770 integrated loudness in LUFS; None when shorter than one 400 ms block.

    When every block is below the absolute gate the standard's mean is over no blocks (pyloudnorm says -inf);
    that audio is then quieter than -70 LUFS, so -70 is stored: the tightest bound the measure gives, below
    any loudness it can define. A None would read "not applicable", and a missing score passes every gate,
    so a near-silent file would slip past the ``too_quiet`` gate to a classifier guessing on silence."""
    if pcm.shape[0] < int(0.4 * rate) + 1:
        return None
    value = pyloudnorm.Meter(rate).integrated_loudness(pcm.astype(np.float64) / 32768.0)
    return round(float(value), 4) if np.isfinite(value) else LOUDNESS_FLOOR_LUFS
