"""A job's exchange folder in the artefact store: the driver writes a phase's inputs there as part files, the
engine's workers read them (and, on Beam, write their results beside them).

Why: an engine given every row by the driver (``ray.data.from_items`` of a list, ``beam.Create`` of every row)
holds them all in the driver and in the job graph (Dataflow caps a graph's size). Here the driver streams the
rows into parts of at most ``max_lines`` lines (rows are parsed one at a time, never listed) and the engine is
given only the part names. The folder is ``<store>/tmp/<engine>-<kind>-<uuid>``: a local path or an object-store
URL (``songcorpus/io/storage.py``), so it is wherever every worker already reads the artefact store. Removed when the
job ends, whatever happened.
"""

from __future__ import annotations

import math
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from songcorpus.io import storage


def read_part(url: str) -> Iterator[str]:
    """The lines of one part file (a worker reads its own inputs; the job only names the file)."""
    yield from (line for line in storage.read_bytes(url).decode("utf-8").split("\n") if line.strip())


def part_count(n_lines: int, min_parts: int, max_lines: int, max_parts: int | None = None) -> int:
    """How many parts ``n_lines`` are cut into: at least ``min_parts`` (to balance workers), at most ``max_lines``
    lines each, never more parts than lines, and with ``max_parts`` at most that many (then parts grow)."""
    n = max(1, min(n_lines, max(min_parts, math.ceil(n_lines / max_lines))))
    return min(n, max_parts) if max_parts else n


class JobFolder:
    """``inputs/part-*.jsonl`` the driver writes; ``results/`` the workers write (module docstring)."""

    def __init__(self, store_url: str, kind: str) -> None:
        self.root = storage.join(store_url, "tmp", f"{kind}-{uuid.uuid4().hex}")
        self.results = storage.join(self.root, "results")
        if not storage.is_url(self.root):
            Path(self.results).mkdir(parents=True)

    def write_inputs(self, lines: Iterable[str], n_lines: int, n_parts: int) -> list[str]:
        """``lines`` (``n_lines`` of them, streamed) cut in order into ``n_parts`` parts of near-equal size; the
        part names. Each part is written as soon as it is full: the driver holds one part's lines at a time."""
        n_parts = max(1, min(n_parts, n_lines))
        urls: list[str] = []
        chunk: list[str] = []
        base, extra = divmod(n_lines, n_parts)  # the first `extra` parts get one line more
        for line in lines:
            chunk.append(line + "\n")
            if len(chunk) == base + (len(urls) < extra):
                urls.append(self._write_part(len(urls), chunk))
                chunk = []
        if chunk or len(urls) != n_parts:
            raise ValueError(f"write_inputs was told {n_lines} lines and got a different number")
        return urls

    def _write_part(self, i: int, chunk: list[str]) -> str:
        url = storage.join(self.root, "inputs", f"part-{i:06d}.jsonl")
        storage.write_bytes(url, "".join(chunk).encode())
        return url

    def result_files(self, pattern: str) -> list[str]:
        return storage.glob(storage.join(self.results, pattern))

    def __enter__(self) -> JobFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        if storage.is_url(self.root):
            for url in storage.list_files(self.root):
                storage.remove(url)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
