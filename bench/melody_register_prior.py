"""A register prior on the mix path's Viterbi, song-wide or local: measured on synth songs and the demo's sung songs.

Why: two thirds of the mix path's wrong frames are a harmonic interval off (bench/melody_error_kinds.py). A singer
stays in a register, so a second Viterbi pass whose emission is weighted by a Gaussian around the first pass's
median pitch (over its confident frames) should pull octave slips back. Whether it does depends on how wide a
song's melody is: this reads it on synth songs (melodies within about an octave) and on the demo's three sung songs
(1,400-1,700 cents wide), with a fixed width and with one from the first pass's own spread; then local priors (the median of the
first pass's confident frames within a few seconds, which follows a melody's range), and the stage's own second pass
(the default since this measurement) as a check that it equals its row.

Reads: a ``songcorpus synth`` folder, or ``demo`` for the demo's sung songs (the sung f0 as in
compare_melody_on_mixes). Runs the mix path as the pipeline chains it (``study.mix_path_inputs``, then
``estimate_f0_on_mix`` with the default config) and re-decodes its activations. Writes a table on stdout.

    .venv/bin/python bench/melody_register_prior.py --songs /tmp/melody-synth-b --limit 40
    .venv/bin/python bench/melody_register_prior.py --songs demo
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
from songcorpus.transforms.stages.f0 import (  # noqa: E402
    MELODIA_WEIGHT,
    PITCH_BINS,
    TRUSTED_FRAME,
    _bin_range,
    candidate_bump,
    decode_mix_path,
    estimate_f0_on_mix,
    load_f0_model,
    local_average,
    viterbi_path,
)
from songcorpus.transforms.stages.vad import load_vad_model  # noqa: E402

WIDTHS = (None, 25, 30, 35, "1.5 x spread", "2 x spread")  # the prior's sigma in 20-cent bins; None = no prior
# (sigma in bins, half-width in s) of a local prior
LOCAL = ((20, 2.0), (20, 3.0), (25, 2.0), (25, 3.0), (25, 5.0), (30, 3.0), (30, 5.0), (35, 5.0), (30, 10.0))


def sigma_bins(width: int | str, path: np.ndarray, centre: float) -> float:
    """A fixed width, or a multiple of the first pass's robust spread (MAD), at least 30 bins."""
    if isinstance(width, int):
        return float(width)
    spread = float(np.median(np.abs(path - centre)) * 1.4826) if path.size else 20.0
    return max(30.0, float(width.split()[0]) * spread)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--songs", required=True, help="a songcorpus synth folder, or 'demo'")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config()
    model, vad_model = load_f0_model(cfg.f0.method, cfg.f0.precision), load_vad_model()
    songs = ([study.demo_song(n) for n in study.TUNING_SONGS] if args.songs == "demo"
             else study.synth_songs(Path(args.songs), args.limit))
    lo, hi = _bin_range(*cfg.f0.mix_band_hz)
    one_pass = cfg.f0.model_copy(update={"mix_register_sigma_bins": 0.0})  # the first pass, re-decoded below
    totals: dict[object, list[int]] = {w: [0, 0] for w in (*WIDTHS, *LOCAL, "stage")}
    per_song: list[tuple[float, float]] = []  # (one pass, the stage's default) RPA per song
    for song in songs:
        inputs = study.mix_path_inputs(song, cfg, vad_model)
        detail: dict[str, np.ndarray] = {}
        f0, _ = estimate_f0_on_mix(song.mix, song.rate, one_pass, model, inputs.segments, inputs.candidates, detail)
        shipped, _ = estimate_f0_on_mix(song.mix, song.rate, cfg.f0, model, inputs.segments, inputs.candidates)
        hits = study.frame_hits(song.truth, study.fit(shipped, song.n))
        totals["stage"][0] += int(hits["pitch"][hits["ref_v"]].sum())
        totals["stage"][1] += int(hits["ref_v"].sum())
        first_hits = study.frame_hits(song.truth, study.fit(f0, song.n))
        per_song.append((float(first_hits["pitch"][first_hits["ref_v"]].mean()),
                         float(hits["pitch"][hits["ref_v"]].mean())))
        if "frames" not in detail:
            continue
        frames, acts, first = detail["frames"], detail["activations"], detail["path"]
        emission = acts if inputs.candidates is None else acts + MELODIA_WEIGHT * candidate_bump(inputs.candidates[frames])
        voiced = acts.max(axis=1) >= cfg.f0.voicing_threshold
        confident = voiced & (acts[np.arange(frames.size), first] >= TRUSTED_FRAME)
        centre = float(np.median(first[confident] if confident.any() else first))
        breaks = np.flatnonzero(np.diff(frames) > 1) + 1
        runs = list(zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [frames.size]]), strict=True))
        for width in (*WIDTHS, *LOCAL):
            path = first
            if isinstance(width, tuple):  # a local prior: the stage's own second pass at these widths
                local = cfg.f0.model_copy(update={"mix_register_sigma_bins": float(width[0]),
                                                  "mix_register_window_s": width[1]})
                path = decode_mix_path(emission, acts, frames, local)
            elif width is not None:
                sigma = sigma_bins(width, first[confident], centre)
                weighted = emission * np.exp(-0.5 * ((np.arange(PITCH_BINS) - centre) / sigma) ** 2)[None, :]
                path = np.empty(frames.size, dtype=np.int64)
                for a, b in runs:
                    path[a:b] = viterbi_path(weighted[a:b], lo, hi, cfg.f0.viterbi_width_bins)
            cents, _ = local_average(acts, path)
            track = np.zeros(f0.size, dtype=np.float32)
            track[frames] = np.where(voiced, 10 * 2 ** (cents / 1200), 0)
            hits = study.frame_hits(song.truth, study.fit(track, song.n))
            totals[width][0] += int(hits["pitch"][hits["ref_v"]].sum())
            totals[width][1] += int(hits["ref_v"].sum())
    print(f"\n{len(songs)} songs of {args.songs}\n\n| register prior (sigma, 20-cent bins) | pooled RPA |\n|---|---:|")
    for width, (right, sung) in totals.items():
        name = ("none (one pass)" if width is None else
                f"the stage's default (local: sigma {cfg.f0.mix_register_sigma_bins:g}, "
                f"+-{cfg.f0.mix_register_window_s:g} s)" if width == "stage" else
                f"local: sigma {width[0]}, +-{width[1]:g} s" if isinstance(width, tuple) else width)
        print(f"| {name} | {right / max(sung, 1):.4f} |")
    if per_song:
        delta = np.array([b - a for a, b in per_song])
        boot = np.random.default_rng(0).choice(delta, (2000, delta.size)).mean(axis=1)
        print(f"\nper song, the stage's default against one pass: mean {delta.mean():+.4f} "
              f"[{np.quantile(boot, 0.025):+.4f}, {np.quantile(boot, 0.975):+.4f}] (bootstrap over songs), better on "
              f"{np.mean(delta > 0):.0%}, worse by more than 2 points on {np.mean(delta < -0.02):.0%}, "
              f"worst {delta.min():+.4f}; songs at >= 0.80: {np.mean([a >= 0.8 for a, _ in per_song]):.0%} -> "
              f"{np.mean([b >= 0.8 for _, b in per_song]):.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
