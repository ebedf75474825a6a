"""ShardWriter: deterministic, atomic WebDataset tar shards with a random-access index.

Members are written by webdataset's own TarWriter with fixed mtime, owner and mode, in key order,
so the same samples always give the same bytes. A shard is written to ``<name>.tmp``, flushed,
fsynced and renamed; a crash leaves the old shard or none, never half of one. After writing, member
offsets are read back so the catalog can serve any sample with one seek.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from webdataset.writer import TarWriter

from songcorpus.transforms.artefacts import commit_file, sha256_file


@dataclass(frozen=True)
class Sample:
    """A shard sample. Large members are given as paths (content-addressed files in the artefact
    store) and read only while their shard is written, so planning a corpus never holds its audio."""

    key: str
    members: dict[str, bytes | Path]  # suffix -> bytes or file, e.g. {"json": b"...", "mix.flac": Path(...)}

    @property
    def nbytes(self) -> int:
        return sum(v.stat().st_size if isinstance(v, Path) else len(v) for v in self.members.values())

    def loaded(self) -> dict[str, bytes]:
        return {k: (v.read_bytes() if isinstance(v, Path) else v) for k, v in self.members.items()}


@dataclass(frozen=True)
class WrittenShard:
    name: str
    sha256: str
    nbytes: int
    offsets: dict[str, dict[str, tuple[int, int]]]  # key -> suffix -> (data offset, size)


def write_shard(path: Path, samples: Sequence[Sample]) -> WrittenShard:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        writer = TarWriter(fh, user="songcorpus", group="songcorpus", mode=0o444, mtime=0.0, encoder=False)
        for sample in samples:
            writer.write({"__key__": sample.key, **sample.loaded()})
        writer.tarstream.close()
        fh.flush()
    commit_file(tmp, path)
    return describe_shard(path)


def describe_shard(path: Path) -> WrittenShard:
    offsets: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar.getmembers():
            key, _, suffix = member.name.partition(".")
            offsets.setdefault(key, {})[suffix] = (member.offset_data, member.size)
    digest, size = sha256_file(path)
    return WrittenShard(path.name, digest, size, offsets)
