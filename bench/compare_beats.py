"""Choose the structure stage's beat method by measurement on the demo songs' ground truth.

For each method: mir_eval beat F-measure (70 ms window) per song, with and without mir_eval's default
trimming of the first 5 s; downbeat F-measure against bar lines derived from the scores (4/4, bar 1 at
t = 0, so every 4th ground-truth beat) on the songs whose chord annotations confirm that grid (chord
changes fall on every 4th beat from t = 0; song_03 has no chords and a pickup we cannot place, so it
gets no downbeat score); the tempo; and speed as x real time per core (audio seconds per
CPU second of this process, every thread pool pinned to 1), for the whole ``analyse()`` the stage runs
(decode excluded, resampling, beats, downbeats and sections included). One-time setup (imports, numba
JIT, model loading) is timed apart. A second table checks the default sections on collages of demo clips,
where the joins are known (boundary hit rate within 3 s and pairwise label F, mir_eval.segment); the
clips' own inner sections are not annotated, so these numbers are a sanity floor, not an accuracy. Usage::

    .venv/bin/python bench/compare_beats.py [--out bench/out/compare_beats.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mir_eval  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from songcorpus.schemas.config import StructureConfig  # noqa: E402
from songcorpus.transforms.stages.structure import analyse, import_madmom  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo"
SONGS = ("song_00", "song_01", "song_03", "song_05", "song_07")


def madmom_beats_only(x: np.ndarray, rate: int) -> dict[str, Any]:
    """madmom's beat-only RNN + DBN (Böck 2014/2016), for reference: the stage uses the downbeat model."""
    madmom = import_madmom()
    from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor

    act = RNNBeatProcessor()(madmom.audio.signal.Signal(x, rate, num_channels=1))
    beats = DBNBeatTrackingProcessor(fps=100)(act)
    return {"beats": [round(float(b), 3) for b in beats], "tempo_bpm": None}  # no downbeats: not scored


def librosa_stock_trim(x: np.ndarray, rate: int) -> dict[str, Any]:
    """librosa's beat_track with its own trim=True (what the stage replaces by a silence-only trim)."""
    import librosa
    import soxr

    y = soxr.resample(x, rate, 22050)
    env = librosa.onset.onset_strength(y=y, sr=22050, hop_length=512)
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=22050, hop_length=512, trim=True, units="time")
    return {"beats": [round(float(b), 3) for b in beats], "tempo_bpm": None}


METHODS: dict[str, Any] = {
    "librosa stock beat_track, trim=True (beats only)": librosa_stock_trim,
    "librosa (start_bpm=120, default)": lambda x, r: analyse(x, r, StructureConfig()),
    "librosa (start_bpm=100)": lambda x, r: analyse(x, r, StructureConfig(start_bpm=100.0)),
    "madmom RNN+DBN downbeats": lambda x, r: analyse(x, r, StructureConfig(beat_method="madmom")),
    "madmom RNN+DBN beats only": madmom_beats_only,
}


COLLAGES = (  # (clip, start s, end s) back to back; equal clip names = the same music
    (("instr_fof_00", 0, 12), ("instr_midi_00", 0, 12), ("instr_fof_00", 12, 24)),
    (("instr_fof_00", 0, 12), ("instr_midi_00", 0, 12), ("instr_fof_00", 0, 12)),
    (("song_00", 0, 12), ("instr_fof_01", 0, 12), ("song_00", 12, 24)),
    (("instr_fof_01", 0, 10), ("song_01", 5, 20), ("instr_fof_01", 10, 20), ("song_01", 20, 35)),
    (("instr_midi_00", 0, 15), ("instr_fof_00", 0, 15)),
    (("song_03", 0, 14), ("instr_fof_00", 5, 20), ("song_03", 14, 27), ("instr_midi_00", 10, 20)),
    (("song_07", 0, 18), ("song_03", 0, 12), ("song_07", 18, 37)),
)


def section_sanity() -> dict[str, Any]:
    cfg, rows = StructureConfig(), []
    print("\n## sections on collages (joins known), default config")
    print("| collage | joins (s) | found section starts (s) | boundary F (3 s) | pairwise F |")
    for parts in COLLAGES:
        clips = [sf.read(str(DEMO / name / "mix.flac"), dtype="float32") for name, _, _ in parts]
        x = np.concatenate([c[int(a * r) : int(b * r)] for (c, r), (_, a, b) in zip(clips, parts, strict=True)])
        edges = np.cumsum([0] + [b - a for _, a, b in parts]).astype(float)
        ref_iv, ref_lab = np.c_[edges[:-1], edges[1:]], [name for name, _, _ in parts]
        out = analyse(x, clips[0][1], cfg)["sections"]
        est_iv, est_lab = np.array([[s, e] for s, e, _ in out]), [lab for *_, lab in out]
        _, _, f_bound = mir_eval.segment.detection(ref_iv, est_iv, window=3.0, trim=True)
        _, _, f_pair = mir_eval.segment.pairwise(ref_iv, ref_lab, est_iv, est_lab)
        rows.append({"parts": parts, "sections": out, "f_boundary": f_bound, "f_pairwise": f_pair})
        name = " + ".join(f"{n}[{a}:{b}]" for n, a, b in parts)
        found = ", ".join(f"{s:g}{lab}" for s, _, lab in out)
        print(f"| {name} | {', '.join(f'{e:g}' for e in edges[1:-1])} | {found} | {f_bound:.2f} | {f_pair:.2f} |")
    mean_b = float(np.mean([r["f_boundary"] for r in rows]))
    mean_p = float(np.mean([r["f_pairwise"] for r in rows]))
    print(f"| mean | | | {mean_b:.3f} | {mean_p:.3f} |")
    return {"collages": rows, "mean_f_boundary": mean_b, "mean_f_pairwise": mean_p}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the raw numbers as JSON here")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), help="subset of method names")
    args = parser.parse_args()
    meta = {c["id"]: c for c in json.loads((DEMO / "metadata.json").read_text())}
    audio = {s: sf.read(str(DEMO / s / "mix.flac"), dtype="float32") for s in SONGS}
    warm = np.random.default_rng(0).normal(0, 0.1, 5 * 44100).astype(np.float32)
    report: dict[str, Any] = {}
    for name in args.methods:
        fn = METHODS[name]
        t0 = time.process_time()
        fn(warm, 44100)
        setup_s = time.process_time() - t0
        rows, audio_s, cpu_s = {}, 0.0, 0.0
        for song in SONGS:
            x, rate = audio[song]
            t0 = time.process_time()
            out = fn(x, rate)
            cpu = time.process_time() - t0
            audio_s, cpu_s = audio_s + x.shape[0] / rate, cpu_s + cpu
            ref, est = np.array(meta[song]["beats_s"]), np.array(out["beats"])
            trim = mir_eval.beat.trim_beats
            rows[song] = {
                "f": mir_eval.beat.f_measure(ref, est, 0.07),
                "f_trim5": mir_eval.beat.f_measure(trim(ref), trim(est), 0.07),
                "f_downbeat": mir_eval.beat.f_measure(ref[::4], np.array(out["downbeats"]), 0.07)
                if meta[song].get("chords") and "downbeats" in out else None,
                "tempo": out["tempo_bpm"] if out["tempo_bpm"] is not None else
                (round(60 / float(np.median(np.diff(est))), 2) if est.size > 1 else None),
                "bpm_true": meta[song]["bpm"],
                "x_realtime": x.shape[0] / rate / cpu,
            }
        mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in ("f", "f_trim5")}
        fd = [r["f_downbeat"] for r in rows.values() if r["f_downbeat"] is not None]
        mean["f_downbeat"] = float(np.mean(fd)) if fd else None
        report[name] = {"songs": rows, "mean": mean, "x_realtime_per_core": audio_s / cpu_s, "setup_cpu_s": setup_s}
        print(f"\n## {name}  (setup {setup_s:.2f} CPU s, {audio_s / cpu_s:.0f}x real time per core)")
        print("| song | F | F (trim 5 s) | downbeat F | tempo (true) | x real time |")
        for song, r in rows.items():
            fdb = "-" if r["f_downbeat"] is None else f"{r['f_downbeat']:.3f}"
            print(f"| {song} | {r['f']:.3f} | {r['f_trim5']:.3f} | {fdb} | {r['tempo']} ({r['bpm_true']}) "
                  f"| {r['x_realtime']:.0f} |")
        fdm = "-" if mean["f_downbeat"] is None else f"{mean['f_downbeat']:.3f}"
        print(f"| mean | {mean['f']:.3f} | {mean['f_trim5']:.3f} | {fdm} | | {audio_s / cpu_s:.0f} |")
    report["sections"] = section_sanity()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
