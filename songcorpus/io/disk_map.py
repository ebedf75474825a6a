"""Per-track driver state on local disk: a ``str -> value`` mapping kept in a scratch SQLite file.

Why: the corpus step decides every track (outcome, copies, split) and later reads those decisions while it writes
the catalog. Held in Python dicts, that state grows with the corpus (a few hundred bytes per track: about 0.5 GB
at Suno70k's 659K source songs). Here it lives in a SQLite file whose page cache is capped
(:data:`CACHE_MB`), so the driver's memory stays flat however many tracks there are; SQLite's B-tree keeps lookups
at microseconds.

- :class:`DiskMap` behaves as a ``MutableMapping``; iteration is in key order (SQLite's binary collation of UTF-8
  text, which is Python's ``sorted`` order of ``str``), not insertion order.
- :func:`scratch_db` opens a scratch database (no journal, no fsync: it is thrown away at the end; a crash loses
  nothing that the state file and the cache do not hold).

The scratch file goes under ``directory`` (default: the system temp folder) and is removed when the map is
closed or garbage-collected. Values go through ``encode``/``decode`` (default: JSON).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from songcorpus.schemas.row import canonical_json

V = TypeVar("V")

# Page cache per scratch database: what one of them may hold in memory, whatever its size on disk.
CACHE_MB = 16
# Rows fetched per step when iterating.
FETCH_ROWS = 4096


def scratch_db(path: Path, cache_mb: int = CACHE_MB) -> sqlite3.Connection:
    """A connection to a throw-away database at ``path``: one open transaction (writes are visible to this
    connection at once and never synced), the page cache capped at ``cache_mb``, temporary B-trees on disk."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(f"PRAGMA cache_size=-{int(cache_mb) * 1024}")
    db.execute("PRAGMA temp_store=FILE")
    db.execute("BEGIN")
    return db


def _close(db: sqlite3.Connection, directory: str) -> None:
    try:
        db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class DiskMap(MutableMapping[str, V], Generic[V]):
    """A mapping from source (or any string key) to a small value, on disk (module docstring)."""

    def __init__(self, items: Iterable[tuple[str, V]] = (), directory: Path | str | None = None,
                 encode: Callable[[V], Any] = lambda v: v, decode: Callable[[Any], V] = lambda v: v) -> None:
        self._dir = tempfile.mkdtemp(prefix="songcorpus-map-", dir=directory)
        self._db = scratch_db(Path(self._dir) / "map.sqlite")
        self._db.execute("CREATE TABLE m (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")
        self._encode, self._decode = encode, decode
        self._finalizer = weakref.finalize(self, _close, self._db, self._dir)
        self.update_many(items)

    def close(self) -> None:
        self._finalizer()

    def _dump(self, value: V) -> str:
        return canonical_json(self._encode(value))

    def _load(self, text: str) -> V:
        return self._decode(json.loads(text))

    def __getitem__(self, key: str) -> V:
        row = self._db.execute("SELECT v FROM m WHERE k = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return self._load(row[0])

    def __contains__(self, key: object) -> bool:
        return self._db.execute("SELECT 1 FROM m WHERE k = ?", (key,)).fetchone() is not None

    def __setitem__(self, key: str, value: V) -> None:
        text = self._dump(value)
        if self._db.execute("UPDATE m SET v = ? WHERE k = ?", (text, key)).rowcount == 0:
            self._db.execute("INSERT INTO m VALUES (?, ?)", (key, text))

    def update_many(self, items: Iterable[tuple[str, V]]) -> None:
        """Like ``update`` with pairs, in batches (one statement per batch instead of two per key)."""
        batch: list[tuple[str, str]] = []
        for key, value in items:
            batch.append((key, self._dump(value)))
            if len(batch) >= FETCH_ROWS:
                self._insert(batch)
                batch = []
        if batch:
            self._insert(batch)

    def _insert(self, batch: list[tuple[str, str]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO m VALUES (?, ?)", batch)

    def __delitem__(self, key: str) -> None:
        if self._db.execute("DELETE FROM m WHERE k = ?", (key,)).rowcount == 0:
            raise KeyError(key)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM m").fetchone()[0]

    def _scan(self, columns: str) -> Iterator[tuple]:
        # a cursor of its own, read in steps: writes to the map while this runs are not supported
        cur = self._db.execute(f"SELECT {columns} FROM m ORDER BY k")
        while rows := cur.fetchmany(FETCH_ROWS):
            yield from rows

    def __iter__(self) -> Iterator[str]:
        for (key,) in self._scan("k"):
            yield key

    def iter_items(self) -> Iterator[tuple[str, V]]:
        for key, text in self._scan("k, v"):
            yield key, self._load(text)

    def iter_values(self) -> Iterator[V]:
        for (text,) in self._scan("v"):
            yield self._load(text)

    def items(self) -> _ItemsView:  # type: ignore[override]
        """A view read from disk in key order each time it is iterated."""
        return _ItemsView(self)

    def values(self) -> _ValuesView:  # type: ignore[override]
        return _ValuesView(self)

    def __repr__(self) -> str:
        return f"DiskMap({len(self)} keys at {self._dir})"


class _ItemsView:
    def __init__(self, m: DiskMap) -> None:
        self._m = m

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self._m.iter_items()

    def __len__(self) -> int:
        return len(self._m)


class _ValuesView:
    def __init__(self, m: DiskMap) -> None:
        self._m = m

    def __iter__(self) -> Iterator[Any]:
        return self._m.iter_values()

    def __len__(self) -> int:
        return len(self._m)
