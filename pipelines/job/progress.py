"""The driver's live figures of a job: counted as rows come back from the engine, written to ``OUT/progress.json``
every few seconds while the job runs, and handed to a watcher (the command line's display).

Reads: the rows the engine yields (their ``stage_seconds``, taken off them by the caller: ``schemas/row.py``), the
phase changes the job announces, and, for Ray, the rows queued in front of each stage group (a probe the engine
sets). Writes: ``OUT/progress.json`` (``schemas/progress.py``), through ``songcorpus/io/storage.py`` like the other
outputs: atomically on a local disk, one PUT on an object store (every :data:`LOCAL_INTERVAL_S` or
:data:`REMOTE_INTERVAL_S` seconds from a background thread, at each phase change, and last with ``done: true``).
Needs: nothing but the job. Fails: never because of its own file: a write that fails is logged once as a warning and
the job goes on (a disk that cannot take a small file fails the job's own writes, which say so); a watcher that raises
is a bug and propagates from the main thread's calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from songcorpus.io import storage
from songcorpus.pipelines.job.state_rows import scores_of
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.progress import (
    DONE,
    PROGRESS_FILE,
    PROGRESS_VERSION,
    STOPPED,
    Progress,
    Queue,
    StatusFigures,
    progress_bytes,
)
from songcorpus.schemas.row import Row, optional_field, outcome_of

log = logging.getLogger("songcorpus")

LOCAL_INTERVAL_S = 2.0  # a local rewrite costs a small fsync
REMOTE_INTERVAL_S = 10.0  # an object-store rewrite costs a PUT
Watcher = Callable[[Progress], None]
QueueProbe = Callable[[], "dict[str, Queue] | None"]


def utc_stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class JobProgress:
    """One job's figures. The main thread calls :meth:`phase`, :meth:`row_back`, :meth:`finish`; a background thread
    (started and stopped by ``with``) writes the file and calls the watcher every interval; both under one lock, so
    the file and the watcher always get a whole snapshot. ``out`` None: figures only, no file (a library caller)."""

    def __init__(self, out: str | None, command: str, config: PipelineConfig, watcher: Watcher | None = None,
                 interval_s: float | None = None) -> None:
        self.url = storage.join(out, PROGRESS_FILE) if out is not None else None
        remote = out is not None and storage.is_url(out)
        self.interval_s = interval_s or (REMOTE_INTERVAL_S if remote else LOCAL_INTERVAL_S)
        self.watcher = watcher
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._started_wall = time.time()
        self._started = time.monotonic()
        self._probe: QueueProbe | None = None
        self._figures: dict[str, Any] = {
            "version": PROGRESS_VERSION, "command": command, "engine": config.engine.name,
            "workers": config.engine.workers, "phase": "scan", "done": False, "stopped": None,
            "started": utc_stamp(self._started_wall), "inputs": {"done": 0, "total": None}, "audio_hours": 0.0,
            "phase_rows": {"done": 0, "total": None}, "in_flight": 0, "phase_seconds": {}, "stage_seconds": {},
            "queues": None, "failures": {}, "tracks": None}
        self._phase_start = self._started

    # ---- the job's calls (main thread) ----------------------------------------------------------------------

    def __enter__(self) -> JobProgress:
        self.emit()
        if self.url is not None or self.watcher is not None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="songcorpus-progress")
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if exc is not None and not self._figures["done"]:
            with self._lock:
                self._close_phase()
                self._figures["phase"] = STOPPED
                self._figures["stopped"] = storage.scrub_text(str(exc).splitlines()[0] if str(exc) else
                                                              type(exc).__name__)
            self.emit()

    def inputs(self, total: int) -> None:
        """The scan is done: ``total`` inputs."""
        with self._lock:
            self._figures["inputs"]["total"] = total

    def count_decided(self, rows: Iterable[Row]) -> None:
        """A rebuild's inputs, analysed by an earlier curate: all done, with their hours (from the stored scores)."""
        n, seconds = 0, 0.0
        for row in rows:
            n += 1
            seconds += scores_of(row).get("duration_s") or 0.0
        with self._lock:
            self._figures["inputs"] = {"done": n, "total": n}
            self._figures["audio_hours"] = seconds / 3600.0

    def phase(self, name: str, total: int | None = None) -> None:
        """The job enters phase ``name`` (``schemas/progress.py`` PHASES) with ``total`` rows to do, if known."""
        with self._lock:
            self._close_phase()
            self._figures["phase"] = name
            self._figures["phase_rows"] = {"done": 0, "total": total}
            self._figures["in_flight"] = 0
            self._figures["queues"] = None
            self._phase_start = time.monotonic()
        self.emit()

    def handed(self, n: int) -> None:
        """``n`` rows were handed to the engine."""
        with self._lock:
            self._figures["in_flight"] += n

    def row_back(self, row: Row, stage_seconds: dict[str, float]) -> None:
        """A row came back from the engine, with the seconds its stages took."""
        with self._lock:
            f = self._figures
            f["in_flight"] = max(0, f["in_flight"] - 1)
            f["phase_rows"]["done"] += 1
            for stage, seconds in stage_seconds.items():
                f["stage_seconds"][stage] = f["stage_seconds"].get(stage, 0.0) + seconds
            if f["phase"] == "analysis":
                f["inputs"]["done"] += 1
                f["audio_hours"] += (optional_field(row, "ingest", "duration_s") or 0.0) / 3600.0
            outcome = outcome_of(row)
            if outcome is not None:
                codes = f["failures"].setdefault(outcome["status"], {})
                codes[outcome["code"]] = codes.get(outcome["code"], 0) + 1

    def part_back(self) -> None:
        """One written shard's catalog part came back (the shards phase's rows)."""
        with self._lock:
            self._figures["phase_rows"]["done"] += 1

    def watch_queues(self, probe: QueueProbe | None) -> None:
        """The engine's queue probe for the current phase (None: the engine does not tell)."""
        with self._lock:
            self._probe = probe
            if probe is None:
                self._figures["queues"] = None

    def finish(self, funnel: Iterable[tuple[Any, ...]]) -> Progress:
        """The job is done: the catalog's funnel (status, stage, reason code, tracks, hours) gives the final tracks
        and failures; the file is written once more with ``done: true``. Returns the final figures."""
        tracks: dict[str, StatusFigures] = {}
        failures: dict[str, dict[str, int]] = {}
        for status, _stage, code, n, hours in funnel:
            figures = tracks.setdefault(status, {"tracks": 0, "hours": 0.0})
            figures["tracks"] += int(n)
            figures["hours"] = round(figures["hours"] + float(hours), 6)
            if status != "accepted":
                failures.setdefault(status, {})[code] = failures.get(status, {}).get(code, 0) + int(n)
        with self._lock:
            self._close_phase()
            self._figures.update(phase=DONE, done=True, tracks=tracks, failures=failures, in_flight=0, queues=None,
                                 phase_rows={"done": 0, "total": None})
        return self.emit(final=True)

    def snapshot(self) -> Progress:
        """The figures now, as the file holds them (a copy)."""
        import copy

        with self._lock:
            f = copy.deepcopy(self._figures)
            probe = self._probe
        if probe is not None and not f["done"]:
            try:
                f["queues"] = probe()
            except Exception:  # noqa: BLE001 - the engine's internals moved: no queues, the job goes on
                log.debug("queue probe failed", exc_info=True)
                f["queues"] = None
        now = time.monotonic()
        elapsed = now - self._started
        f["updated"] = utc_stamp(time.time())
        f["elapsed_s"] = round(elapsed, 3)
        if not f["done"] and f["phase"] != STOPPED:
            f["phase_seconds"][f["phase"]] = f["phase_seconds"].get(f["phase"], 0.0) + now - self._phase_start
        f["phase_seconds"] = {k: round(v, 3) for k, v in f["phase_seconds"].items()}
        f["stage_seconds"] = {k: round(v, 3) for k, v in sorted(f["stage_seconds"].items())}
        f["audio_hours"] = round(f["audio_hours"], 6)
        f["hours_per_wall_hour"] = round(f["audio_hours"] / (elapsed / 3600.0), 3) if elapsed > 0 else None
        rows = f["phase_rows"]
        phase_elapsed = now - self._phase_start
        f["eta_s"] = (round((rows["total"] - rows["done"]) * phase_elapsed / rows["done"], 1)
                      if rows["total"] is not None and rows["done"] and not f["done"] else None)
        return f  # type: ignore[return-value]

    def emit(self, final: bool = False) -> Progress:
        """Write the file and call the watcher with one snapshot; returns it."""
        with self._lock:
            snap = self.snapshot()
            if self.url is not None:
                try:
                    storage.write_bytes(self.url, progress_bytes(snap))
                except Exception as exc:  # noqa: BLE001 - see the module docstring: the job's own writes report it
                    if final or not self._warned:
                        log.warning("%s not written (%s); the job goes on", self.url, storage.scrub_text(str(exc)))
                        self._warned = True
            if self.watcher is not None:
                self.watcher(snap)
        return snap

    # ---- inside ---------------------------------------------------------------------------------------------

    def _close_phase(self) -> None:
        phase = self._figures["phase"]
        if phase not in (DONE, STOPPED):
            spent = self._figures["phase_seconds"]
            spent[phase] = spent.get(phase, 0.0) + time.monotonic() - self._phase_start
        self._phase_start = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.emit()
            except Exception:  # noqa: BLE001 - a watcher's bug must not kill the job from a side thread
                log.debug("progress update failed", exc_info=True)


__all__ = ["LOCAL_INTERVAL_S", "REMOTE_INTERVAL_S", "JobProgress", "QueueProbe", "Watcher", "utc_stamp"]
