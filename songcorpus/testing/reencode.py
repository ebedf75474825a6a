"""Copies of a song as a corpus meets them: lossy re-encodings (PyAV's bundled FFmpeg) and simple edits.

What the near-duplicate benchmark and tests are made of (bench/bench_near_duplicates.py,
tests/test_near_duplicates.py): each variant is one way a copy of the same recording reaches a corpus.
Reads: a float32 mono/stereo array and its rate. Writes: one file per variant (``write_variant``).
Needs: the encoders of the PyAV wheel (libmp3lame, libopus, FFmpeg's native aac); a missing one raises
``RuntimeError`` naming it. Deterministic for a given PyAV build (the encoders have no random state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


@dataclass(frozen=True)
class Encoding:
    """A lossy encoder as FFmpeg names it: codec, container format, file suffix, rate, bit rate."""

    codec: str
    container: str
    suffix: str
    rate: int | None  # None: keep the input rate (it must be one the encoder takes)
    bit_rate: int
    sample_format: str


MP3_128 = Encoding("libmp3lame", "mp3", ".mp3", None, 128_000, "fltp")
MP3_64 = Encoding("libmp3lame", "mp3", ".mp3", None, 64_000, "fltp")
OPUS = Encoding("libopus", "ogg", ".opus", 48_000, 96_000, "flt")  # Opus runs at 48 kHz only
AAC = Encoding("aac", "ipod", ".m4a", None, 128_000, "fltp")  # FFmpeg's native AAC in an MP4 (.m4a) file


def encode(x: np.ndarray, rate: int, enc: Encoding, path: Path) -> Path:
    """Encode ``x`` (frames[, channels], float in [-1, 1]) with ``enc`` into ``path``."""
    import av

    if enc.codec not in av.codecs_available:
        raise RuntimeError(f"the PyAV build has no {enc.codec} encoder (av.codecs_available)")
    y = x.reshape(x.shape[0], -1).astype(np.float32)
    out_rate = enc.rate or rate
    if out_rate != rate:
        y = soxr.resample(y, rate, out_rate, quality="VHQ").astype(np.float32)
    layout = "mono" if y.shape[1] == 1 else "stereo"
    with av.open(str(path), mode="w", format=enc.container) as container:
        stream = container.add_stream(enc.codec, rate=out_rate)
        stream.bit_rate = enc.bit_rate
        stream.layout = layout
        stream.format = enc.sample_format
        stream.time_base = Fraction(1, out_rate)
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, y.shape[0], frame_size):
            chunk = y[start:start + frame_size]
            data = chunk.T.copy() if enc.sample_format.endswith("p") else chunk.reshape(1, -1).copy()
            frame = av.AudioFrame.from_ndarray(data, format=enc.sample_format, layout=layout)
            frame.rate = out_rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def gain(x: np.ndarray, db: float) -> np.ndarray:
    return (x * 10 ** (db / 20)).astype(np.float32)


def lead_silence(x: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    pad = np.zeros((int(round(seconds * rate)), *x.shape[1:]), np.float32)
    return np.concatenate([pad, x]).astype(np.float32)


def excerpt(x: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """``seconds`` from the middle of the song; a song not much longer keeps its middle 70 % instead,
    so the excerpt is always a true part of it."""
    n = min(int(seconds * rate), int(0.7 * x.shape[0]))
    start = (x.shape[0] - n) // 2
    return x[start:start + n].copy()


# name -> (how the copy is made from (x, rate) into a file path). The benchmark's eight variants.
Variant = Callable[[np.ndarray, int, Path], Path]

VARIANTS: dict[str, Variant] = {
    "mp3_128k": lambda x, r, p: encode(x, r, MP3_128, p.with_suffix(".mp3")),
    "mp3_64k": lambda x, r, p: encode(x, r, MP3_64, p.with_suffix(".mp3")),
    "opus": lambda x, r, p: encode(x, r, OPUS, p.with_suffix(".opus")),
    "aac_m4a": lambda x, r, p: encode(x, r, AAC, p.with_suffix(".m4a")),
    "gain_-6db": lambda x, r, p: _flac(gain(x, -6.0), r, p),
    "lead_silence_1.3s": lambda x, r, p: _flac(lead_silence(x, r, 1.3), r, p),
    "excerpt_30s": lambda x, r, p: _flac(excerpt(x, r, 30.0), r, p),
    "resample_22050": lambda x, r, p: _flac(soxr.resample(x, r, 22050, quality="VHQ").astype(np.float32), 22050, p),
}


def _flac(x: np.ndarray, rate: int, path: Path) -> Path:
    path = path.with_suffix(".flac")
    sf.write(str(path), np.clip(x, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return path


def write_variant(name: str, x: np.ndarray, rate: int, stem: Path) -> Path:
    """Write variant ``name`` of ``x`` next to ``stem`` (its suffix is the variant's); returns the file."""
    return VARIANTS[name](x, rate, stem)
