"""The shard sample spec: what every WebDataset sample holds (for this spec version), and its checks.

A sample is a group of tar members sharing a key: ``<track_id>_<window:04d>`` for a window of the
song as it is, ``<track_id>_<window:04d>_<op>`` (``speed1.2``, ``pitch-2``...: no dots) for a window
of its augmented copy. Members are named ``<key>.<suffix>``. Consumers should read ``json`` first:
it names the source, the window and the split, carries the labels, scores and lineage, and lists the
other members. Every timing in a sample is relative to the window's start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_SPEC_VERSION = 2
F0_RATE_HZ = 100.0
STEMS = ("vocals", "accompaniment")


@dataclass(frozen=True)
class FieldSpec:
    suffix: str
    dtype: str
    rate: str
    units: str
    description: str


SAMPLE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("json", "utf-8 JSON object", "per sample", "-",
              "spec_version, key, track_id, source, split, start_s and duration_s of the window in the source track, "
              "sample_rate, channels, reference_key (a non-overlapping window of the same song), augmentation "
              "(null or its parameters), labels (vad_segments, beats, downbeats, sections, tempo_bpm: seconds from the "
              "window start), metadata (title, artist, caption, tags, lyrics, language, license), scores, lineage, "
              "fields (the members present)"),
    FieldSpec("mix.flac", "FLAC, 16-bit PCM", "ingest.sample_rate (44.1 kHz in lite)", "full scale",
              "the window of the standardised mix (vocals + accompaniment + the source's residual)"),
    FieldSpec("vocals.flac", "FLAC, 16-bit PCM", "ingest.sample_rate", "full scale", "the vocal stem, as long as the mix"),
    FieldSpec("accompaniment.flac", "FLAC, 16-bit PCM", "ingest.sample_rate", "full scale",
              "the accompaniment stem, as long as the mix (frequency-balance EQ applied when json.augmentation.eq says so)"),
    FieldSpec("f0.npy", "float32 (ceil(duration_s * 100),)", "100 Hz, frame i at i / 100 s", "Hz, 0 = unvoiced",
              "vocal f0 (16 kHz vocal stem, hop 160)"),
    FieldSpec("vocals.embedded_latents.npy", "float32 (frames, codec.n_mels)", "codec.latent_rate_hz (25 Hz default)",
              "log-mel", "the embedded codec's continuous latents of the vocal stem (not a VAE, not MuCodec)"),
    FieldSpec("accompaniment.embedded_latents.npy", "float32 (frames, codec.n_mels)", "codec.latent_rate_hz", "log-mel",
              "the embedded codec's continuous latents of the accompaniment"),
    FieldSpec("vocals.embedded_tokens.npy", "int32 (frames,)", "codec.token_rate_hz (25 Hz default)", "codebook ids",
              "the embedded codec's tokens of the vocal stem (k-means codebook fit on the corpus)"),
    FieldSpec("accompaniment.embedded_tokens.npy", "int32 (frames,)", "codec.token_rate_hz", "codebook ids",
              "the embedded codec's tokens of the accompaniment"),
)

JSON_REQUIRED_KEYS = ("spec_version", "key", "track_id", "source", "split", "start_s", "duration_s",
                      "sample_rate", "channels", "reference_key", "augmentation", "labels", "scores", "lineage", "fields")


def window_key(track_id: str, window_index: int, tag: str | None = None) -> str:
    base = f"{track_id}_{window_index:04d}"
    return f"{base}_{tag}" if tag else base


def frames_for(duration_s: float, rate: float) -> int:
    """The frame-count contract for every frame-rate field: ceil(duration * rate)."""
    return math.ceil(duration_s * rate - 1e-9)


class MisalignedSample(ValueError):
    """A sample whose fields disagree in time: it must fail its track, never enter a shard."""


def check_alignment(key: str, duration_s: float, sample_rate: int, audio: dict[str, np.ndarray],
                    f0: np.ndarray, latents: dict[str, np.ndarray], tokens: dict[str, np.ndarray],
                    latent_rate: float, token_rate: float, labels: dict[str, Any]) -> None:
    """The write-time contract: stems as long as the mix, f0 frames = ceil(duration x 100), token and
    latent frames = ceil(duration x rate), every label timestamp inside [0, duration]."""
    problems: list[str] = []
    n = round(duration_s * sample_rate)
    for name, x in audio.items():
        if x.shape[0] != n:
            problems.append(f"{name} has {x.shape[0]} samples, the window has {n}")
    if f0.shape != (frames_for(duration_s, F0_RATE_HZ),):
        problems.append(f"f0 has shape {f0.shape}, expected ({frames_for(duration_s, F0_RATE_HZ)},)")
    for name, z in latents.items():
        if z.shape[0] != frames_for(duration_s, latent_rate):
            problems.append(f"{name} latents have {z.shape[0]} frames, expected {frames_for(duration_s, latent_rate)}")
    for name, t in tokens.items():
        if t.shape != (frames_for(duration_s, token_rate),):
            problems.append(f"{name} tokens have shape {t.shape}, expected ({frames_for(duration_s, token_rate)},)")
    stamps = [v for seg in labels.get("vad_segments", []) for v in seg]
    stamps += list(labels.get("beats", [])) + list(labels.get("downbeats", []))
    stamps += [v for s, e, _ in labels.get("sections", []) for v in (s, e)]
    stamps += [v for s, e, _ in labels.get("lyrics_words", []) for v in (s, e)]
    outside = [t for t in stamps if not (-1e-6 <= t <= duration_s + 1e-6)]
    if outside:
        problems.append(f"{len(outside)} label timestamps outside [0, {duration_s}] s (first {outside[0]})")
    if problems:
        raise MisalignedSample(f"sample {key} is misaligned: " + "; ".join(problems))
