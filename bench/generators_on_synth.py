"""Train each generator on a curated synthetic corpus within a time budget, then evaluate it on the held-out
songs next to its floor, its untrained model and the codec ceiling (can a CPU learn from a curated corpus?).

Reads: a corpus curated from `songcorpus synth` (`songcorpus curate SYNTH/manifest.jsonl --out CORPUS`).
Writes: OUT/<system>/ (the training run), OUT/<system>.eval/ (metrics.parquet, metrics.duckdb), OUT/calib/
(the step-time calibration runs), and OUT/summary.md (the headline metrics per model, with intervals).

Budget: each model first runs `--calibrate` steps in a scratch run to measure its step time on this machine,
then trains a fresh run for as many steps as fit in `--minutes` (rounded to the checkpoint interval). The
SongEcho ablation trains stage B three times on the same stage-A backbone, data and steps: IA-EiLM (the
paper), EiLM without the IACR gate, and plain addition.

    .venv/bin/python bench/generators_on_synth.py /work/data/synth200-corpus --out /work/data/gen \\
        --minutes 5 --limit 20 --sampler-steps 12 --models-dir /work/data/models
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from songcorpus.schemas.training import load_train_config
from songcorpus.train.eval.evaluate import evaluate_run
from songcorpus.train.launch import launch_local

HEADLINE = {"samuel": ["onset_f1", "chroma_cosine", "fad"], "lada_band": ["onset_f1", "chroma_cosine", "fad"],
            "songecho": ["melody"], "songecho_melody": ["melody"],
            "unisinger": ["speaker_similarity", "melody", "per"]}
SYSTEMS = [("samuel", "samuel", {}), ("lada_band", "lada_band", {}), ("songecho", "songecho", {}),
           ("songecho_melody", "songecho_b_ia_eilm", {"injection": "ia_eilm"}),
           ("songecho_melody", "songecho_b_eilm", {"injection": "eilm"}),
           ("songecho_melody", "songecho_b_add", {"injection": "add"}),
           ("unisinger", "unisinger", {})]


def config(name: str, steps: int, window_s: float, batch: int, model: dict, every: int, lr: float | None = None,
           keep: int = 2):
    optim = {"warmup_steps": max(1, min(50, steps // 10)), **({"lr": lr} if lr else {})}
    return load_train_config(name, overrides={
        "model": {"name": name, **model}, "steps": steps, "global_batch": batch,
        "data": {"num_workers": 0, "window_s": window_s},
        "optim": optim,
        "checkpoint": {"every": every, "keep": keep}})


def train(name: str, run: Path, data: str, steps: int, args: argparse.Namespace, model: dict,
          backbone: Path | None) -> float:
    start = time.perf_counter()
    every = max(1, steps // args.checkpoints)
    launch_local(config(name, steps, args.window, args.batch, model, every, args.lr.get(name), args.keep), data, run,
                 progress=False, backbone=backbone)
    return time.perf_counter() - start


def step_seconds(run: Path, batch: int) -> float:
    """Median seconds per optimiser step (data wait included) from the run's log, first step dropped: the
    wall time of a short run is mostly start-up (caption encoder, loader workers), not steps."""
    rows = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    times = sorted(batch / r["samples_per_s"] for r in rows[1:] or rows)
    return times[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=8.0, help="training budget per model")
    p.add_argument("--ablation-minutes", type=float, help="budget of each SongEcho stage-B ablation run "
                   "(default --minutes)")
    p.add_argument("--calibrate", type=int, default=6, help="steps of the step-time calibration run")
    p.add_argument("--window", type=float, default=4.0, help="training window, seconds")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--limit", type=int, default=40, help="held-out windows evaluated (spread over the songs)")
    p.add_argument("--split", default="test")
    p.add_argument("--sampler-steps", type=int, help="sampler steps at evaluation (default: each model's)")
    p.add_argument("--models-dir", help="model store (Whisper for UniSinger's PER)")
    p.add_argument("--speaker-model", help="store model for UniSinger's speaker similarity (default ecapa-voxceleb; "
                                            "ge2e-resemblyzer where ECAPA cannot be had)")
    p.add_argument("--only", nargs="*", help="system names to run (default all)")
    p.add_argument("--threads", type=int, help="torch threads (default torch's); 1 gives per-core figures")
    p.add_argument("--steps", type=int, help="train every model this many steps instead of sizing by --minutes")
    p.add_argument("--backbone", help="stage-A run for SongEcho stage B (default OUT/songecho)")
    p.add_argument("--f0-encoding", choices=["log", "bins"], help="f0 input of SongEcho stage B and UniSinger "
                   "(default the config's: log)")
    p.add_argument("--checkpoints", type=int, default=4, help="checkpoints written per run (evenly spaced)")
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept per run (--checkpoints are written: keep "
                   "them all to read a metric against the step)")
    p.add_argument("--lr", nargs="*", default=[], metavar="MODEL=LR",
                   help="peak learning rate per model name (e.g. songecho_melody=1e-3); default the config's")
    p.add_argument("--set", nargs="*", default=[], metavar="SYSTEM.FIELD=VALUE", dest="model_set",
                   help="model-config field for one system (its name in --only, or its model name), e.g. "
                        "unisinger.content_alignment_bias=4; VALUE is read as YAML")
    args = p.parse_args()
    try:
        args.lr = {k: float(v) for k, v in (item.split("=", 1) for item in args.lr)}
    except ValueError:
        p.error(f"--lr takes MODEL=LR pairs, got {args.lr}")
    sets: dict[str, dict] = {}
    for item in args.model_set:
        key, eq, value = item.partition("=")
        system, dot, field = key.partition(".")
        if not (eq and dot and system and field):
            p.error(f"--set takes SYSTEM.FIELD=VALUE, got {item!r}")
        sets.setdefault(system, {})[field] = yaml.safe_load(value)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.jsonl"
    results = {}
    sized: dict[str, tuple[float, int]] = {}
    for name, label, model in SYSTEMS:
        if args.only and label not in args.only:
            continue
        backbone = out / "songecho" if name == "songecho_melody" else None
        if args.backbone and name == "songecho_melody":
            backbone = Path(args.backbone)
        if args.f0_encoding and name in ("songecho_melody", "unisinger"):
            model = {**model, "f0_encoding": args.f0_encoding}
        model = {**model, **sets.get(name, {}), **sets.get(label, {})}
        run = out / label
        if not (run / "checkpoints").exists():
            calib = out / "calib" / label
            if args.steps:  # a fixed step count (to repeat another run's): no calibration
                per_step, steps = None, args.steps
            elif name in sized:  # the ablation's variants share one step count: same data and steps
                per_step, steps = sized[name]
            else:
                train(name, calib, args.corpus, args.calibrate, args, model, backbone)
                per_step = step_seconds(calib, args.batch)
                minutes = args.ablation_minutes if name == "songecho_melody" and args.ablation_minutes else args.minutes
                steps = max(8, int(minutes * 60 / per_step) // 4 * 4)
                sized[name] = (per_step, steps)
            t = train(name, run, args.corpus, steps, args, model, backbone)
            entry = {"system": label, "steps": steps, "calib_s_per_step": per_step, "train_s": t}
            with log.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        ev = out / f"{label}.eval"
        start = time.perf_counter()
        info = evaluate_run(run, ev, data=args.corpus, split=args.split, metrics=[*HEADLINE[name], "rtf"],
                            limit=args.limit, store_dir=args.models_dir, steps=args.sampler_steps, progress=False,
                            quiet=True, speaker_model=args.speaker_model)
        results[label] = {"table": info["table"], "eval_s": time.perf_counter() - start, "windows": info["windows"],
                          "songs": info["songs"], "step": info["checkpoint_step"]}
        print(f"== {label} (step {info['checkpoint_step']}, {info['windows']} windows of {info['songs']} songs, "
              f"eval {results[label]['eval_s']:.0f} s)\n{info['table']}\n", flush=True)
    with (out / "summary.md").open("w") as f:
        for label, r in results.items():
            f.write(f"### {label} (step {r['step']}, {r['windows']} windows, {r['songs']} songs)\n\n```\n{r['table']}\n```\n\n")


if __name__ == "__main__":
    main()
