"""What a person sees of a running job and of a finished one: the live display (one tqdm line on a terminal), the
plain lines of a log (a start line, a line per phase and at most one every :data:`LOG_EVERY_S` seconds), the closing
summary, and ``songcorpus report OUT --follow``, all drawn from the same figures (``schemas/progress.py``).

Reads: the figures the job hands its watcher, or ``OUT/progress.json`` (local or an object-store URL) and whether a
run holds ``OUT`` (``pipelines/job/output_claim.py``). Writes: the live display and the log lines to stderr, the
summary and the followed figures to stdout. Fails: :func:`follow` raises ``ConfigError`` for a folder with neither a
progress file nor a run writing one.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.progress import DONE, PHASES, PROGRESS_FILE, STOPPED, Progress, parse_progress

LOG_EVERY_S = 30.0  # the most often a log gets a progress line within one phase
FOLLOW_EVERY_S = 2.0  # how often report --follow reads the file again
WIDTH = 110


def hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def rows_text(p: Progress) -> str:
    """The current phase's rows: inputs analysed, songs cut into samples, shards written."""
    done, total = p["phase_rows"]["done"], p["phase_rows"]["total"]
    unit = {"analysis": "inputs", "samples": "songs", "shards": "shards written"}.get(p["phase"])
    if unit is None:
        return ""
    return f"{done}/{total} {unit}" if total is not None else f"{done} {unit}"


def figures_text(p: Progress) -> str:
    """Audio hours, their rate, the phase's ETA and the elapsed time, as one short clause."""
    parts = [f"{p['audio_hours']:.4f} h audio"]
    if p["hours_per_wall_hour"] is not None and p["audio_hours"]:
        parts.append(f"{p['hours_per_wall_hour']:.3g} h/h")
    if p["eta_s"] is not None:
        parts.append(f"ETA {hms(p['eta_s'])}")
    parts.append(f"{hms(p['elapsed_s'])} elapsed")
    return ", ".join(parts)


def status_line(p: Progress) -> str:
    """One line of a running job: phase, its rows, the figures, the queues where the engine tells."""
    rows = rows_text(p)
    line = f"[{hms(p['elapsed_s'])}] {p['phase']}: " + (f"{rows}, " if rows else "") + figures_text(p)
    queues = p.get("queues")
    if queues:
        waiting = sum(q["waiting"] for q in queues.values())
        running = sum(q["running"] for q in queues.values())
        line += f" ({waiting} waiting, {running} in flight)"
    return line


def summary_lines(p: Progress) -> list[str]:
    """The closing figures: inputs, audio hours, wall time and their rate, time by phase and by stage, failures."""
    rate = f"{p['hours_per_wall_hour']:.3g}" if p["hours_per_wall_hour"] is not None else "?"
    lines = [f"{p['inputs']['done']} inputs, {p['audio_hours']:.4f} h of audio in {hms(p['elapsed_s'])} wall time: "
             f"{rate} audio hours per wall hour ({p['engine']}, {workers_text(p)})"]
    phases = p["phase_seconds"]
    total = sum(phases.values()) or 1.0
    in_order = sorted(phases, key=lambda k: PHASES.index(k) if k in PHASES else len(PHASES))
    lines += _wrapped("time by phase: " + ", ".join(f"{k} {hms(phases[k])} ({100 * phases[k] / total:.0f}%)"
                                                    for k in in_order))
    stages = p["stage_seconds"]
    if stages:
        spent = sum(stages.values()) or 1.0
        lines += _wrapped(f"time by stage ({spent:.1f} s of worker time): " + ", ".join(
            f"{k} {100 * v / spent:.0f}%" for k, v in sorted(stages.items(), key=lambda kv: (-kv[1], kv[0]))))
    failures = [f"{status} {code} {n}" for status in ("failed", "rejected")
                for code, n in sorted(p["failures"].get(status, {}).items())]
    lines += _wrapped("failures by reason: " + (", ".join(failures) if failures else "none"))
    return lines


def workers_text(p: Progress) -> str:
    return f"{p['workers']} worker" + ("s" if p["workers"] != 1 else "")


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


# ---- the live display -------------------------------------------------------------------------------------------


class LogView:
    """Plain lines for a log (stderr not a terminal, ``--no-progress``, ``--verbose``): a start line, a line at each
    phase change and at most one every ``every_s`` seconds within a phase. Nothing while the scan is young: a command
    refused there (a bad input location, a missing model) stays its one line. The closing summary is the command's."""

    def __init__(self, out: str, stream: IO[str] | None = None, every_s: float = LOG_EVERY_S) -> None:
        from songcorpus.io.storage import redact_url  # here: the parser (songcorpus --help) need not import it

        self.out, self.stream, self.every_s = redact_url(out), stream or sys.stderr, every_s
        self.phase: str | None = None
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        if p["phase"] in (DONE, STOPPED) or (p["phase"] == "scan" and p["elapsed_s"] < self.every_s):
            return
        now = time.monotonic()
        if p["phase"] != self.phase or now - self.last >= self.every_s:
            if self.phase is None:
                self._print(f"songcorpus {p['command']} into {self.out} started {p['started']} ({p['engine']}, "
                            f"{workers_text(p)}); figures in {self.out.rstrip('/')}/{PROGRESS_FILE}")
            self._print(status_line(p))
            self.phase, self.last = p["phase"], now

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class TerminalView:
    """One live tqdm line on a terminal: the phase, its rows done of its total, audio hours, rate and ETA."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from tqdm import tqdm

        stream = stream or sys.stderr
        columns, rows = _terminal_size(stream)
        self.bar = tqdm(total=None, file=stream, ncols=columns, nrows=rows, leave=False, bar_format="{desc}{postfix}")
        self.phase: str | None = None

    def __call__(self, p: Progress) -> None:
        if p["phase"] in (DONE, STOPPED):
            return
        total = p["phase_rows"]["total"]
        if p["phase"] != self.phase:
            self.phase = p["phase"]
            self.bar.reset(total=total)
            self.bar.bar_format = ("{desc} {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt}{postfix}" if total
                                   else "{desc}{postfix}")
            self.bar.set_description_str(p["phase"], refresh=False)
        self.bar.n = p["phase_rows"]["done"]
        self.bar.set_postfix_str(figures_text(p), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _terminal_size(stream: IO[str]) -> tuple[int, int]:
    """The terminal's columns and rows; a terminal that reports none (as some pseudo-terminals do) is taken as
    100 x 24, since tqdm draws nothing on a terminal of no rows."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 100, 24
    return size.columns or 100, size.lines or 24


def live_view(out: str, verbose: bool, no_progress: bool, stream: IO[str] | None = None) -> LogView | TerminalView:
    """The display for this run: a live line on a terminal; plain lines in a log, with ``--no-progress``, and with
    ``--verbose`` (whose engine logs would tear a live line apart)."""
    stream = stream or sys.stderr
    if no_progress or verbose or not stream.isatty():
        return LogView(out, stream)
    return TerminalView(stream)


# ---- reading a job's file -----------------------------------------------------------------------------------------


def read_progress(out: str | Path) -> Progress | None:
    """``OUT/progress.json``, or None when there is none (or one of a version this reader does not know)."""
    from songcorpus.io import storage

    try:
        return parse_progress(storage.read_bytes(storage.join(out, PROGRESS_FILE)))
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def follow(out: str | Path, every_s: float = FOLLOW_EVERY_S, stream: IO[str] | None = None,
           heartbeat_s: float = LOG_EVERY_S) -> Progress | None:
    """Print the job's figures as they change (its phase or its rows done; and at least every ``heartbeat_s`` while
    it runs), until it is done (its file says so and no run holds ``OUT``) or its run is gone without finishing;
    returns the last figures (``done`` false: the job stopped), or None for a folder that holds a corpus from before
    progress files, with no run in it."""
    from songcorpus.pipelines.job.output_claim import describe_holder, output_holder

    stream = stream or sys.stdout
    last: Any = None
    last_moved: Any = None
    printed = 0.0
    told_waiting = False
    while True:
        holder = output_holder(out)  # first: a job writes its last figures before it lets go of OUT
        p = read_progress(out)
        if p is None:
            if holder is None:
                if _has_corpus(out):
                    return None
                raise ConfigError(f"{out} has no {PROGRESS_FILE} and no run is writing it; run `songcorpus curate "
                                  f"... --out {out}` (it writes one as it goes)")
            if not told_waiting:
                print(f"waiting for {describe_holder(holder)} to write {PROGRESS_FILE}", file=stream, flush=True)
                told_waiting = True
        else:
            moved = (p["phase"], p["phase_rows"]["done"], p["inputs"]["done"])
            if not p["done"] and p["phase"] != STOPPED and p["updated"] != last:
                if moved != last_moved or time.monotonic() - printed >= heartbeat_s:
                    print(status_line(p), file=stream, flush=True)
                    last_moved, printed = moved, time.monotonic()
                last = p["updated"]
            if holder is None:
                return p
        time.sleep(every_s)


def _has_corpus(out: str | Path) -> bool:
    from songcorpus.io import storage

    if storage.is_url(out):
        return storage.read_published(out) is not None
    return (Path(out) / "catalog.duckdb").exists()


__all__ = ["FOLLOW_EVERY_S", "LOG_EVERY_S", "LogView", "TerminalView", "figures_text", "follow", "hms", "live_view",
           "read_progress", "status_line", "summary_lines"]
