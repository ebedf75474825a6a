"""A curated corpus opened read-only for viewing: its catalog, its config's gates and its shard members by offset.

Reads OUT/catalog.duckdb (for an object-store URL, a copy checked against the publication marker, fetched into a
temporary folder through pipelines/sinks/catalog.py and removed on close), OUT/config.yaml and byte ranges of the
shard tars the catalog's ``offsets_json`` names (songcorpus/io/storage.py: one seek locally, one ranged GET on a
store). Writes nothing. Every file it reads is resolved from the catalog: a member's tar must be a plain file name
under OUT/shards, and locally its real path must stay inside the corpus (a symlink out of it is refused). The name
shown for the corpus is the URL without credentials. Fails with :class:`ViewError` for a folder that holds no
corpus, and :class:`NotFound` for a key or member the catalog does not hold.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from songcorpus.io import storage
from songcorpus.schemas.catalog import SCORE_COLUMNS
from songcorpus.view.errors import NotFound, ViewError

AUDIO_TYPES = {".flac": "audio/flac", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}


@dataclass(frozen=True)
class Gate:
    """One gate of the corpus's config: reject when ``score`` is outside [min, max]."""

    name: str
    score: str
    min: float | None
    max: float | None


@dataclass
class Member:
    """Where one member of one sample lies: its tar (a URL or local path), data offset and size."""

    suffix: str  # the member's name in the sample, e.g. "mix.flac"
    url: str
    offset: int
    size: int

    @property
    def content_type(self) -> str:
        return next((t for ext, t in AUDIO_TYPES.items() if self.suffix.endswith(ext)), "application/octet-stream")


@dataclass
class Corpus:
    """An open corpus. ``cursor()`` gives a connection for one thread (DuckDB's connections are not shared)."""

    location: str  # as given: may carry a credential, so it is never shown (``name`` is)
    name: str
    db_path: Path
    gates: list[Gate]
    columns: dict[str, set[str]]  # table -> its columns (older catalogs lack some)
    _con: Any = field(repr=False)
    _stack: ExitStack = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, location: str | Path) -> Corpus:
        import duckdb

        from songcorpus.pipelines.sinks.catalog import local_catalog

        given = str(location)
        name = storage.remember_url(given) if storage.is_url(given) else given
        if not storage.is_url(given):
            if not Path(given).is_dir():
                raise ViewError(f"{given} is not a folder; give a folder written by `songcorpus curate --out DIR`")
            if not (Path(given) / "catalog.duckdb").is_file():
                raise ViewError(f"{given} has no catalog.duckdb; is it a curated corpus folder? "
                                f"(`songcorpus curate ... --out {given}` writes one)")
        stack = ExitStack()
        try:
            try:
                db = stack.enter_context(local_catalog(name))
            except FileNotFoundError as exc:
                raise ViewError(str(exc)) from None
            con = duckdb.connect(str(db), read_only=True)
            stack.callback(con.close)
            columns = {t: {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                                      "WHERE table_name = ?", [t]).fetchall()}
                       for t in ("tracks", "windows", "shards", "fields")}
            if not columns["tracks"] or not columns["windows"]:
                raise ViewError(f"{storage.redact_url(name)}/catalog.duckdb has no tracks or windows table; "
                                f"is it a songcorpus catalog?")
            gates = _gates(name)
        except BaseException:
            stack.close()
            raise
        return cls(given, storage.redact_url(name), Path(db), gates, columns, con, stack)

    def close(self) -> None:
        self._stack.close()

    def cursor(self) -> Any:
        with self._lock:
            return self._con.cursor()

    @property
    def is_remote(self) -> bool:
        return storage.is_url(self.location)

    def score_columns(self) -> list[str]:
        """The catalog's score columns, in the schema's order."""
        return [c for c in SCORE_COLUMNS if c in self.columns["tracks"]]

    def offsets(self, key: str) -> dict[str, list[Any]]:
        cur = self.cursor()
        try:
            hit = cur.execute("SELECT offsets_json FROM windows WHERE key = ?", [key]).fetchone()
        finally:
            cur.close()
        if hit is None:
            raise NotFound(f"no sample {key!r} in this corpus")
        return json.loads(hit[0])

    def member(self, key: str, suffix: str) -> Member:
        """Where member ``suffix`` of sample ``key`` lies, from the catalog only."""
        offsets = self.offsets(key)
        if suffix not in offsets:
            raise NotFound(f"sample {key!r} has no member {suffix!r}; it has {', '.join(sorted(offsets))}")
        file, offset, size = offsets[suffix]
        return Member(suffix, self._shard_file(str(file)), int(offset), int(size))

    def _shard_file(self, file: str) -> str:
        if not file or "/" in file or "\\" in file or file in (".", "..") or "\x00" in file:
            raise NotFound(f"the catalog names a shard file {file!r} that is not a plain file name")
        if self.is_remote:
            return storage.join(self.name, "shards", file)
        root = os.path.realpath(self.location)
        real = os.path.realpath(os.path.join(self.location, "shards", file))
        if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
            raise NotFound(f"shard file {file!r} is not inside the corpus")
        return real

    def read(self, member: Member, start: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of ``member`` from ``start`` (the whole member by default)."""
        length = member.size - start if length is None else length
        return storage.read_range(member.url, member.offset + start, max(0, length))

    def members(self, key: str) -> dict[str, bytes]:
        """Every member of sample ``key`` as bytes (what the ``inspect`` drawing needs)."""
        return {suffix: self.read(self.member(key, suffix)) for suffix in self.offsets(key)}


def _gates(name: str) -> list[Gate]:
    """The gates of the corpus's config.yaml (none when it has no config, as a hand-made catalog)."""
    import yaml

    try:
        config = yaml.safe_load(storage.read_bytes(storage.join(name, "config.yaml"))) or {}
    except FileNotFoundError:
        return []
    out = []
    for g in config.get("gates") or []:
        if isinstance(g, dict) and "score" in g:
            out.append(Gate(str(g.get("name", g["score"])), str(g["score"]), _num(g.get("min")), _num(g.get("max"))))
    return out


def _num(x: Any) -> float | None:
    return None if x is None else float(x)
