"""Train / valid / test splits by artist or track, one split per group of copies, stable under added songs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping

from songcorpus.io.disk_map import DiskMap
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, source_of, source_sha256, track_of
from songcorpus.schemas.track import SPLITS, track_id_for
from songcorpus.transforms.corpus.near_duplicates import NearDuplicates, components


def split_key(row: Row) -> str:
    """What one track's split hashes on by itself: the artist, else the input file's bytes."""
    track = track_of(row)
    song = source_sha256(row)
    return track["metadata"].get("artist") or (f"file:{song}" if song else track_id_for(track["source"]))


def split_groups(rows: Iterable[Row], near: NearDuplicates | None) -> DiskMap[str]:
    """Source -> the key its split hashes on: the smallest :func:`split_key` of its connected component of
    (copies of one recording, ``near``) joined with (songs of one artist), so no copy and no artist crosses
    splits, whether or not near duplicates are rejected. A track alone keeps its own key.

    Tracks of one key are one component already, so only the keys that copies join are merged (a union-find over
    the keys of ``near``'s groups: memory for the copies, not the corpus); two passes over ``rows``, the result on
    disk."""
    kept_of = near.kept_of if near else {}
    key_of_copy: dict[str, str] = {}
    if kept_of:
        for r in rows:
            if source_of(r) in kept_of:
                key_of_copy[source_of(r)] = split_key(r)
    edges = [(key_of_copy[s], key_of_copy[kept]) for s, kept in kept_of.items()
             if s in key_of_copy and kept in key_of_copy]
    merged = components(sorted({k for e in edges for k in e}), edges)  # key -> smallest key of its component
    return DiskMap((source_of(r), merged.get(k := split_key(r), k)) for r in rows)


def assign_split(row: Row, config: PipelineConfig, group: str | None = None) -> str:
    """The source's own split if it names one; else by hashing ``group`` (:func:`split_groups`: one key for
    all copies of a recording and all songs of an artist), by default the artist, or when it is unknown the
    input file's bytes (``ingest.source_sha256``), so every window of a song, and every song of an
    artist, lands in one split on every run, wherever the files are moved or however they are renamed."""
    track = track_of(row)
    given = track["metadata"].get("split")
    if given in SPLITS:
        return given
    group = group or split_key(row)
    h = int.from_bytes(hashlib.sha256(f"{config.splits.salt}\x1f{group}".encode()).digest()[:8], "big") / 2**64
    if h < config.splits.train:
        return "train"
    return "valid" if h < config.splits.train + config.splits.valid else "test"


def train_pool(accepted: Iterable[Row], splits: Mapping[str, str]) -> Iterator[Row]:
    """What corpus-level models are fit on: the train split's songs (all accepted songs when none is in train)."""
    in_train = any(splits[source_of(r)] == "train" for r in accepted)
    return (r for r in accepted if not in_train or splits[source_of(r)] == "train")
