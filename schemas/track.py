"""The track record every source yields: what one input is, before anything is decoded."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

METADATA_FIELDS = ("title", "artist", "caption", "tags", "lyrics", "language", "license", "split")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class TrackRecord:
    """One input as given. ``source`` is the path or URI exactly as the user named it (the catalog key);
    ``path`` is where the bytes are read from (the same file, or a cache copy for dataset-embedded audio)."""

    source: str
    path: str
    vocals: str | None = None
    accompaniment: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    scan_error: str | None = None  # set when the source itself is unusable (broken link, directory...)

    @property
    def track_id(self) -> str:
        return track_id_for(self.source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackRecord:
        return cls(**data)


def track_id_for(source: str) -> str:
    """Stable id from the source string: also the shard key stem (no dots, fixed width)."""
    return "t" + hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:20]
