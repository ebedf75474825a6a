"""ShardWriter: deterministic, atomic WebDataset shard families with a random-access index.

A shard is a family of field-group tars (``schemas/sample.py`` FIELD_GROUPS): ``<name>.meta.tar`` (the JSON and
small arrays), ``<name>.tokens.tar``, ``<name>.latents.tar`` and ``<name>.audio.tar``, each a WebDataset shard
with the same keys in the same order. A reader streams only the groups it needs (a token model a few KB per
sample, never the FLAC); zipping the files of a family gives whole samples. A group no sample has is not
written.

Members are written by webdataset's own TarWriter with fixed mtime, owner and mode, in key order, so the
same samples always give the same bytes. Each file is written to ``<file>.tmp``, flushed, fsynced and renamed;
a crash leaves the old file or none, never half of one (the manifest, written after every file, says which
family is whole). After writing, member offsets are read back so the catalog can serve any member with one seek.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from webdataset.writer import TarWriter

from songcorpus.io.atomic import commit_file, naming_the_file, sha256_file
from songcorpus.schemas.sample import group_file, group_suffixes


@dataclass(frozen=True)
class Sample:
    """A shard sample. Large members are given as paths (content-addressed files in the artefact
    store) and read only while their shard is written, so planning a corpus never holds its audio."""

    key: str
    members: dict[str, bytes | Path]  # suffix -> bytes or file, e.g. {"json": b"...", "mix.flac": Path(...)}

    @property
    def nbytes(self) -> int:
        return sum(v.stat().st_size if isinstance(v, Path) else len(v) for v in self.members.values())

    def loaded(self, suffixes: Sequence[str] | None = None) -> dict[str, bytes]:
        names = self.members if suffixes is None else suffixes
        return {k: _bytes(self.members[k]) for k in names}


def _bytes(value: bytes | Path) -> bytes:
    return value.read_bytes() if isinstance(value, Path) else value


@dataclass(frozen=True)
class WrittenFile:
    name: str
    group: str
    sha256: str
    nbytes: int


@dataclass(frozen=True)
class WrittenShard:
    """A written family: its files and, for each sample, where each member sits (file, data offset, size)."""

    name: str
    files: list[WrittenFile]
    offsets: dict[str, dict[str, tuple[str, int, int]]]  # key -> suffix -> (file, data offset, size)

    @property
    def sha256(self) -> str:
        """The family's checksum: of its files' names and checksums, in group order."""
        return hashlib.sha256(json.dumps([[f.name, f.sha256] for f in self.files]).encode()).hexdigest()

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.files)


def write_shard(directory: Path, name: str, samples: Sequence[Sample]) -> WrittenShard:
    """Write the family ``name`` (every group file of ``samples``) into ``directory``."""
    layout = group_suffixes(suffix for sample in samples for suffix in sample.members)
    for group, suffixes in layout.items():
        path = directory / group_file(name, group)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with naming_the_file(tmp), open(tmp, "wb") as fh:
                writer = TarWriter(fh, user="songcorpus", group="songcorpus", mode=0o444, mtime=0.0, encoder=False)
                try:
                    for sample in samples:
                        present = [s for s in suffixes if s in sample.members]
                        if present:
                            writer.write({"__key__": sample.key, **sample.loaded(present)})
                except BaseException:
                    with contextlib.suppress(Exception):  # marks the tar stream closed while its file is open
                        writer.tarstream.close()
                    raise
                writer.tarstream.close()
                fh.flush()
            commit_file(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk is not left fuller by half a shard
            raise
    return describe_shard(directory, name, list(layout))


def describe_shard(directory: Path, name: str, groups: Sequence[str]) -> WrittenShard:
    """Checksums and member offsets of the family ``name``'s files for ``groups`` (each must exist)."""
    files: list[WrittenFile] = []
    offsets: dict[str, dict[str, tuple[str, int, int]]] = {}
    for group in groups:
        path = directory / group_file(name, group)
        with tarfile.open(path, "r:") as tar:
            for member in tar.getmembers():
                key, _, suffix = member.name.partition(".")
                offsets.setdefault(key, {})[suffix] = (path.name, member.offset_data, member.size)
        digest, size = sha256_file(path)
        files.append(WrittenFile(path.name, group, digest, size))
    return WrittenShard(name, files, offsets)


def family_present(directory: Path, name: str, groups: Sequence[str]) -> bool:
    return all((directory / group_file(name, g)).is_file() for g in groups)
