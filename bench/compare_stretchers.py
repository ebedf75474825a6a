"""Augmentation's time stretch and pitch shift: Rubber Band (R3) in process and as a command, against librosa.

The stretchers run side by side in one process on the same audio: the Rubber Band library (R3 with its short
window, through pylibrb: the default), the ``rubberband`` command (R3 with its standard window: the default
before), and librosa's phase vocoder (what a user would pick with no Rubber Band at all):

- label truth: on the clean vocal stems of the kal / ked / dita demo songs (and, with ``--synth DIR``, of the
  first ``--limit`` songs of a ``songcorpus synth`` folder), the f0 the stage stored is
  moved by the op (``SongAugmentation.f0``) and compared with the f0 the tracker reads back from the
  augmented audio (torchcrepe tiny, pitch on every frame), per 10.24 s window: raw pitch accuracy
  (mir_eval, 50 cents) over the frames the moved label calls voiced. The minimum over windows is
  what a training sample sees at worst.
- cost: CPU seconds per audio second on one thread, counting the ``rubberband`` child processes
  (``RUSAGE_CHILDREN``), on the 60 s mix used by the codec/augmentation speed table.

Usage: ``.venv/bin/python bench/compare_stretchers.py [--synth DIR --limit N] [--out FILE.json]`` (about 5 minutes
for the demo songs alone).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import mir_eval  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from songcorpus.schemas.config import load_config  # noqa: E402
from songcorpus.transforms.dsp.augment import SongAugmentation, stretcher_id  # noqa: E402
from songcorpus.transforms.stages.f0 import estimate_f0  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo"
SONGS = ("song_00", "song_01", "song_05")
OPS = [("speed", 0.8), ("speed", 0.9), ("speed", 1.1), ("speed", 1.2),
       ("pitch", -2.0), ("pitch", -1.0), ("pitch", 1.0), ("pitch", 2.0)]
STRETCHERS = ("rubberband-library", "rubberband", "librosa")
WINDOW_FRAMES = 1024  # 10.24 s at 100 Hz


def cpu_now() -> float:
    """This process's CPU time plus that of its finished children (the rubberband runs)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def window_rpa(label: np.ndarray, fresh: np.ndarray) -> list[float]:
    n = min(label.size, fresh.size)
    out = []
    for s in range(0, n - WINDOW_FRAMES + 1, WINDOW_FRAMES):
        lab, est = label[s:s + WINDOW_FRAMES], fresh[s:s + WINDOW_FRAMES]
        if (lab > 0).sum() < 100:
            continue
        t = np.arange(WINDOW_FRAMES) / 100.0
        out.append(float(mir_eval.melody.raw_pitch_accuracy(*mir_eval.melody.to_cent_voicing(t, lab, t, est))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write the raw numbers as JSON here")
    ap.add_argument("--synth", type=Path, help="a songcorpus synth folder: its songs' vocal stems join the demo's")
    ap.add_argument("--limit", type=int, default=10, help="with --synth: the first N songs of its manifest")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config().f0
    every_frame = cfg.model_copy(update={"only_vocal_activity": False, "voicing_threshold": 0.0})
    print(f"stretchers: {', '.join(stretcher_id(s) for s in STRETCHERS)}")

    truth: dict[str, dict[str, list[float]]] = {s: {} for s in STRETCHERS}
    vocals = [DEMO / song / "vocals.flac" for song in SONGS]
    if args.synth:
        listed = [json.loads(line) for line in (args.synth / "manifest.jsonl").read_text().splitlines() if line.strip()]
        vocals += [args.synth / r["vocals"] for r in listed if r.get("vocals")][: args.limit]
    for path in vocals:
        x, sr = sf.read(path, dtype="float32")
        if x.ndim > 1:
            x = x.mean(axis=1)
        f0, _ = estimate_f0(x, sr, cfg)
        for kind, value in OPS:
            for stretcher in STRETCHERS:
                aug = SongAugmentation(kind, value, stretcher)
                y = aug.audio(x, sr)
                fresh, _ = estimate_f0(y, sr, every_frame)
                truth[stretcher].setdefault(f"{kind} {value:+g}", []).extend(window_rpa(aug.f0(f0, y.shape[0], sr), fresh))

    a, sr = sf.read(DEMO / "song_00" / "mix.flac", dtype="float32")
    b, _ = sf.read(DEMO / "song_01" / "mix.flac", dtype="float32")
    mix = np.concatenate([a, b])[: 60 * sr]
    cost: dict[str, dict[str, float]] = {s: {} for s in STRETCHERS}
    for kind, value in OPS:
        for stretcher in STRETCHERS:
            aug = SongAugmentation(kind, value, stretcher)
            best = None
            for _ in range(3):
                c = cpu_now()
                aug.audio(mix, sr)
                c = cpu_now() - c
                best = c if best is None else min(best, c)
            cost[stretcher][f"{kind} {value:+g}"] = 60.0 / best

    print(f"\nwindow RPA min / mean per op ({len(vocals)} vocal stems), and x real time per core on a 60 s mix:\n")
    print("| op | " + " | ".join(f"{s}: min / mean" for s in STRETCHERS) + " | "
          + " | ".join(f"{s} x RT/core" for s in STRETCHERS) + " |")
    print("|---" * (1 + 2 * len(STRETCHERS)) + "|")
    for kind, value in OPS:
        op = f"{kind} {value:+g}"
        print(f"| {op} | " + " | ".join(f"{min(truth[s][op]):.3f} / {np.mean(truth[s][op]):.3f}" for s in STRETCHERS)
              + " | " + " | ".join(f"{cost[s][op]:.0f}x" for s in STRETCHERS) + " |")
    base = [v for vals in truth[STRETCHERS[1]].values() for v in vals]
    for s in STRETCHERS:
        allw = [v for vals in truth[s].values() for v in vals]
        below = sum(v < 0.8 for v in allw)
        diff = np.asarray(allw) - np.asarray(base)  # the same windows, in the same order, for every stretcher
        boot = np.random.default_rng(0).choice(diff, size=(2000, diff.size)).mean(axis=1)
        mean_cost = len(OPS) / sum(1.0 / c for c in cost[s].values())
        print(f"{s}: {len(allw)} windows, min {min(allw):.3f}, mean {np.mean(allw):.4f}, below 0.8: {below}; "
              f"paired against {STRETCHERS[1]}: {diff.mean():+.4f} [{np.quantile(boot, 0.025):+.4f}, "
              f"{np.quantile(boot, 0.975):+.4f}]; {mean_cost:.1f}x real time per core over the ops")
    if args.out:
        args.out.write_text(json.dumps({"truth": truth, "x_rt_per_core": cost,
                                        "stretchers": {s: stretcher_id(s) for s in STRETCHERS}}, indent=1))


if __name__ == "__main__":
    main()
