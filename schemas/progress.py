"""``OUT/progress.json``: the live figures of a running curate (or rebuild), so a person or a script can tell how far
a job of hours has got, how fast it goes and what it is spending its time on, without reading its log.

The driver rewrites the file every few seconds while the job runs (``pipelines/job/progress.py``; atomically, so a
reader never sees half of one) and last with ``done: true`` and the final figures, which are the catalog's. It is
not part of the corpus: ``published.json`` does not list it, and nothing in it enters the state file, the cache or
the catalog. Readers (``songcorpus report --follow``) check :data:`PROGRESS_VERSION`.

Reads and writes nothing itself. Fails: :func:`parse_progress` raises ``ValueError`` for bytes that are not a
progress file of a version it knows.
"""

from __future__ import annotations

import json
from typing import TypedDict

PROGRESS_FILE = "progress.json"
PROGRESS_VERSION = 1

# The phases of a job in the order it goes through them: scan (the stages built, their models checked, the inputs
# listed; a rebuild's reads the stored state), start (the engine starting: local Ray, numba's kernel cache), analysis
# (a rebuild has none), decide, samples, shards, catalog, publish; then "done", or "stopped" when the job ended
# without finishing.
PHASES = ("scan", "start", "analysis", "decide", "samples", "shards", "catalog", "publish")
DONE, STOPPED = "done", "stopped"


class Count(TypedDict):
    """Rows done so far and the total (None while it is not known yet: the scan has not finished)."""

    done: int
    total: int | None


class Queue(TypedDict):
    """Rows waiting in front of a stage group and its tasks in flight (submitted to its workers), as the engine
    reports them."""

    waiting: int
    running: int


class StatusFigures(TypedDict):
    """Tracks and hours of audio of one status (accepted, rejected, failed): the catalog's funnel, summed."""

    tracks: int
    hours: float


class Progress(TypedDict):
    """One snapshot of a job. Times are seconds; ``started``/``updated`` are UTC ISO 8601 (``...Z``).

    - ``inputs``: analysed inputs of all the job's inputs (a rebuild re-decides them all: done = total);
    - ``audio_hours``: hours of decoded audio among the inputs done; ``hours_per_wall_hour`` is that over the
      wall time since ``started``;
    - ``phase_rows``: rows of the current phase done and its total (analysis: inputs; samples: accepted songs;
      shards: shards written, total unknown); ``eta_s`` the phase's time left at its rate so far (None when the
      phase has no total or nothing is done yet); ``in_flight`` rows handed to the engine and not back yet;
    - ``phase_seconds``: wall time of each phase so far; ``stage_seconds``: worker time each stage spent on the
      rows that came back (cache hits cost almost none), summed over workers;
    - ``queues``: per stage group (stage names joined by ``+``), rows waiting and tasks in flight, where the engine
      tells (Ray); None otherwise (Beam reports nothing until a phase ends);
    - ``failures``: status -> reason code -> tracks, for the inputs failed or rejected so far (at the end: the
      catalog's);
    - ``tracks``: status -> tracks and hours, once the catalog is written (None before);
    - ``stopped``: the one line the job stopped with, when it did (``phase`` is then ``stopped``)."""

    version: int
    command: str
    engine: str
    workers: int
    phase: str
    done: bool
    stopped: str | None
    started: str
    updated: str
    elapsed_s: float
    inputs: Count
    audio_hours: float
    hours_per_wall_hour: float | None
    phase_rows: Count
    eta_s: float | None
    in_flight: int
    phase_seconds: dict[str, float]
    stage_seconds: dict[str, float]
    queues: dict[str, Queue] | None
    failures: dict[str, dict[str, int]]
    tracks: dict[str, StatusFigures] | None


def progress_bytes(progress: Progress) -> bytes:
    """The file's bytes: indented, keys sorted, one trailing newline."""
    return (json.dumps(progress, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def parse_progress(data: bytes) -> Progress:
    """A progress file read back; ``ValueError`` for one that is not JSON, or of a version this reader does not know."""
    found = json.loads(data)
    if not isinstance(found, dict) or found.get("version") != PROGRESS_VERSION:
        version = found.get("version") if isinstance(found, dict) else None
        raise ValueError(f"not a progress file of version {PROGRESS_VERSION} (version {version!r})")
    return found  # type: ignore[return-value]


__all__ = ["DONE", "PHASES", "PROGRESS_FILE", "PROGRESS_VERSION", "STOPPED", "Count", "Progress", "Queue",
           "StatusFigures", "parse_progress", "progress_bytes"]
