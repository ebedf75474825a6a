"""Musical key and mode: the Krumhansl-Schmuckler key-finding algorithm on a constant-Q chroma profile.

Method: the track's pitch-class profile (the mean of librosa's ``chroma_cqt`` over its sounding frames)
is correlated (Pearson) with the 24 rotations of the Krumhansl-Kessler major and minor key profiles, and the
best-correlated key wins (Krumhansl & Kessler 1982, "Tracing the dynamic changes in perceived tonal
organization in a spatial representation of musical keys", Psychological Review 89(4); the key-finding
algorithm is Krumhansl & Schmuckler's, in Krumhansl 1990, "Cognitive Foundations of Musical Pitch", ch. 4).
``strength`` is that correlation (1 = the profile itself); ``margin`` is how far it leads the best other key
(small between relative keys such as C major / A minor, which share their pitch classes).

Why constant-Q chroma: its bins are spaced a semitone apart down to C1, so bass notes, which carry much of a
song's tonality, fall in one pitch class each; an STFT's linear bins (10.8 Hz at 2048 / 22.05 kHz) smear
every note below ~200 Hz across several. Tuning is estimated (``chroma_cqt``'s default), so a recording
tuned away from A440 still folds onto the right classes.

Reads: a mono float signal and its rate (:func:`estimate_key_from_audio`), or a 12-bin profile
(:func:`estimate_key`). Writes nothing. Needs librosa. Fails never: silence gives ``None``.
The stage that stores the key of every track (the accompaniment stem: chords and bass, not the melody,
define the key; the mix when the accompaniment is silent) is :class:`KeyStage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.config import KeyConfig
from songcorpus.schemas.row import Row, accompaniment_file, accompaniment_sha256, audio_file, audio_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.dsp.cqt_filter_cache import keep_cqt_filter_bases

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first (C major / C minor).
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MODES = ("major", "minor")
# Conventional spellings of each tonic (flats for the flat keys, sharps for the sharp ones).
TONIC_NAMES = {"major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
               "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")}
SOUNDING_BELOW_P95 = 1e-3  # frames with chroma energy 30 dB under the loud frames' are not counted
SILENT_STEM_RMS = 1e-3  # an accompaniment quieter than -60 dBFS RMS is no accompaniment: the mix is read instead
METHOD = "krumhansl-schmuckler(krumhansl-kessler-1982);chroma_cqt"


@dataclass(frozen=True)
class KeyEstimate:
    tonic: int  # pitch class, 0 = C
    mode: str  # "major" or "minor"
    strength: float  # Pearson correlation with the winning key profile
    margin: float  # strength minus the best other key's correlation

    @property
    def tonic_name(self) -> str:
        return TONIC_NAMES[self.mode][self.tonic]

    @property
    def name(self) -> str:
        return f"{self.tonic_name} {self.mode}"


def key_correlations(profile: np.ndarray) -> np.ndarray:
    """Pearson correlation of a 12-bin pitch-class profile with every key: shape (2, 12), [mode, tonic]."""
    profile = np.asarray(profile, dtype=np.float64)
    out = np.zeros((2, 12))
    for m, ref in enumerate((MAJOR_PROFILE, MINOR_PROFILE)):
        for tonic in range(12):
            out[m, tonic] = np.corrcoef(profile, np.roll(ref, tonic))[0, 1]
    return out


def estimate_key(profile: np.ndarray) -> KeyEstimate | None:
    """The best-correlated key of a pitch-class profile; None for a flat (or all-zero) profile."""
    profile = np.asarray(profile, dtype=np.float64)
    if profile.shape != (12,) or not np.all(np.isfinite(profile)) or np.ptp(profile) <= 1e-12:
        return None
    corr = key_correlations(profile)
    flat = corr.ravel()
    order = np.argsort(-flat, kind="stable")  # ties: major before minor, C before C#
    best, second = int(order[0]), int(order[1])
    mode, tonic = divmod(best, 12)
    return KeyEstimate(tonic=tonic, mode=MODES[mode], strength=round(float(flat[best]), 6),
                       margin=round(float(flat[best] - flat[second]), 6))


def chroma_profile(x: np.ndarray, rate: int, analysis_rate: int = 22050, hop_length: int = 2048) -> np.ndarray | None:
    """Mean constant-Q chroma (each frame scaled to its loudest class) over the sounding frames of mono
    ``x``; None when nothing sounds."""
    import librosa

    x = np.asarray(x, dtype=np.float32)
    if x.size == 0 or not np.any(x):
        return None
    y = soxr.resample(x, rate, analysis_rate) if rate != analysis_rate else x
    if y.size < hop_length:
        return None
    keep_cqt_filter_bases()
    chroma = librosa.feature.chroma_cqt(y=np.ascontiguousarray(y, np.float32), sr=analysis_rate,
                                        hop_length=hop_length, norm=None)
    energy = chroma.sum(axis=0)
    if not np.any(energy > 0):
        return None
    sounding = energy >= SOUNDING_BELOW_P95 * np.percentile(energy, 95)
    frames = chroma[:, sounding]
    frames = frames / np.maximum(frames.max(axis=0, keepdims=True), 1e-12)
    return frames.mean(axis=1)


def estimate_key_from_audio(x: np.ndarray, rate: int, analysis_rate: int = 22050,
                            hop_length: int = 2048) -> KeyEstimate | None:
    profile = chroma_profile(x, rate, analysis_rate, hop_length)
    return None if profile is None else estimate_key(profile)


def transpose_key(tonic: str, mode: str, semitones: int) -> str:
    """The tonic name ``semitones`` up (a pitch-shifted copy of a song is in the moved key)."""
    pc = TONIC_NAMES[mode].index(tonic)
    return TONIC_NAMES[mode][(pc + semitones) % 12]


def _evenly_spread(x: np.ndarray, rate: int, budget_s: float, chunk_s: float = 10.0) -> np.ndarray:
    """At most ``budget_s`` of ``x``: evenly spread ``chunk_s`` excerpts when it is longer."""
    budget, chunk = int(budget_s * rate), int(chunk_s * rate)
    if x.size <= budget or chunk >= x.size:
        return x
    starts = np.linspace(0, x.size - chunk, max(1, budget // chunk)).astype(np.int64)
    return np.concatenate([x[s : s + chunk] for s in starts])


class KeyStage(Stage):
    """Stores the key of every track: ``key`` (tonic name), ``mode``, ``key_strength`` (a score), ``key_margin``
    and ``key_method`` (which signal it was read from). Silent audio: all None. Reads the stems stage's
    accompaniment (given or separated) and, when it is silent, the mix."""

    name = "key"
    version = "1"
    requires = ("accompaniment_file", "audio_file")
    provides = ("key", "mode", "key_strength", "key_margin", "key_method")
    resources = Resources(num_cpus=1.0, memory_mb=1024)
    batch_size = 4

    @property
    def cfg(self) -> KeyConfig:
        return self.config.key

    def config_digest(self) -> str:
        return self.cfg.digest()

    def model_id(self) -> str:
        import importlib.metadata

        return f"librosa-{importlib.metadata.version('librosa')}"

    def input_identity(self, row: Row) -> str:
        return f"{audio_sha256(row)}:{accompaniment_sha256(row)}"

    def process_one(self, row: Row) -> dict[str, Any]:
        estimate, signal = None, None
        for signal in ("accompaniment", "mix"):
            rel = accompaniment_file(row) if signal == "accompaniment" else audio_file(row)
            x, rate = read_standard_audio(self.store.path(rel))
            mono = _evenly_spread(x.mean(axis=1), rate, self.cfg.max_analysis_s)
            if signal == "accompaniment" and np.sqrt(np.mean(np.square(mono, dtype=np.float64))) < SILENT_STEM_RMS:
                continue  # an a cappella song: its vocals carry the key
            estimate = estimate_key_from_audio(mono, rate, self.cfg.analysis_rate, self.cfg.hop_length)
            if estimate is not None:
                break
        if estimate is None:
            return {"key": None, "mode": None, "key_strength": None, "key_margin": None, "key_method": None}
        return {"key": estimate.tonic_name, "mode": estimate.mode, "key_strength": estimate.strength,
                "key_margin": estimate.margin, "key_method": f"{METHOD}:{signal}"}
