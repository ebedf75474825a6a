"""How well the key stage's estimator (transforms/stages/key.py) reads the demo songs' keys, and what it costs.

Why: generated captions name the key ("in F major"); a caption a generator conditions on must be right.
The truth comes from the scores behind the demo (pipelines/demo/metadata.json): the Foster and Berlin lead
sheets are in F major (their chord labels start and cadence on F) and the Beach song's piano part opens in
Eb major (Eb triads over a Bb pedal, three flats; its 27 s excerpt then moves to a G pedal with G-minor
harmony). The accompaniments were rendered from those scores untransposed, while the vocal parts were moved
by ``transpose_semitones`` into each voice's range, so the vocals' key is the score's key plus that shift and
the demo mixes are bitonal (song_00/01: vocals in C over an F-major accompaniment).

For each song and signal (accompaniment, vocals, mix) it prints the estimate, its correlation (strength),
its margin over the runner-up, the MIREX key score (1 same key, 0.5 a fifth apart with the same mode, 0.3
relative, 0.2 parallel, else 0) and CPU seconds per audio minute (one thread, after a warm-up call).

Run from the repository root:  .venv/bin/python bench/key_accuracy.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from songcorpus.transforms.stages.key import KeyEstimate, estimate_key_from_audio  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo"
SCORE_KEY = {"song_00": (5, "major"), "song_01": (5, "major"), "song_03": (3, "major"), "song_05": (5, "major"),
             "song_07": (5, "major")}  # (tonic pitch class, mode) of each score: F major, Eb major
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def mirex(est: KeyEstimate, tonic: int, mode: str) -> float:
    """The MIREX audio key detection score of one estimate."""
    if (est.tonic, est.mode) == (tonic, mode):
        return 1.0
    if est.mode == mode and (est.tonic - tonic) % 12 in (5, 7):
        return 0.5
    relative = (tonic + 9) % 12 if mode == "major" else (tonic + 3) % 12
    if est.mode != mode and est.tonic == relative:
        return 0.3
    if est.mode != mode and est.tonic == tonic:
        return 0.2
    return 0.0


def main() -> None:
    meta = {m["id"]: m for m in json.loads((DEMO / "metadata.json").read_text())}
    x, rate = sf.read(DEMO / "song_00" / "accompaniment.flac", dtype="float32")
    estimate_key_from_audio(x[: rate * 5], rate)  # warm-up: librosa's CQT filters and numba kernels
    totals: dict[str, list[float]] = {"accompaniment": [], "vocals": [], "mix": []}
    cost = []
    print(f"{'song':8} {'signal':13} {'truth':9} {'estimate':9} {'strength':>8} {'margin':>7} {'MIREX':>5}")
    for song, (tonic, mode) in SCORE_KEY.items():
        for signal in totals:
            truth = (tonic + (meta[song]["transpose_semitones"] if signal == "vocals" else 0)) % 12, mode
            if signal == "mix":
                truth = None  # bitonal: no single key (scored against the accompaniment's)
            x, rate = sf.read(DEMO / song / f"{signal}.flac", dtype="float32")
            t0 = time.process_time()
            est = estimate_key_from_audio(x, rate)
            cost.append((time.process_time() - t0) / (x.shape[0] / rate / 60))
            ref = truth or (tonic, mode)
            score = mirex(est, *ref)
            totals[signal].append(score)
            label = f"{NAMES[ref[0]]} {ref[1]}" + ("" if truth else "*")
            print(f"{song:8} {signal:13} {label:9} {est.name:9} {est.strength:8.3f} {est.margin:7.3f} {score:5.1f}")
    print("\nmean MIREX score (exact-key share):")
    for signal, scores in totals.items():
        print(f"  {signal:13} {np.mean(scores):.2f} ({sum(s == 1.0 for s in scores)}/{len(scores)} exact)")
    print(f"CPU per audio minute: median {np.median(cost):.2f} s (chroma_cqt at 22.05 kHz, hop 2048)")
    print("* the mix is scored against the accompaniment's key (the vocals are in another)")


if __name__ == "__main__":
    main()
