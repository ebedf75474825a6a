"""Cost of the full profile's classify stage (AstContentClassifier): seconds per minute of audio.

Why: the AST AudioSet tagger (87 M parameters, 1212 tokens per 10.24 s patch) is far heavier than the lite
YAMNet, and a corpus run must budget it per core (CPU) or per GPU. Real weights cannot be downloaded here,
so the model is the published architecture (the default ``ASTConfig`` is MIT/ast-finetuned-audioset-10-10-0.4593:
768 wide, 12 layers, 12 heads, 527 classes) with random weights; the cost does not depend on the weights.

What it does: saves that model in the published layout (config.json, model.safetensors,
preprocessor_config.json) in a temporary folder, loads it through the stage's own loader
(``transforms.stages.classify_ast.AstTagger``: local_files_only, safetensors, ``device``), cuts ``--patches`` 10.24 s
patches of 16 kHz audio from a demo song (repeated), and times the stage's compute path
(``accelerator.run_batched`` over ``AstTagger.probabilities``: Kaldi fbank + forward + sigmoid) for each
batch size, after a one-patch warm-up. Decoding and resampling the track are not included (they are the
same as in the lite stage). Reported: wall and CPU seconds per minute of audio, and x real time (wall);
on a shared machine the CPU figure is the one to trust (wall includes waiting for the core).

Run from the repository root (one CPU thread, batch 1 and 8):
    .venv/bin/python bench/bench_full_tagger.py --threads 1 --batch-sizes 1 8
On a GPU:  .venv/bin/python bench/bench_full_tagger.py --device cuda --patches 64 --batch-sizes 1 8 32
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the cost per core)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--patches", type=int, default=8, help="10.24 s patches timed per batch size")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (as device.name)")
    p.add_argument("--no-mixed-precision", action="store_true", help="fp32 on CUDA too")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import soundfile as sf
    import soxr
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    from songcorpus.pipelines.sources.demo import demo_manifest
    from songcorpus.transforms.models.accelerator import pick_device, run_batched
    from songcorpus.transforms.stages.classify_ast import MODEL_RATE, AstTagger
    from songcorpus.transforms.stages.classify_yamnet import content_label_indices

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    labels = ["Speech", "Singing", "Music", *(f"class {i}" for i in range(3, 527))]  # timing needs no real names
    config = ASTConfig(num_labels=527, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench-ast-") as tmp:
        ASTForAudioClassification(config).save_pretrained(tmp, safe_serialization=True)
        ASTFeatureExtractor().save_pretrained(tmp)
        size_mb = (Path(tmp) / "model.safetensors").stat().st_size / 1e6
        t0 = time.perf_counter()
        tagger = AstTagger(Path(tmp), device, mixed_precision=not args.no_mixed_precision)
        load_s = time.perf_counter() - t0
    classes = content_label_indices(tagger.labels)
    n_params = sum(p.numel() for p in tagger.model.parameters())

    song, rate = sf.read(Path(demo_manifest()).parent / "song_00" / "mix.flac", dtype="float32")
    mono = soxr.resample(song.mean(axis=1) if song.ndim == 2 else song, rate, MODEL_RATE, quality="HQ")
    need = args.patches * tagger.patch
    audio = np.tile(mono, need // mono.size + 1)[:need].astype(np.float32)
    patches = [audio[i * tagger.patch : (i + 1) * tagger.patch] for i in range(args.patches)]
    audio_min = args.patches * tagger.patch / MODEL_RATE / 60

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    tagger.probabilities(patches[:1], classes)  # warm-up (allocator, kernels)
    rows = []
    for bs in args.batch_sizes:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        run_batched(patches, lambda b: tagger.probabilities(b, classes), max_items=bs)
        sync()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append((bs, wall, cpu))

    precision = "fp32" if device.type == "cpu" or args.no_mixed_precision else "autocast bf16/fp16"
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"AST {n_params / 1e6:.1f} M parameters ({size_mb:.0f} MB safetensors), loaded in {load_s:.2f} s; "
          f"device {device} ({hardware}), "
          f"{args.threads} torch thread(s), {precision}; torch {torch.__version__}, python {sys.version.split()[0]}")
    print(f"{args.patches} patches of 10.24 s = {audio_min:.2f} audio minutes per batch size\n")
    print("| batch | wall s | CPU s | wall s per audio minute | CPU s per audio minute | x real time (wall) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for bs, wall, cpu in rows:
        print(f"| {bs} | {wall:.2f} | {cpu:.2f} | {wall / audio_min:.2f} | {cpu / audio_min:.2f} "
              f"| {audio_min * 60 / wall:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
