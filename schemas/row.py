"""The in-flight row every stage and engine carries, and the one JSON form it (and every cache entry and shard
metadata file) is written in.

A row is a plain dict so every engine can carry it: ``{"track": {...}, "results": {stage: {...}}, "outcome": ...}``
(``transforms/base.py`` says what each part holds). :func:`canonical_json` is byte-stable: sorted keys, no
whitespace, UTF-8 kept as it is, NaN refused, so equal rows give equal bytes and equal cache keys anywhere.
"""

from __future__ import annotations

import json
from typing import Any

Row = dict[str, Any]

# A stage requires ``track.<field>`` to read the input's own record (or its metadata), not an earlier stage's result.
TRACK_PREFIX = "track."

# What the driver puts on a row besides the track and the earlier stages' results, per phase: the samples phase
# gets the track's split, the corpus codebooks (store path + sha256), its scores and its fields' lineage.
ROW_INPUTS: dict[str, tuple[str, ...]] = {
    "analysis": (),
    "samples": ("split", "codebook", "unit_codebook", "scores", "lineage"),
}


def canonical_json(obj: Any) -> str:
    """The one JSON encoding used for rows, cache entries and shard metadata (byte-stable)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


__all__ = ["ROW_INPUTS", "TRACK_PREFIX", "Row", "canonical_json"]
