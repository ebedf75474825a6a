"""Sources: folders, globs, manifests (CSV / JSONL / Parquet) and Hugging Face datasets -> TrackRecords.

Each may sit on a local disk or on an object store (``s3://``, ``gs://``: prefixes, globs, manifests whose paths
resolve against the manifest's URL, Hugging Face Parquet/Arrow folders read row by row by
``pipelines/hf_remote.py``); a URL input's files are named exactly as the same input's on a local disk.

Every source yields the same records, sorted by ``source`` so runs are deterministic. Inputs that
cannot even be opened (a broken symlink, a directory named like audio) still yield a record with a
``scan_error``, so they get a catalog row instead of disappearing.

``source`` (the catalog key) names a file relative to the input it was found under, never by where that
input sits on this machine: a folder's files by their path inside it, a manifest's rows by the path as the
manifest writes it, a glob's matches relative to the folder before its first wildcard, a single file by its
name. So the same corpus curated from another folder, another machine or another mount gives the same
catalog and shards. ``path`` is where the bytes are read from. With several inputs, each source is
prefixed by its input's name (``a/x.flac``, ``b/x.flac``); absolute paths and URLs written in a manifest
stay as written.
"""

from __future__ import annotations

import csv
import dataclasses
import glob as globlib
import hashlib
import itertools
import json
import os
import posixpath
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from songcorpus.pipelines import storage
from songcorpus.pipelines.disk_map import DiskMap
from songcorpus.schemas.track import METADATA_FIELDS, TrackRecord

# What FFmpeg or libsndfile decode; files with other suffixes are not audio candidates in a folder scan
# (name a file explicitly, or list it in a manifest, to force an attempt).
AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .mp3 .ogg .oga .opus .m4a .mp4 .aac .aif .aiff .aifc .caf .w64 .rf64 .wma .mka .webm "
    ".ape .wv .ac3 .eac3 .dts .amr .au .snd .voc .mp2 .mpc .tta .alac .3gp".split()
)
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
_HF_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


class SourceError(ValueError):
    """An input that cannot be read as a source at all (bad manifest, missing path)."""


def is_audio_candidate(name: str) -> bool:
    return Path(name).suffix.lower() in AUDIO_SUFFIXES


def relative_source(full: str, root: str) -> str:
    """``full`` named from ``root`` in POSIX form: the location-independent part of a path."""
    return Path(os.path.relpath(full, root)).as_posix()


def scan_directory(root: str, base: str | None = None) -> Iterator[TrackRecord]:
    """Recursively every audio candidate under ``root`` (symlinked files included, broken ones reported),
    each named relative to ``base`` (default ``root``)."""
    base = root if base is None else base
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for d in dirnames:
            if is_audio_candidate(d):
                full = os.path.join(dirpath, d)
                src = relative_source(full, base)
                yield TrackRecord(source=src, path=full, scan_error=f"is a directory, not an audio file: {src}")
        for f in sorted(filenames):
            if is_audio_candidate(f):
                full = os.path.join(dirpath, f)
                yield TrackRecord(source=relative_source(full, base), path=full)


def glob_base(pattern: str) -> str:
    """The folder before a pattern's first wildcard: what its matches are named relative to."""
    parts = Path(pattern).parts
    fixed = list(itertools.takewhile(lambda part: not any(ch in part for ch in "*?["), parts))
    return str(Path(*fixed)) if fixed else "."


def _clean_meta(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas-like readers
        return None
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return value


def _manifest_rows(path: Path | str) -> list[dict[str, Any]]:
    """A manifest's rows (CSV, JSON lines or Parquet by suffix), from a local path or an object-store URL: the
    bytes are read once, then parsed the same way wherever they came from."""
    import io

    name = str(path)
    suffix = Path(storage.basename(name) if storage.is_url(path) else name).suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise SourceError(f"manifest {name}: unsupported format (use {', '.join(MANIFEST_SUFFIXES)})")
    try:
        data = storage.read_bytes(name) if storage.is_url(path) else Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read manifest {name}: {exc}") from None
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    text = data.decode("utf-8")
    if suffix == ".csv":
        return [{k: (v if v != "" else None) for k, v in row.items()}
                for row in csv.DictReader(io.StringIO(text, newline=""))]
    rows = []
    for lineno, line in enumerate(io.StringIO(text, newline=None), 1):  # universal newlines, as open() reads
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SourceError(f"manifest {name}, line {lineno}: not JSON ({exc.msg})") from None
    return rows


def resolve_url(base: str, rel: str) -> str:
    """A manifest's relative path against its folder URL (``..`` resolved, as on a local disk)."""
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{posixpath.normpath(posixpath.join(rest, rel))}"


def read_manifest(path: str) -> Iterator[TrackRecord]:
    """Rows with a ``path`` column; optional ``vocals``/``accompaniment`` stems and metadata columns.
    Relative paths resolve against the manifest's folder (a URL's folder for a manifest on an object store);
    other columns are kept in ``extra``."""
    remote = storage.is_url(path)
    mpath = path if remote else Path(path)
    rows = _manifest_rows(mpath)
    base = storage.parent(path) if remote else mpath.parent
    for i, row in enumerate(rows):
        if not row.get("path"):
            raise SourceError(f"manifest {mpath}, row {i + 1}: missing required column 'path' "
                              f"(columns: {', '.join(sorted(row))})")

        def resolve(p: Any) -> str | None:
            if not p:
                return None
            p = str(p)
            if os.path.isabs(p) or "://" in p:
                return p
            return resolve_url(str(base), p) if remote else os.path.join(str(base), p)

        written = str(row["path"])
        name = written if (os.path.isabs(written) or "://" in written) else Path(os.path.normpath(written)).as_posix()
        meta = {k: _clean_meta(row.get(k)) for k in METADATA_FIELDS if _clean_meta(row.get(k)) is not None}
        extra = {k: v for k, v in row.items()
                 if k not in METADATA_FIELDS and k not in ("path", "vocals", "accompaniment") and v is not None}
        yield TrackRecord(source=name, path=resolve(written), vocals=resolve(row.get("vocals")),
                          accompaniment=resolve(row.get("accompaniment")), metadata=meta,
                          extra=json.loads(json.dumps(extra, default=str)))


def is_hf_dataset_dir(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in _HF_MARKERS)


def read_hf_dataset(path: str, materialise_dir: Path | str) -> Iterator[TrackRecord]:
    """A dataset saved with ``save_to_disk`` that has an Audio column; no network is touched.
    Embedded audio bytes are written once to ``materialise_dir`` (a folder, or a URL prefix in an object-store
    artefact store, so workers elsewhere read them) under their sha256."""
    import datasets

    loaded = datasets.load_from_disk(path)
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for split, ds in splits:
        audio_cols = [name for name, feat in ds.features.items() if isinstance(feat, datasets.Audio)]
        if not audio_cols:
            raise SourceError(f"dataset {path}{'/' + split if split else ''} has no Audio column "
                              f"(columns: {', '.join(ds.column_names)})")
        col = audio_cols[0]
        ds = ds.cast_column(col, datasets.Audio(decode=False))
        for i, row in enumerate(ds):
            audio = row[col] or {}
            source = f"hf:{Path(path).name}{'/' + split if split else ''}#{i}"
            meta = {k: _clean_meta(row.get(k)) for k in METADATA_FIELDS if _clean_meta(row.get(k)) is not None}
            if split and "split" not in meta and split in ("train", "valid", "test"):
                meta["split"] = split
            if audio.get("bytes"):
                data = audio["bytes"]
                suffix = Path(audio.get("path") or "audio.bin").suffix or ".bin"
                target = storage.join(materialise_dir, f"{hashlib.sha256(data).hexdigest()}{suffix}")
                if not storage.exists(target):
                    storage.write_bytes(target, data)
                local = str(target)
            elif audio.get("path"):
                local = audio["path"]
            else:
                yield TrackRecord(source=source, path="", metadata=meta, scan_error="dataset row has no audio")
                continue
            extra = {k: v for k, v in row.items() if k != col and k not in METADATA_FIELDS
                     and isinstance(v, (str, int, float, bool))}
            yield TrackRecord(source=source, path=local, metadata=meta, extra=extra)


def input_name(item: str) -> str:
    """What prefixes an input's sources when several inputs are given: its folder or file name."""
    if item.startswith("hf:"):
        item = item[3:]
    if storage.is_url(item):
        name = storage.basename(url_glob_base(item) if _has_wildcard(item) else item)
        return Path(name).stem if name.lower().endswith(MANIFEST_SUFFIXES) else name
    if any(ch in item for ch in "*?[") and not os.path.lexists(item):
        item = glob_base(item)
    name = Path(os.path.abspath(item)).name
    return Path(name).stem if name.lower().endswith(MANIFEST_SUFFIXES) else name


def _has_wildcard(item: str) -> bool:
    return any(ch in item for ch in "*?[")


def url_glob_base(pattern: str) -> str:
    """The URL prefix before a pattern's first wildcard (``s3://b/x/*/y.flac`` -> ``s3://b/x``)."""
    scheme, _, rest = pattern.partition("://")
    fixed = list(itertools.takewhile(lambda part: not _has_wildcard(part), rest.split("/")))
    return f"{scheme}://{'/'.join(fixed)}"


def read_url_input(item: str) -> Iterable[TrackRecord]:
    """An input on an object store: a manifest, a Hugging Face dataset (``hf:URL``, or a prefix holding a saved
    dataset or only Parquet/Arrow files, read by ``pipelines/hf_remote.py``), a glob, a prefix (every audio
    object under it, named relative to it) or one object. Named exactly as the same input on a local disk."""
    from songcorpus.pipelines import hf_remote

    if item.startswith("hf:"):
        return hf_remote.scan_dataset(item[3:])
    if _has_wildcard(item):
        matches = storage.glob(item)
        if not matches:
            raise SourceError(f"pattern {item!r} matches nothing")
        base = url_glob_base(item)
        return [TrackRecord(source=storage.relative_to(m, base), path=m) for m in matches]
    if item.lower().endswith(MANIFEST_SUFFIXES) and storage.exists(item) and not storage.isdir(item):
        return read_manifest(item)
    if storage.isdir(item):
        if hf_remote.looks_like_dataset(item):
            return hf_remote.scan_dataset(item)
        return [TrackRecord(source=storage.relative_to(f, item), path=f)
                for f in storage.list_files(item) if is_audio_candidate(f)]
    if storage.exists(item):
        return [TrackRecord(source=storage.basename(item), path=item)]
    raise SourceError(f"input {item!r} does not exist (give a prefix, a glob, an audio object, a manifest "
                      f"{'/'.join(MANIFEST_SUFFIXES)}, or a Hugging Face dataset folder)")


def read_input(item: str, materialise_dir: Path | str) -> Iterable[TrackRecord]:
    """The records of one input, each named relative to it (see the module docstring)."""
    if storage.is_url(item.removeprefix("hf:")):
        return read_url_input(item)
    if item.startswith("hf:"):
        return read_hf_dataset(item[3:], materialise_dir)
    if item.lower().endswith(MANIFEST_SUFFIXES) and os.path.isfile(item):
        return read_manifest(item)
    if is_hf_dataset_dir(item):
        return read_hf_dataset(item, materialise_dir)
    if os.path.isdir(item):
        return scan_directory(item)
    if any(ch in item for ch in "*?[") and not os.path.lexists(item):
        matches = sorted(globlib.glob(item, recursive=True))
        if not matches:
            raise SourceError(f"pattern {item!r} matches nothing")
        base = glob_base(item)
        return (rec for m in matches for rec in
                (scan_directory(m, base) if os.path.isdir(m) else [TrackRecord(source=relative_source(m, base), path=m)]))
    if os.path.lexists(item):
        return [TrackRecord(source=Path(item).name, path=item)]
    raise SourceError(f"input {item!r} does not exist (give a folder, a glob, an audio file, a manifest "
                      f"{'/'.join(MANIFEST_SUFFIXES)}, or a saved Hugging Face dataset folder)")


def expand_inputs(inputs: Iterable[str], materialise_dir: Path | str) -> list[TrackRecord]:
    """All records from every input, de-duplicated by source and sorted (deterministic order). With several
    inputs each source is prefixed by its input's name; two inputs of one name are refused (which is which
    would then depend on where they sit)."""
    records: dict[str, TrackRecord] = {}
    for rec in iter_input_records(inputs, materialise_dir):
        records.setdefault(rec.source, rec)
    return [records[k] for k in sorted(records)]


def spool_inputs(inputs: Iterable[str], materialise_dir: Path | str) -> DiskMap[TrackRecord]:
    """:func:`expand_inputs` for a corpus of any size: the records on local disk (``pipelines/disk_map.py``),
    source -> record, the first of a source kept, iterated in source order; the driver holds none of them."""
    records: DiskMap[TrackRecord] = DiskMap(encode=TrackRecord.to_dict, decode=TrackRecord.from_dict)
    for rec in iter_input_records(inputs, materialise_dir):
        if rec.source not in records:
            records[rec.source] = rec
    return records


def iter_input_records(inputs: Iterable[str], materialise_dir: Path | str) -> Iterator[TrackRecord]:
    """Every input's records as they are read, sources prefixed by their input's name when there are several
    (duplicates not yet removed: see :func:`expand_inputs`)."""
    inputs = list(inputs)
    prefixes = [""] * len(inputs)
    if len(inputs) > 1:
        names = [input_name(item) for item in inputs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise SourceError(f"inputs {', '.join(repr(i) for i, n in zip(inputs, names, strict=True) if n in clash)} "
                              f"share the name {clash[0]!r}, which names their files in the catalog: rename one, or "
                              f"list them all in one manifest")
        prefixes = [f"{n}/" for n in names]
    for item, prefix in zip(inputs, prefixes, strict=True):
        for rec in read_input(item, materialise_dir):
            named = rec.source.startswith("hf:") or "://" in rec.source or os.path.isabs(rec.source)
            if prefix and not named:  # a dataset's rows already carry its name; absolute paths and URLs stay
                rec = dataclasses.replace(rec, source=prefix + rec.source)
            yield rec
