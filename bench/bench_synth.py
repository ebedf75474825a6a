"""Speed of ``songcorpus synth`` and how closely Festival sang the generated scores.

Renders N songs (``pipelines/sources/synth.py``) with W worker processes and reports wall seconds per song, CPU
seconds per song (this process and its reaped children: the pool, Festival, fluidsynth), audio minutes;
then, on every K-th song, pYIN (librosa, 16 kHz, 10 ms hop) on the vocal stem against the score f0 in
``f0_vocal_100hz.csv``: the voiced fraction of the score's notes and the share of voiced frames within 50
cents (the demo's songs: 87-92 % for kal/ked, GROUND_TRUTH.md).

    apt-get install festival festvox-kallpc16k festvox-kdlpc16k fluidsynth musescore-general-soundfont-small
    .venv/bin/python bench/bench_synth.py --n 40 --workers 2 --out /tmp/synth40 [--pitch-every 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from songcorpus.pipelines.sources.synth import synthesize


def cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def pitch_check(folder: Path) -> tuple[float, float]:
    """(voiced fraction of the score's sung frames, share of both-voiced frames within 50 cents)."""
    v, rate = sf.read(folder / "vocals.flac", dtype="float64")
    y = librosa.resample(v, orig_sr=rate, target_sr=16000)
    f0, voiced, _ = librosa.pyin(y, fmin=60, fmax=500, sr=16000, hop_length=160)
    ref = np.loadtxt(folder / "f0_vocal_100hz.csv", delimiter=",", skiprows=1)[:, 1]
    n = min(len(f0), len(ref))
    f0, voiced, ref = f0[:n], voiced[:n], ref[:n]
    both = (ref > 0) & voiced & ~np.isnan(f0)
    cents = 1200 * np.abs(np.log2(f0[both] / ref[both]))
    return float(voiced[ref > 0].mean()), float((cents < 50).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pitch-every", type=int, default=5)
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), cpu_seconds()
    rows = synthesize(args.n, Path(args.out), seed=args.seed, workers=args.workers)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    audio = sum(json.loads((Path(args.out) / r["path"]).parent.joinpath("song.json").read_text())["duration_s"]
                for r in rows)
    print(f"{len(rows)} songs, {audio / 60:.1f} audio min (mean {audio / len(rows):.1f} s), {args.workers} workers, "
          f"load average {os.getloadavg()[0]:.1f}: {wall / len(rows):.2f} wall s/song, {cpu / len(rows):.2f} CPU s/song, "
          f"{audio / cpu:.1f}x real time per core")
    for r in rows[:: args.pitch_every]:
        folder = (Path(args.out) / r["path"]).parent
        voiced, rpa = pitch_check(folder)
        print(f"  {folder.name} {r['artist']:<22} {r['key']:<9} {r['bpm']:>3} BPM: voiced {voiced:.2f}, "
              f"within 50 cents {rpa:.3f}")


if __name__ == "__main__":
    main()
