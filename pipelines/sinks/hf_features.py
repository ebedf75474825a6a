"""``OUT/shards/features.json``: the corpus' declared Hugging Face ``datasets`` features, so HF never guesses.

HF's webdataset builder types every column from the first 5 samples of the first shard. A column that
is null or an empty list in all 5 (no beats in a quiet intro, no lyric words, no tempo) is typed
``null``, and the first later sample with a value fails the cast (datasets #7549; datasets 5.2 has no
fix). The sample JSON has one declared Arrow type per field (``schemas.sample``), so the corpus can say
the types instead: ``load_dataset("webdataset", ..., features=Features.from_dict(<this file>))`` infers
nothing and reads every sample, whatever the first five hold.

Reads: the JSON schema of the corpus' profile and one sample's member files (names, and each ``.npy``'s
dtype and rank from its header; nothing else is loaded). Writes: ``features.json`` (``Features.to_dict()``,
sorted keys, so the same corpus gives the same bytes) and ``features.<group>.json`` for each field group's tars
(a shard is a family of them: ``shard_writer.py``), or removes stale ones when there are no samples.
Fails when: two samples of the corpus have different members (HF needs one member set; the stages
write the same members for every sample, so this is a bug to report, not data to skip).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from songcorpus.io.atomic import atomic_write_bytes
from songcorpus.pipelines.sinks.shard_writer import Sample

if TYPE_CHECKING:
    import datasets

FEATURES_FILE = "features.json"
AUDIO_SUFFIXES = (".flac", ".wav")


def npy_arrow_type(path: Path) -> pa.DataType:
    """The Arrow type HF's npy decoder gives an array: nested lists of its dtype, one level per dimension."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    typ = pa.from_numpy_dtype(arr.dtype)
    for _ in range(arr.ndim):
        typ = pa.list_(typ)
    return typ


def corpus_features(json_schema: pa.Schema, sample: Sample) -> datasets.Features:
    """The features of a corpus whose samples all have ``sample``'s members: ``json`` as the declared struct,
    audio members as HF's ``Audio`` feature at their own rate (decoded by torchcodec, which the lock installs,
    on FFmpeg's libraries; ``Value("binary")`` instead with ``ds.cast_column`` if you want the FLAC bytes),
    ``.npy`` members as nested lists of their dtype, and HF's own ``__key__``/``__url__`` strings."""
    import datasets

    fields = [pa.field("json", pa.struct(list(json_schema)))]
    audio = []
    for suffix, value in sorted(sample.members.items()):
        if suffix == "json":
            continue
        if suffix.endswith(AUDIO_SUFFIXES):
            audio.append(suffix)
        elif suffix.endswith(".npy"):
            fields.append(pa.field(suffix, npy_arrow_type(Path(value))))
        else:
            raise ValueError(f"sample {sample.key}: no feature type for member {suffix!r}")
    features = datasets.Features.from_arrow_schema(pa.schema(
        [*fields, pa.field("__key__", pa.string()), pa.field("__url__", pa.string())]))
    for suffix in audio:  # decoded on access, at the file's own sample rate
        features[suffix] = datasets.Audio(sampling_rate=None)
    return datasets.Features({k: features[k] for k in sorted(features)})


def group_features_file(group: str) -> str:
    return f"features.{group}.json"


def write_features(shard_dir: Path, samples: Iterable[Sample], json_schema: pa.Schema) -> Path | None:
    """Write ``shard_dir/features.json`` for ``samples`` (every split: the whole sample, for readers that zip a
    shard family's files) and ``features.<group>.json`` per field group (the columns of that group's tars, what
    ``load_dataset`` of one group's files takes), or remove them when there are none."""
    from songcorpus.schemas.sample import FIELD_GROUPS, field_group

    path = shard_dir / FEATURES_FILE
    samples = list(samples)
    if not samples:
        path.unlink(missing_ok=True)
        for group in FIELD_GROUPS:
            (shard_dir / group_features_file(group)).unlink(missing_ok=True)
        return None
    first = min(samples, key=lambda s: s.key)
    for s in samples:
        if set(s.members) != set(first.members):
            raise ValueError(f"samples {first.key} and {s.key} have different members "
                             f"({sorted(set(first.members) ^ set(s.members))}): one corpus has one member set")
    features = corpus_features(json_schema, first)
    atomic_write_bytes(path, (json.dumps(features.to_dict(), indent=1, sort_keys=True) + "\n").encode())
    for group in FIELD_GROUPS:
        columns = {k: v for k, v in features.items() if k.startswith("__") or (k in first.members
                                                                               and field_group(k) == group)}
        target = shard_dir / group_features_file(group)
        if len(columns) > 2:
            atomic_write_bytes(target, (json.dumps(type(features)(columns).to_dict(), indent=1, sort_keys=True)
                                        + "\n").encode())
        else:
            target.unlink(missing_ok=True)
    return path
