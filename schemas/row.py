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


def canonical_json(obj: Any) -> str:
    """The one JSON encoding used for rows, cache entries and shard metadata (byte-stable)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


__all__ = ["Row", "canonical_json"]
