"""The stored scores (``OUT/state/rows.jsonl``) as a file the driver streams, never a list it holds.

Why: a corpus of 659K songs has 659K analysed rows of a few KB each; a driver that keeps them all grows with the
corpus, where the driver should plan and merge small metadata only. So:

- :class:`StateRowsWriter` takes analysed rows in whatever order the engine returns them, appends each to a
  temporary file as it arrives and indexes (source, offset, length) in a scratch SQLite file
  (:class:`SortedSpool`); ``finish()`` writes
  ``rows.jsonl`` sorted by source (one canonical JSON line per row: the same bytes whatever the engine or the
  order) and renames it into place. A second row for one source (a retried bundle) is dropped.
- :func:`iter_state_rows` reads it back one row at a time.
- :func:`slim_row` keeps, of a full row, what the corpus-level decisions read (scores, hashes, fingerprint and
  frame files, track metadata, result names): what ``build_corpus`` passes over for every track, spooled to a
  local scratch file (:class:`SpooledRows`), while the full rows stay in the state file and are streamed again
  for the samples phase and the tracks table. :class:`PackedRows` (JSON bytes in memory) is for small sets.

Fails: a missing state file raises ``FileNotFoundError`` naming it; a line that is not JSON raises ``ValueError``
naming the file and line (a corrupt state file: re-run ``songcorpus curate``, which reuses the cache).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from songcorpus.io.atomic import commit_file
from songcorpus.io.disk_map import scratch_db
from songcorpus.schemas.catalog import SCORE_COLUMNS
from songcorpus.schemas.row import Row, canonical_json, outcome_of, results_of, source_of, track_of

# What decisions (transforms/corpus/gates, near_duplicates, corpus.decide/split_groups/assign_split) and the corpus
# codebook fits read of a row's results, besides the scores.
DECISION_KEYS = frozenset(SCORE_COLUMNS) | {
    "audio_sha256", "source_sha256", "source_format", "duration_s",  # ingest: exact copies, keep order, splits
    "bandwidth_hz", "silence_ratio",  # quality: which copy is kept
    "fingerprint_items", "fingerprint_file",  # near duplicates
    "codec_frames_file", "unit_frames_file",  # the corpus codebooks' train frames
}


def scores_of(row: Row) -> dict[str, Any]:
    """Every score column of a row: its stage results merged in order (a later stage's value wins)."""
    merged: dict[str, Any] = {}
    for result in results_of(row).values():
        merged.update(result)
    return {k: merged.get(k) for k in SCORE_COLUMNS}


def slim_row(row: Row) -> Row:
    """The row with each stage result cut to :data:`DECISION_KEYS` (result names kept: lineage reads them). A row
    a stage already decided (``outcome`` set) takes no part in copies or splits: it keeps its source, its outcome
    and its scores (an early gate's rejection is re-decided from them by ``rebuild``)."""
    outcome = outcome_of(row)
    if outcome is not None:
        scores = {k: v for k, v in scores_of(row).items() if v is not None}
        return {"track": {"source": source_of(row), "metadata": {}}, "outcome": outcome,
                "results": {"scores": scores} if scores else {}}
    return {"track": track_of(row), "outcome": outcome,
            "results": {name: {k: v for k, v in res.items() if k in DECISION_KEYS}
                        for name, res in results_of(row).items()}}


class PackedRows(Sequence[Row]):
    """Rows kept as canonical JSON bytes and parsed as they are read: a slim row costs its JSON's length (a few
    hundred bytes) instead of a tree of dicts (several KB), for the passes ``build_corpus`` makes over every track.
    Order is the order added (from a state file: by source)."""

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        self._items: list[bytes] = [canonical_json(r).encode() for r in rows]

    def append(self, row: Row) -> None:
        self._items.append(canonical_json(row).encode())

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Row: ...

    @overload
    def __getitem__(self, i: slice) -> list[Row]: ...

    def __getitem__(self, i: int | slice) -> Row | list[Row]:
        if isinstance(i, slice):
            return [json.loads(b) for b in self._items[i]]
        return json.loads(self._items[i])

    def __iter__(self) -> Iterator[Row]:
        for b in self._items:
            yield json.loads(b)


def slim_state_rows(path: Path) -> SpooledRows:
    """The state file's rows, slim (:func:`slim_row`), in source order, spooled to a local scratch file."""
    return SpooledRows(slim_row(r) for r in iter_state_rows(path))


class SortedSpool:
    """Records in any order in, streamed back sorted by their key; the driver's memory per record: none (each
    record is appended to ``path``, a spool file, and its key with offset and length to a scratch SQLite index
    beside it, :mod:`pipelines.disk_map`). A second record under one key is dropped."""

    def __init__(self, path: Path) -> None:
        self.spool_path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._spool = open(path, "wb")  # noqa: SIM115 (closed by close)
        self._index_path = path.with_name(path.name + ".index")
        self._index_path.unlink(missing_ok=True)
        self._db = scratch_db(self._index_path)
        self._db.execute("CREATE TABLE spool (k TEXT PRIMARY KEY, off INTEGER, len INTEGER) WITHOUT ROWID")
        self._offset = 0
        self._len = 0

    def add(self, key: str, line: bytes) -> bool:
        """Append one record (one line of bytes, newline included); False if ``key`` was added before."""
        if self._db.execute("INSERT OR IGNORE INTO spool VALUES (?, ?, ?)",
                            (key, self._offset, len(line))).rowcount == 0:
            return False
        self._spool.write(line)
        self._offset += len(line)
        self._len += 1
        return True

    def __len__(self) -> int:
        return self._len

    def sorted_lines(self) -> Iterator[bytes]:
        self._spool.flush()
        cur = self._db.execute("SELECT off, len FROM spool ORDER BY k")
        with open(self.spool_path, "rb") as spool:
            while batch := cur.fetchmany(4096):
                for offset, length in batch:
                    spool.seek(offset)
                    yield spool.read(length)

    def close(self) -> None:
        self._spool.close()
        self._db.close()
        self.spool_path.unlink(missing_ok=True)
        self._index_path.unlink(missing_ok=True)


class SpooledRows:
    """Rows kept in a local scratch file (one canonical JSON line each) and parsed as they are read: what the
    driver holds of them is a file handle, whatever their number. Sized and re-iterable (each pass reads the file
    again); order is the order added (from a state file: by source). For the passes ``build_corpus`` makes over
    every track's slim row."""

    def __init__(self, rows: Iterable[Row] = (), directory: Path | str | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="songcorpus-rows-", dir=directory)
        self._path = Path(self._dir) / "rows.jsonl"
        self._out = open(self._path, "wb")  # noqa: SIM115 (closed by close or the finalizer)
        self._len = 0
        self._finalizer = weakref.finalize(self, _remove_spool, self._out, self._dir)
        for row in rows:
            self.append(row)

    def append(self, row: Row) -> None:
        self._out.write((canonical_json(row) + "\n").encode())
        self._len += 1

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[Row]:
        self._out.flush()
        with open(self._path, "rb") as fh:
            for line in fh:
                yield json.loads(line)

    def close(self) -> None:
        self._finalizer()


def _remove_spool(handle: Any, directory: str) -> None:
    handle.close()
    shutil.rmtree(directory, ignore_errors=True)


class StateRowsWriter:
    """Rows in any order in, ``path`` sorted by source out (a :class:`SortedSpool` keyed by source)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._spool = SortedSpool(path.with_name(path.name + ".unsorted"))

    def add(self, row: Row) -> None:
        self._spool.add(source_of(row), (canonical_json(row) + "\n").encode())

    def __len__(self) -> int:
        return len(self._spool)

    def finish(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as out:
            for line in self._spool.sorted_lines():
                out.write(line)
        self._spool.close()
        commit_file(tmp, self.path)

    def abort(self) -> None:
        self._spool.close()


def write_state_rows(path: Path, rows: Iterable[Row]) -> int:
    """All ``rows`` into ``path`` (sorted by source); the number written."""
    writer = StateRowsWriter(path)
    try:
        for row in rows:
            writer.add(row)
    except BaseException:
        writer.abort()
        raise
    writer.finish()
    return len(writer)


def iter_state_rows(path: Path) -> Iterator[Row]:
    """The rows of a state file, one at a time, in its (source) order."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no stored scores here; run `songcorpus curate` first")
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {n} is not a JSON row ({exc.msg}): the stored scores are corrupt; "
                                 f"run `songcorpus curate` again (it reuses every cached result)") from None


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
