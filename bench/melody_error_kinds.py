"""What kind of mistakes the f0 stage's mix path makes: every sung frame of held-out songs, sorted by what went wrong.

Why: no window score gates the mix path's windows to >= 0.90 raw pitch accuracy (bench/melody_window_gate.py),
because the wrong frames are spread through the windows. Whether they are voicing misses (a frame the singer sings
left unvoiced: a better voicing decision would mend them) or pitch choices (an octave, a fifth or a fourth away: the
path followed a harmonic or the accompaniment) says what to try next.

Reads: a ``songcorpus synth`` folder (the sung f0 cached by compare_melody_on_mixes.synth_truth). Runs the stage's
own functions as the lite pipeline chains them (REPET-SIM -> VAD on its estimate -> Melodia -> ``estimate_f0_on_mix``
with the default config, ``f0.precision`` included). Writes a table on stdout.

    .venv/bin/python bench/melody_error_kinds.py --synth /tmp/melody-synth-b --limit 40
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_melody_on_mixes as study  # noqa: E402

from songcorpus.schemas.config import load_config  # noqa: E402
from songcorpus.transforms.stages.f0 import estimate_f0_on_mix, frames_in_segments, load_f0_model  # noqa: E402
from songcorpus.transforms.stages.vad import load_vad_model  # noqa: E402

VOICING_LEVELS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)
KINDS = ("right (within 50 cents)", "outside the VAD segments", "in a segment but unvoiced", "an octave off",
         "a fifth or a fourth off (+- octaves)", "50-150 cents off", "otherwise off")


def error_kinds(truth: np.ndarray, f0: np.ndarray, vad: np.ndarray) -> dict[str, int]:
    """Counts of the sung frames (truth > 0) by kind, the kinds exclusive, in :data:`KINDS`' order of precedence."""
    sung = truth > 0
    diff = 1200 * np.log2(np.maximum(f0, 1e-9) / np.maximum(truth, 1e-9))
    voiced = sung & (f0 > 0)
    right = voiced & (np.abs(diff) < 50)
    folded = np.abs(diff - 1200 * np.round(diff / 1200))  # distance to the nearest whole number of octaves
    octave = voiced & ~right & (folded < 50)
    fifth = voiced & ~right & ~octave & ((np.abs(folded - 700) < 50) | (np.abs(folded - 500) < 50))
    near = voiced & ~right & ~octave & ~fifth & (np.abs(diff) < 150)
    other = voiced & ~right & ~octave & ~fifth & ~near
    masks = (right, sung & ~vad, sung & vad & (f0 == 0), octave, fifth, near, other)
    return {kind: int(np.count_nonzero(m)) for kind, m in zip(KINDS, masks, strict=True)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synth", type=Path, required=True, help="songcorpus synth folder (songs never tuned on)")
    ap.add_argument("--limit", type=int, default=None, help="songs of the folder (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config()
    model, vad_model = load_f0_model(cfg.f0.method, cfg.f0.precision), load_vad_model()
    totals = dict.fromkeys(KINDS, 0)
    voicing = {level: {"right": 0, "voiced_sung": 0, "voiced_unsung": 0, "unvoiced_unsung": 0}
               for level in VOICING_LEVELS}
    sung = unsung_voiced = unsung = 0
    for song in study.synth_songs(args.synth, args.limit):
        inputs = study.mix_path_inputs(song, cfg, vad_model)
        segments = inputs.segments
        f0, confidence = estimate_f0_on_mix(song.mix, song.rate, cfg.f0, model, segments, inputs.candidates)
        f0, confidence = study.fit(f0, song.n), study.fit(confidence, song.n)
        for level in VOICING_LEVELS:  # the same path, voiced only where the confidence reaches ``level``
            kept = np.where(confidence >= level, f0, 0.0)
            hits = study.frame_hits(song.truth, kept)
            row = voicing[level]
            row["right"] += int(np.count_nonzero(hits["pitch"]))
            row["voiced_sung"] += int(np.count_nonzero(hits["est_v"] & hits["ref_v"]))
            row["voiced_unsung"] += int(np.count_nonzero(hits["est_v"] & ~hits["ref_v"]))
            row["unvoiced_unsung"] += int(np.count_nonzero(~hits["est_v"] & ~hits["ref_v"]))
        vad = frames_in_segments(song.n, segments, cfg.f0.vad_pad_ms / 1000.0)
        for kind, count in error_kinds(song.truth, f0, vad).items():
            totals[kind] += count
        sung += int(np.count_nonzero(song.truth > 0))
        unsung += int(np.count_nonzero(song.truth == 0))
        unsung_voiced += int(np.count_nonzero((song.truth == 0) & (f0 > 0)))
    print(f"\n{sung} sung frames of {args.synth} (precision {cfg.f0.precision})\n")
    print("| sung frames | share |")
    print("|---|---:|")
    for kind, count in totals.items():
        print(f"| {kind} | {count / max(sung, 1):.3f} |")
    print(f"\nvoiced where nobody sings: {unsung_voiced / max(unsung, 1):.3f} of the {unsung} unsung frames")
    print("\nThe same path voiced only where its confidence (the activation at the chosen bin) reaches a level: raw "
          "pitch accuracy (an unvoiced sung frame counts as wrong), voicing recall, voicing false alarm, and overall "
          "accuracy (right sung frames plus unvoiced unsung frames, over all frames)\n")
    print("| confidence >= | RPA | VR | VFA | OA |")
    print("|---|---:|---:|---:|---:|")
    for level, row in voicing.items():
        oa = (row["right"] + row["unvoiced_unsung"]) / max(sung + unsung, 1)
        print(f"| {level:g} | {row['right'] / max(sung, 1):.3f} | {row['voiced_sung'] / max(sung, 1):.3f} "
              f"| {row['voiced_unsung'] / max(unsung, 1):.3f} | {oa:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
