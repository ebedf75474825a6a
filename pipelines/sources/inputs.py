"""Sources: folders, globs, manifests (CSV / JSONL / Parquet) and Hugging Face datasets -> TrackRecords.

Each may sit on a local disk or on an object store (``s3://``, ``gs://``: prefixes, globs, manifests whose paths
resolve against the manifest's URL, Hugging Face Parquet/Arrow folders read row by row by
``songcorpus/io/hf_remote.py``); a URL input's files are named exactly as the same input's on a local disk.

Every source yields the same records, sorted by ``source`` so runs are deterministic. Inputs that
cannot even be opened (a broken symlink, a directory named like audio) still yield a record with a
``scan_error``, so they get a catalog row instead of disappearing.

``source`` (the catalog key) names a file relative to the input it was found under, never by where that
input sits on this machine: a folder's files by their path inside it, a manifest's rows by the path as the
manifest writes it, a glob's matches relative to the folder before its first wildcard, a single file by its
name. So the same corpus curated from another folder, another machine or another mount gives the same
catalog and shards. ``path`` is where the bytes are read from. With several inputs, each source is
prefixed by its input's name (``a/x.flac``, ``b/x.flac``); absolute paths and URLs written in a manifest
stay as written, less any credential (``user:password@``, a presigned query: ``storage.redact_url``), which is
kept in memory only, for reading.

What is never scanned: the corpus being written and its cache (``exclude``: a corpus inside its own input folder
would otherwise take its cached audio for new songs on a re-run), nor any folder or prefix holding another
corpus's publication marker. Names that are not valid UTF-8 (a file name's undecodable bytes) get a reversible
escape, :func:`printable_name`, and are read through a link with a valid name (:func:`readable_path`).
"""

from __future__ import annotations

import atexit
import csv
import dataclasses
import glob as globlib
import hashlib
import itertools
import json
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from songcorpus.io import storage
from songcorpus.io.disk_map import DiskMap
from songcorpus.schemas.failures import SourceError
from songcorpus.schemas.track import METADATA_FIELDS, TrackRecord, clean_meta

# What FFmpeg or libsndfile decode; files with other suffixes are not audio candidates in a folder scan
# (name a file explicitly, or list it in a manifest, to force an attempt).
AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .mp3 .ogg .oga .opus .m4a .mp4 .aac .aif .aiff .aifc .caf .w64 .rf64 .wma .mka .webm "
    ".ape .wv .ac3 .eac3 .dts .amr .au .snd .voc .mp2 .mpc .tta .alac .3gp".split()
)
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
_HF_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


# -- names that are not valid UTF-8 ----------------------------------------------------------------------------
# The OS hands Python a file name's undecodable bytes as surrogate escapes, which no catalog, JSON or SQLite text
# can hold. A source is written with each such byte as \xNN (its hex value, as Python's backslashreplace writes
# it), and a backslash that would read as such an escape as \x5c: reversible (name_bytes), and names that are
# valid UTF-8 without such a backslash are unchanged.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_TO_ESCAPE = re.compile("[\udc80-\udcff]|\\\\(?=x[0-9a-fA-F]{2})")
_ESCAPED = re.compile(r"\\x([0-9a-fA-F]{2})")
_ALIAS_DIRS: dict[str, str] = {}


def printable_name(name: str) -> str:
    """``name`` as valid text, reversibly (the comment above; :func:`name_bytes` is the inverse)."""
    return _TO_ESCAPE.sub(lambda m: "\\x5c" if m.group() == "\\" else f"\\x{ord(m.group()) - 0xDC00:02x}", name)


def name_bytes(printable: str) -> bytes:
    """The bytes of the name :func:`printable_name` wrote as ``printable`` (each \\xNN is the byte NN)."""
    out, pos = bytearray(), 0
    for m in _ESCAPED.finditer(printable):
        out += printable[pos:m.start()].encode()
        out.append(int(m.group(1), 16))
        pos = m.end()
    return bytes(out + printable[pos:].encode())


def readable_path(full: str, materialise_dir: Path | str) -> str:
    """A path that reads the file ``full`` and is valid text: ``full`` itself, or for a path with undecodable bytes
    a symbolic link to it under ``materialise_dir``/names (a private temporary folder when that is on an object
    store), named by the sha256 of the path's bytes."""
    if not _UNDECODABLE.search(full):
        return full
    if storage.is_url(materialise_dir):
        if "tmp" not in _ALIAS_DIRS:
            _ALIAS_DIRS["tmp"] = tempfile.mkdtemp(prefix="songcorpus-names-")
            atexit.register(shutil.rmtree, _ALIAS_DIRS["tmp"], ignore_errors=True)
        folder = _ALIAS_DIRS["tmp"]
    else:
        folder = os.path.join(str(materialise_dir), "names")
    os.makedirs(folder, exist_ok=True)
    target = os.path.abspath(full)
    suffix = Path(full).suffix
    link = os.path.join(folder, hashlib.sha256(os.fsencode(target)).hexdigest()[:32]
                        + ("" if _UNDECODABLE.search(suffix) else suffix))
    if not (os.path.islink(link) and os.readlink(link) == target):
        tmp = f"{link}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return link


def _printable_record(rec: TrackRecord, materialise_dir: Path | str) -> TrackRecord:
    """``rec`` with every name valid text: the source escaped, a path with undecodable bytes read through a link
    (or, when it is no regular file to read, named by its escape with the reason)."""
    if not (_UNDECODABLE.search(rec.source) or _UNDECODABLE.search(rec.path or "")
            or _UNDECODABLE.search(rec.scan_error or "")):
        return rec
    source, path, error = printable_name(rec.source), rec.path, rec.scan_error
    if error is not None or not os.path.isfile(path):
        if error is None:
            kind = "broken symbolic link" if os.path.islink(path) else "not a regular file"
            error = f"{kind}: {source}"
        return dataclasses.replace(rec, source=source, path=printable_name(path), scan_error=printable_name(error))
    return dataclasses.replace(rec, source=source, path=readable_path(path, materialise_dir))


# -- what no scan enters ------------------------------------------------------------------------------------


class Excluded:
    """The folders and prefixes no input scan enters (the module docstring): local ones by their absolute path and
    by their folder's resolved path (looked up once per folder), URL ones by their credential-free prefix."""

    def __init__(self, roots: Iterable[str | Path | None] = ()) -> None:
        self.local: set[str] = set()
        self.urls: set[str] = set()
        for root in roots:
            if root is None or str(root) == "":
                continue
            if storage.is_url(root):
                self.urls.add(storage.redact_url(root).rstrip("/"))
            else:
                local = str(root).removeprefix("file://")
                self.local |= {os.path.abspath(local), os.path.realpath(local)}
        self._real: dict[str, str] = {}  # folder -> its resolved path

    def __bool__(self) -> bool:
        return bool(self.local or self.urls)

    def _under(self, path: str, roots: set[str], sep: str) -> bool:
        return any(path == r or path.startswith(r.rstrip(sep) + sep) for r in roots)

    def covers(self, path: str | Path) -> bool:
        """Whether ``path`` (a file or folder, local or a URL) is one of the roots or inside one."""
        if storage.is_url(path):
            return self._under(storage.redact_url(path), self.urls, "/")
        if not self.local:
            return False
        full = os.path.abspath(str(path))
        if self._under(full, self.local, os.sep):
            return True
        folder, name = os.path.split(full)
        if folder not in self._real:
            self._real[folder] = os.path.realpath(folder)
        return self._under(os.path.join(self._real[folder], name), self.local, os.sep)

    def check_input(self, item: str, root: str) -> None:
        """Refuse an input that lies inside the output or the cache: those are what a curate writes."""
        if self.covers(root):
            raise SourceError(f"input {_shown(item)!r} lies inside the output or cache folder of this curate: move it "
                              f"out, or give another --out / --cache-dir")


def _shown(item: str) -> str:
    return printable_name(storage.redact_url(item))


def holds_corpus(folder: str) -> bool:
    """A folder or prefix holding a songcorpus publication marker (a corpus, whose shards and cache are no songs)."""
    try:
        return storage.read_published(folder) is not None
    except (ValueError, OSError):  # a published.json of something else, or unreadable: not ours
        return False


def _in_corpus(path: str, base: str, seen: dict[str, bool]) -> bool:
    """Whether a glob's match lies in a folder, below the glob's fixed ``base``, that holds a corpus."""
    stop = os.path.abspath(base)
    folder = os.path.abspath(path)
    while folder != stop and folder.startswith(stop.rstrip(os.sep) + os.sep):
        if folder not in seen:
            seen[folder] = os.path.isfile(os.path.join(folder, storage.PUBLISHED)) and holds_corpus(folder)
        if seen[folder]:
            return True
        folder = os.path.dirname(folder)
    return False


def is_audio_candidate(name: str) -> bool:
    return Path(name).suffix.lower() in AUDIO_SUFFIXES


def relative_source(full: str, root: str) -> str:
    """``full`` named from ``root`` in POSIX form: the location-independent part of a path."""
    return Path(os.path.relpath(full, root)).as_posix()


def scan_directory(root: str, base: str | None = None, exclude: Excluded | None = None) -> Iterator[TrackRecord]:
    """Recursively every audio candidate under ``root`` (symlinked files included, broken ones reported),
    each named relative to ``base`` (default ``root``); folders that ``exclude`` covers, or that hold a corpus's
    publication marker, are not entered."""
    base = root if base is None else base
    exclude = exclude or Excluded()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if storage.PUBLISHED in filenames and holds_corpus(dirpath):
            dirnames.clear()
            continue
        dirnames[:] = sorted(d for d in dirnames if not (exclude and exclude.covers(os.path.join(dirpath, d))))
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


def _manifest_rows(path: Path | str) -> list[dict[str, Any]]:
    """A manifest's rows (CSV, JSON lines or Parquet by suffix), from a local path or an object-store URL: the
    bytes are read once, then parsed the same way wherever they came from."""
    import io

    name = str(path)
    suffix = Path(storage.basename(url_path(name)) if storage.is_url(path) else name).suffix.lower()
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


def url_path(url: str) -> str:
    """An http(s) URL without its query and fragment (what names the object; elsewhere ``?`` is a glob wildcard)."""
    return re.split(r"[?#]", url, maxsplit=1)[0] if url.lower().startswith(("http://", "https://")) else url


def read_manifest(path: str) -> Iterator[TrackRecord]:
    """Rows with a ``path`` column; optional ``vocals``/``accompaniment`` stems and metadata columns.
    Relative paths resolve against the manifest's folder (a URL's folder for a manifest on an object store: its
    ``user:password@`` applies to them, its signature does not); other columns are kept in ``extra``. URLs are
    named and stored without their credentials (``storage.remember_url``)."""
    remote = storage.is_url(path)
    mpath = storage.remember_url(path) if remote else Path(path)
    rows = _manifest_rows(mpath)
    base = storage.parent(url_path(path)) if remote else mpath.parent
    for i, row in enumerate(rows):
        if not row.get("path"):
            raise SourceError(f"manifest {mpath}, row {i + 1}: missing required column 'path' "
                              f"(columns: {', '.join(sorted(row))})")

        def resolve(p: Any) -> str | None:
            if not p:
                return None
            p = str(p)
            if "://" in p:
                return storage.remember_url(p)
            if os.path.isabs(p):
                return p
            return storage.remember_url(resolve_url(str(base), p)) if remote else os.path.join(str(base), p)

        written = str(row["path"])
        name = storage.redact_url(written) if (os.path.isabs(written) or "://" in written) \
            else Path(os.path.normpath(written)).as_posix()
        meta = {k: clean_meta(row.get(k)) for k in METADATA_FIELDS if clean_meta(row.get(k)) is not None}
        extra = storage.redact_values({k: v for k, v in row.items() if k not in METADATA_FIELDS
                               and k not in ("path", "vocals", "accompaniment") and v is not None})
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
            meta = {k: clean_meta(row.get(k)) for k in METADATA_FIELDS if clean_meta(row.get(k)) is not None}
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
            extra = storage.redact_values({k: v for k, v in row.items() if k != col and k not in METADATA_FIELDS
                                   and isinstance(v, (str, int, float, bool))})
            yield TrackRecord(source=source, path=local, metadata=meta, extra=extra)


def input_name(item: str) -> str:
    """What prefixes an input's sources when several inputs are given: its folder or file name."""
    if item.startswith("hf:"):
        item = item[3:]
    if storage.is_url(item):
        item = url_path(storage.redact_url(item))
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


def _outside(files: list[str], exclude: Excluded, markers: list[str] | None = None) -> list[str]:
    """Object URLs outside ``exclude`` and outside any prefix holding a corpus's publication marker (``markers``:
    the marker objects that may hold them, default those among ``files``)."""
    markers = [f for f in files if storage.basename(f) == storage.PUBLISHED] if markers is None else markers
    corpora = Excluded(c for c in {storage.parent(f) for f in markers} if holds_corpus(c))
    return [f for f in files if not (exclude and exclude.covers(f)) and not (corpora and corpora.covers(f))]


def read_url_input(item: str, exclude: Excluded | None = None) -> Iterable[TrackRecord]:
    """An input on an object store: a manifest, a Hugging Face dataset (``hf:URL``, or a prefix holding a saved
    dataset or only Parquet/Arrow files, read by ``songcorpus/io/hf_remote.py``), a glob, a prefix (every audio
    object under it, named relative to it) or one object. Named exactly as the same input on a local disk, and
    without credentials: the URL as given is only ever read (``storage.remember_url``)."""
    from songcorpus.io import hf_remote

    exclude = exclude or Excluded()
    name = storage.remember_url(item.removeprefix("hf:"))
    exclude.check_input(item, name)
    if item.startswith("hf:"):
        return hf_remote.scan_dataset(name)
    if _has_wildcard(url_path(name)):
        base = url_glob_base(name)
        matches = _outside(storage.glob(name), exclude, storage.glob(storage.join(base, "**", storage.PUBLISHED)))
        if not matches:
            raise SourceError(f"pattern {name!r} matches nothing")
        return [TrackRecord(source=storage.relative_to(m, base), path=m) for m in matches]
    if url_path(name).lower().endswith(MANIFEST_SUFFIXES) and storage.exists(name) and not storage.isdir(name):
        return read_manifest(item)
    if storage.isdir(name):
        if holds_corpus(name):
            raise SourceError(f"input {name!r} is a songcorpus corpus ({storage.PUBLISHED}), not songs: curate the "
                              f"songs it was made from")
        if hf_remote.looks_like_dataset(name):
            return hf_remote.scan_dataset(name)
        return [TrackRecord(source=storage.relative_to(f, name), path=f)
                for f in _outside(storage.list_files(name), exclude) if is_audio_candidate(f)]
    if storage.exists(name):
        return [TrackRecord(source=storage.basename(url_path(name)), path=name)]
    raise SourceError(f"input {name!r} does not exist (give a prefix, a glob, an audio object, a manifest "
                      f"{'/'.join(MANIFEST_SUFFIXES)}, or a Hugging Face dataset folder)")


def read_input(item: str, materialise_dir: Path | str, exclude: Excluded | None = None) -> Iterable[TrackRecord]:
    """The records of one input, each named relative to it (see the module docstring); nothing that ``exclude``
    covers is scanned, and an input inside it is refused."""
    exclude = exclude or Excluded()
    if storage.is_url(item.removeprefix("hf:")):
        return read_url_input(item, exclude)
    return (_printable_record(rec, materialise_dir) for rec in _read_local_input(item, materialise_dir, exclude))


def _read_local_input(item: str, materialise_dir: Path | str, exclude: Excluded) -> Iterable[TrackRecord]:
    if item.startswith("hf:"):
        return read_hf_dataset(item[3:], materialise_dir)
    wildcard = any(ch in item for ch in "*?[") and not os.path.lexists(item)
    exclude.check_input(item, glob_base(item) if wildcard else item)
    if item.lower().endswith(MANIFEST_SUFFIXES) and os.path.isfile(item):
        return read_manifest(item)
    if is_hf_dataset_dir(item):
        return read_hf_dataset(item, materialise_dir)
    if os.path.isdir(item):
        if holds_corpus(item):
            raise SourceError(f"input {_shown(item)!r} is a songcorpus corpus ({storage.PUBLISHED}), not songs: "
                              f"curate the songs it was made from")
        return scan_directory(item, exclude=exclude)
    if wildcard:
        base, corpora = glob_base(item), {}
        matches = [m for m in sorted(globlib.glob(item, recursive=True))
                   if not exclude.covers(m) and not _in_corpus(m, base, corpora)]
        if not matches:
            raise SourceError(f"pattern {_shown(item)!r} matches nothing")
        return (rec for m in matches for rec in
                (scan_directory(m, base, exclude) if os.path.isdir(m)
                 else [TrackRecord(source=relative_source(m, base), path=m)]))
    if os.path.lexists(item):
        return [TrackRecord(source=Path(item).name, path=item)]
    raise SourceError(f"input {_shown(item)!r} does not exist (give a folder, a glob, an audio file, a manifest "
                      f"{'/'.join(MANIFEST_SUFFIXES)}, or a saved Hugging Face dataset folder)")


def expand_inputs(inputs: Iterable[str], materialise_dir: Path | str,
                  exclude: Iterable[str | Path] = ()) -> list[TrackRecord]:
    """All records from every input, de-duplicated by source and sorted (deterministic order). With several
    inputs each source is prefixed by its input's name; two inputs of one name are refused (which is which
    would then depend on where they sit). Nothing under ``exclude`` (folders, URL prefixes) is scanned."""
    records: dict[str, TrackRecord] = {}
    for rec in iter_input_records(inputs, materialise_dir, exclude):
        records.setdefault(rec.source, rec)
    return [records[k] for k in sorted(records)]


def spool_inputs(inputs: Iterable[str], materialise_dir: Path | str,
                 exclude: Iterable[str | Path] = ()) -> DiskMap[TrackRecord]:
    """:func:`expand_inputs` for a corpus of any size: the records on local disk (``songcorpus/io/disk_map.py``),
    source -> record, the first of a source kept, iterated in source order; the driver holds none of them.
    ``exclude``: what the curate writes (its output and cache folders), which no scan enters."""
    records: DiskMap[TrackRecord] = DiskMap(encode=TrackRecord.to_dict, decode=TrackRecord.from_dict)
    for rec in iter_input_records(inputs, materialise_dir, exclude):
        if rec.source not in records:
            records[rec.source] = rec
    return records


def iter_input_records(inputs: Iterable[str], materialise_dir: Path | str,
                       exclude: Iterable[str | Path] = ()) -> Iterator[TrackRecord]:
    """Every input's records as they are read, sources prefixed by their input's name when there are several
    (duplicates not yet removed: see :func:`expand_inputs`); nothing under ``exclude`` is scanned."""
    inputs = list(inputs)
    excluded = Excluded(exclude)
    prefixes = [""] * len(inputs)
    if len(inputs) > 1:
        names = [printable_name(input_name(item)) for item in inputs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise SourceError(f"inputs {', '.join(repr(_shown(i)) for i, n in zip(inputs, names, strict=True) if n in clash)} "
                              f"share the name {clash[0]!r}, which names their files in the catalog: rename one, or "
                              f"list them all in one manifest")
        prefixes = [f"{n}/" for n in names]
    for item, prefix in zip(inputs, prefixes, strict=True):
        for rec in read_input(item, materialise_dir, excluded):
            named = rec.source.startswith("hf:") or "://" in rec.source or os.path.isabs(rec.source)
            if prefix and not named:  # a dataset's rows already carry its name; absolute paths and URLs stay
                rec = dataclasses.replace(rec, source=prefix + rec.source)
            yield rec
