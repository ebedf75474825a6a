"""Window planning: which spans of a song become training samples, and which window is each one's reference.

Pure functions over stored analysis (duration, beats, section starts, VAD segments), so the same
analysis and config always give the same windows on any engine and on any re-run.

Rules (``windows`` config): windows are ``length_s`` long; a window starts on an anchor (a beat, a
section start, or a 10 ms grid point for ``snap: none``) at least ``hop_s`` (default: the length)
after the previous start, so with the default hop windows never overlap; a window needs at least
``min_vocal_activity`` of its time covered by VAD segments; at most ``max_per_track`` per song. Each
window's reference is another window of the same song that does not overlap it (LaDA-Band's reference
accompaniment), chosen by a hash of the window's key; a window with no possible reference is dropped
when ``require_reference`` is set. Starts are rounded to 10 ms, the f0 frame grid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from songcorpus.schemas.config import WindowConfig

GRID_S = 0.01  # window starts land on the 100 Hz f0 frame grid


@dataclass(frozen=True)
class Window:
    index: int
    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def overlaps(self, other: Window) -> bool:
        return self.start_s < other.end_s - 1e-9 and other.start_s < self.end_s - 1e-9


def activity_in(segments: list[list[float]], start: float, end: float) -> float:
    """Share of [start, end) covered by (sorted, disjoint) segments."""
    covered = sum(max(0.0, min(end, e) - max(start, s)) for s, e in segments)
    return covered / (end - start) if end > start else 0.0


def anchors_for(duration_s: float, beats: list[float], section_starts: list[float], cfg: WindowConfig) -> list[float]:
    if cfg.snap == "beats" and beats:
        points = beats
    elif cfg.snap == "sections" and section_starts:
        points = section_starts
    else:
        step = cfg.hop_s or cfg.length_s
        n = int((duration_s - cfg.length_s) / step + 1e-9) + 1 if duration_s >= cfg.length_s else 0
        points = [i * step for i in range(n)]
    return sorted({round(round(p / GRID_S) * GRID_S, 2) for p in points if 0.0 <= p})


def plan_windows(duration_s: float, beats: list[float], section_starts: list[float],
                 vad_segments: list[list[float]], cfg: WindowConfig) -> list[Window]:
    """Candidate windows in time order, before references (see the module docstring for the rules)."""
    length = cfg.length_s
    hop = cfg.hop_s or length
    if duration_s + 1e-9 < length:
        return []
    anchors = anchors_for(duration_s, beats, section_starts, cfg) or [0.0]
    out: list[Window] = []
    next_ok = 0.0
    for start in anchors:
        if start + 1e-9 < next_ok:
            continue
        if start + length > duration_s + 1e-6:
            break
        next_ok = start + hop
        if activity_in(vad_segments, start, start + length) + 1e-9 < cfg.min_vocal_activity:
            continue
        out.append(Window(len(out), start, length))
        if len(out) >= cfg.max_per_track:
            break
    return out


def choose_references(windows: list[Window], keys: list[str], require: bool) -> tuple[list[Window], dict[int, int | None]]:
    """For each window, a non-overlapping window of the same song (by a hash of its key).

    Non-overlap is symmetric, so dropping the windows that have no candidate never takes away another
    window's only candidate. Returns the kept windows and their reference (an index into ``windows``).
    """
    refs: dict[int, int | None] = {}
    kept: list[Window] = []
    for w, key in zip(windows, keys, strict=True):
        candidates = [o.index for o in windows if not o.overlaps(w)]
        if not candidates:
            if require:
                continue
            refs[w.index] = None
        else:
            h = int.from_bytes(hashlib.sha256(f"ref\x1f{key}".encode()).digest()[:8], "big")
            refs[w.index] = candidates[h % len(candidates)]
        kept.append(w)
    return kept, refs
