"""The shard sample spec: what every WebDataset sample holds (for this spec version).

A sample is a group of tar members sharing a key ``<track_id>_<window:04d>``; members are named
``<key>.<suffix>``. Consumers should read ``json`` first: it names the source, the window and the
split, carries the scores and lineage, and lists the other members.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_SPEC_VERSION = 1


@dataclass(frozen=True)
class FieldSpec:
    suffix: str
    dtype: str
    rate: str
    units: str
    description: str


SAMPLE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("json", "utf-8 JSON object", "per sample", "-",
              "spec_version, key, track_id, source, split, start_s, duration_s, sample_rate, channels, "
              "metadata (title, artist, caption, tags, lyrics, language, license), scores, lineage"),
    FieldSpec("mix.flac", "FLAC, 16-bit PCM", "config ingest.sample_rate (44.1 kHz in lite)", "full scale",
              "the standardised mix: decoded, downmixed, resampled"),
)

JSON_REQUIRED_KEYS = ("spec_version", "key", "track_id", "source", "split", "start_s", "duration_s",
                      "sample_rate", "channels", "scores", "lineage")


def window_key(track_id: str, window_index: int) -> str:
    return f"{track_id}_{window_index:04d}"
