"""The track record every source yields: what one input is, before anything is decoded."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from songcorpus.schemas.row import Row, source_of, source_sha256

METADATA_FIELDS = ("title", "artist", "caption", "tags", "lyrics", "language", "license", "split")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class TrackRecord:
    """One input. ``source`` is its name relative to the input it came from (the catalog key; see
    pipelines/sources/inputs.py), so it does not change when the corpus moves; ``path`` is where the bytes are
    read from (the file on this machine, or a cache copy for dataset-embedded audio)."""

    source: str
    path: str
    vocals: str | None = None
    accompaniment: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    scan_error: str | None = None  # set when the source itself is unusable (broken link, directory...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackRecord:
        return cls(**data)


def track_id_for(source: str, source_sha256: str | None = None) -> str:
    """The track's id, also the stem of its sample keys and the seed of its augmentation draws (no dots,
    fixed width). It names the content: the sha256 of the input file's bytes, so the same song gets the same
    id, keys and augmentation wherever its file lives or however it is named (two inputs with the same bytes
    share it; one of them is rejected as a duplicate). Only an input whose bytes were never read (a broken
    link, a missing file) falls back to its source name."""
    basis = f"file:{source_sha256}" if source_sha256 else source
    return "t" + hashlib.sha256(basis.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def track_id_of(row: Row) -> str:
    """:func:`track_id_for` of an analysed row (its ingest result holds ``source_sha256``; state from before
    ingest version 3 has none and keeps the source-derived id)."""
    return track_id_for(source_of(row), source_sha256(row))


def clean_meta(value: Any) -> Any:
    """A metadata value as a track record holds it: NaN (from pandas-like readers) and None are absent, a list is
    one comma-separated string."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return value
