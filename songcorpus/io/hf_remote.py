"""Hugging Face datasets as Parquet or Arrow files at a URL (``s3://bucket/ds/``), read without pulling the audio
through the driver.

Reads: every ``*.parquet`` and ``*.arrow`` file under the prefix (the Hub's ``data/train-00000-of-00001.parquet``
layout, or what ``save_to_disk`` writes: Arrow IPC streams, split folders of a ``DatasetDict``), sorted. The audio
column is the one HF's schema metadata declares ``Audio`` (else the first ``{bytes, path}`` struct).

The driver (:func:`scan_dataset`) reads each file's schema and its small columns only. For Parquet that is column
pruning: the audio column's bytes never leave the store. For an Arrow IPC stream, whose batches hold every column,
it reads one record batch at a time and notes each batch's byte range. Each row becomes a TrackRecord whose
``path`` is a row reference, ``hfrow:<file url>#pq:<row group>:<row>:<column>`` or
``hfrow:<file url>#ipc:<schema end>:<batch start>:<batch end>:<row>:<column>``; the worker that ingests the row
(:func:`read_row_audio`) reads just that row group's audio column (Parquet; the last one is kept per process, so
consecutive rows of a group cost one read) or that one batch by a ranged read (Arrow).

Sources are named ``hf:<dataset folder name>[/<split>]#<row index within the split>``, as for a dataset saved on
local disk. Row references and stored columns name URLs without credentials (``storage.redact_url``); reads go
through ``songcorpus/io/storage.py``, which uses the URL as it was given. The split comes from a split folder
(``train/``) or a Hub file name (``train-00000-of-...``).
Fails: a folder with no data files, or a data file without an audio column, is a SourceError naming it.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from songcorpus.io import storage
from songcorpus.schemas.failures import SourceError
from songcorpus.schemas.track import METADATA_FIELDS, TrackRecord, clean_meta

ROW_PREFIX = "hfrow:"
DATA_SUFFIXES = (".parquet", ".arrow")
MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "test": "test"}


def is_row_ref(path: str) -> bool:
    return str(path).startswith(ROW_PREFIX)


def data_files(url: str) -> list[str]:
    return [f for f in storage.list_files(url) if f.lower().endswith(DATA_SUFFIXES)]


def looks_like_dataset(url: str) -> bool:
    """A URL prefix holding a saved dataset's marker files, or only HF data files."""
    files = storage.list_files(url)
    names = {posixpath.basename(f) for f in files}
    return bool(names & set(MARKERS)) or (bool(files) and any(f.lower().endswith(DATA_SUFFIXES) for f in files)
                                          and not any(f.lower().endswith(_AUDIO_HINT) for f in files))


_AUDIO_HINT = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")


def audio_column(schema: pa.Schema) -> str | None:
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        features = (json.loads(meta).get("info") or {}).get("features") or {}
        for name, feat in features.items():
            if isinstance(feat, dict) and feat.get("_type") == "Audio":
                return name
    for f in schema:
        if pa.types.is_struct(f.type) and {"bytes", "path"} <= {c.name for c in f.type}:
            return f.name
    return None


def split_of(file_url: str, root: str) -> str | None:
    rel = storage.relative_to(file_url, root)
    for part in rel.split("/")[:-1]:
        if part in SPLIT_NAMES:
            return part
    m = re.match(r"([a-z]+)-\d+-of-\d+", posixpath.basename(rel))
    return m.group(1) if m and m.group(1) in SPLIT_NAMES else None


def _small_columns(schema: pa.Schema, col: str) -> list[str]:
    return [f.name for f in schema if f.name != col]


def _parquet_rows(url: str) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(row reference, small columns, audio path) of every row of a Parquet file; reads no audio bytes."""
    import pyarrow.parquet as pq

    with storage.open_read(url, exact=True) as fh:
        pf = pq.ParquetFile(fh)
        schema = pf.schema_arrow
        col = audio_column(schema)
        if col is None:
            raise _no_audio(url, schema)
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g, columns=[*_small_columns(schema, col), f"{col}.path"])
            paths = table.column(table.num_columns - 1).to_pylist()
            rows = table.select(range(table.num_columns - 1)).to_pylist()
            for i, (row, path) in enumerate(zip(rows, paths, strict=True)):
                yield f"{ROW_PREFIX}{url}#pq:{g}:{i}:{col}", row, path


def _arrow_rows(url: str) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """The same for an Arrow IPC stream (``save_to_disk``): one record batch in memory at a time."""
    with storage.open_read(url) as fh:
        reader = pa.ipc.open_stream(fh)
        schema_end = fh.tell()
        col = audio_column(reader.schema)
        if col is None:
            raise _no_audio(url, reader.schema)
        start = schema_end
        for batch in reader:
            end = fh.tell()
            audio = batch.column(batch.schema.get_field_index(col))
            paths = audio.field("path").to_pylist()
            rows = batch.select(_small_columns(reader.schema, col)).to_pylist()
            for i, (row, path) in enumerate(zip(rows, paths, strict=True)):
                yield f"{ROW_PREFIX}{url}#ipc:{schema_end}:{start}:{end}:{i}:{col}", row, path
            start = end


def _no_audio(url: str, schema: pa.Schema) -> Exception:
    return SourceError(f"dataset file {url} has no Audio column (columns: {', '.join(schema.names)})")


def scan_dataset(url: str) -> Iterator[Any]:
    """TrackRecords of every row of the dataset at ``url`` (see the module docstring)."""
    files = data_files(url)
    if not files:
        raise SourceError(f"dataset {url} holds no .parquet or .arrow files")
    name = storage.basename(url)
    counters: dict[str | None, int] = {}
    for file_url in files:
        split = split_of(file_url, url)
        rows = _parquet_rows(file_url) if file_url.lower().endswith(".parquet") else _arrow_rows(file_url)
        for ref, row, audio_path in rows:
            i = counters.get(split, 0)
            counters[split] = i + 1
            source = f"hf:{name}{'/' + split if split else ''}#{i}"
            meta = {k: clean_meta(row.get(k)) for k in METADATA_FIELDS if clean_meta(row.get(k)) is not None}
            if split and "split" not in meta:
                meta["split"] = SPLIT_NAMES[split]
            extra = {k: v for k, v in row.items() if k not in METADATA_FIELDS and isinstance(v, (str, int, float, bool))}
            if audio_path:
                extra.setdefault("audio_path", audio_path)
            extra = storage.redact_values(extra)  # a row's own URLs are stored without their credentials too
            yield TrackRecord(source=source, path=ref, metadata=meta, extra=extra)


_LAST_GROUP: dict[str, Any] = {}


def read_row_audio(ref: str) -> tuple[bytes, str]:
    """(audio file bytes, file suffix) of one row reference; reads only what holds that row's audio."""
    file_url, _, spec = ref[len(ROW_PREFIX):].rpartition("#")
    kind, *fields = spec.split(":")
    col = ":".join(fields[-1:])
    if kind == "pq":
        import pyarrow.parquet as pq

        group, row = int(fields[0]), int(fields[1])
        key = f"{file_url}#{group}:{col}"
        if _LAST_GROUP.get("key") != key:
            with storage.open_read(file_url, exact=True) as fh:
                values = pq.ParquetFile(fh).read_row_group(group, columns=[col]).column(0).to_pylist()
            _LAST_GROUP.clear()
            _LAST_GROUP.update(key=key, values=values)
        value = _LAST_GROUP["values"][row]
    elif kind == "ipc":
        schema_end, start, end, row = (int(x) for x in fields[:4])
        schema = pa.ipc.open_stream(pa.BufferReader(storage.read_range(file_url, 0, schema_end))).schema
        batch = pa.ipc.read_record_batch(pa.ipc.read_message(pa.py_buffer(storage.read_range(file_url, start,
                                                                                               end - start))), schema)
        value = batch.column(schema.get_field_index(col))[row].as_py()
    else:
        raise ValueError(f"not a dataset row reference: {ref}")
    value = value or {}
    suffix = posixpath.splitext(value.get("path") or "")[1] or ".bin"
    if value.get("bytes"):
        return value["bytes"], suffix
    if value.get("path"):
        target = value["path"] if "://" in value["path"] else storage.join(storage.parent(file_url), value["path"])
        return storage.read_bytes(target), suffix
    raise FileNotFoundError("dataset row has no audio (neither bytes nor path)")
