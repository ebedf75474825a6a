"""The training commands: ``train`` (one of the four generators on a curated corpus, through a launcher in
train/launch.py), ``generate`` (audio from a run's EMA weights), ``train-report`` (plot and summarise a run's log)
and ``evaluate`` (score a run, or a folder of outputs, against its reference systems).

Reads a corpus, a training config, a run folder and the model store; writes the run folder, audio files, the
report's picture and the evaluation tables. Needs the train extra (torch). Fails with exit 2 for an unreadable or
invalid config, bad data, a run or checkpoint that cannot be loaded, a request the model cannot serve or an unreadable
log (each command declares its errors below for songcorpus/cli/exit_codes.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from songcorpus.schemas.config_base import ConfigError

MODEL_NAMES = {"samuel": "samuel", "lada-band": "lada_band", "songecho": "songecho", "unisinger": "unisinger"}


def cmd_train(args: argparse.Namespace) -> int:
    """Validate the config and the inputs here, then hand over to a launcher (train/launch.py); a config that
    cannot be read or does not validate is a ConfigError (exit 2)."""
    from songcorpus.schemas.training import load_train_config
    from songcorpus.train import launch

    name = MODEL_NAMES[args.model]
    backbone = None
    if args.model == "songecho" and args.stage == "melody":
        name = "songecho_melody"
        if not args.backbone:
            raise ConfigError("--stage melody needs --backbone RUN (a stage-A run of --model songecho)")
        backbone = Path(args.backbone)
    overrides: dict = {}
    for flag, value in (("--steps", args.steps), ("--checkpoint-every", args.checkpoint_every)):
        if value is not None and value < 1:  # checked here: the config's validation would blame the config file
            raise ConfigError(f"{flag} {value}: must be at least 1")
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.checkpoint_every is not None:
        overrides["checkpoint"] = {"every": args.checkpoint_every}
    config = load_train_config(name, args.config, overrides)
    run = Path(args.out)
    if args.launcher == "local":
        result = launch.launch_local(config, args.data, run, progress=not args.no_progress, backbone=backbone)
    elif args.launcher == "torchrun":
        return launch.launch_torchrun(config, args.data, run, args.workers, backbone=backbone,
                                      progress=not args.no_progress)
    else:
        result = launch.launch_ray(config, args.data, run, args.workers, backbone=backbone, address=args.address,
                                   node_ip=args.node_ip_address)
    print(f"trained {name} to step {result.get('step')} in {args.out} (loss {result.get('loss', float('nan')):.4f})")
    return 0


def train_input_errors() -> tuple[type[Exception], ...]:
    from songcorpus.train.checkpoint import CheckpointError
    from songcorpus.train.data import DataError
    from songcorpus.train.trainer import TrainError

    return DataError, CheckpointError, TrainError


def cmd_generate(args: argparse.Namespace) -> int:
    """Load the run's EMA weights and the corpus codec, prepare the inputs as the corpus was, write audio."""
    from songcorpus.train.generate import Request, generate

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    req = Request(out=Path(args.out), vocals=path(args.vocals), melody=path(args.melody),
                  reference=path(args.reference), caption=args.caption, lyrics=args.lyrics, task=args.task,
                  duration_s=args.duration, inputs_are_stems=args.inputs_are_stems, steps=args.steps,
                  guidance=args.guidance, seed=args.seed, stems=args.stems)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    # SIGTERM (a scheduler's, a timeout's) unwinds like Ctrl-C, so the scratch folder is removed
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        info = generate(args.run, req, checkpoint=args.checkpoint, device=device, progress=not args.no_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"generated {info['duration_s']:.2f} s at {info['sample_rate']} Hz with {info['model']} (EMA weights of "
          f"step {info['step']}; {info['windows']} window(s) of {info['window_s']:g} s): "
          + ", ".join(info["written"]))
    return 0


def generate_input_errors() -> tuple[type[Exception], ...]:
    from songcorpus.train.checkpoint import CheckpointError
    from songcorpus.train.data import DataError
    from songcorpus.train.generate import GenerateError
    from songcorpus.train.run import RunError

    return RunError, GenerateError, CheckpointError, DataError


def cmd_train_report(args: argparse.Namespace) -> int:
    from songcorpus.train.report import train_report

    print(train_report(Path(args.run), Path(args.png) if args.png else None))
    if args.png:
        print(f"wrote {args.png}")
    return 0


def train_report_input_errors() -> tuple[type[Exception], ...]:
    from songcorpus.train.report import ReportError

    return (ReportError,)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a run on held-out windows (or a folder of outputs) with its reference systems; write the tables."""
    from songcorpus.train.eval.evaluate import evaluate_folders, evaluate_run
    from songcorpus.train.eval.heldout import EvalError

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    common = {"metrics": metrics, "store_dir": args.models_dir, "seed": args.seed, "resamples": args.bootstrap,
              "set_resamples": args.fad_bootstrap, "device": device, "progress": not args.no_progress,
              "speaker_model": args.speaker_model, "keep_audio": args.keep_audio}
    if args.generated:
        if args.run or not args.reference:
            raise EvalError("--generated DIR scores a folder against --reference DIR: give both, and no RUN")
        info = evaluate_folders(args.generated, args.reference, args.out, system=args.system, **common)
    else:
        if not args.run:
            raise EvalError("give RUN (a `songcorpus train --out` folder), or --generated DIR --reference DIR")
        info = evaluate_run(args.run, args.out, data=args.data, split=args.split, checkpoint=args.checkpoint,
                            limit=args.limit, steps=args.steps, task=args.task, **common)
    print(f"wrote {info['outputs']['parquet']} and {info['outputs']['duckdb']} ({info['rows']} rows, "
          f"{info['failed_rows']} with a reason instead of a value)")
    return 0


def evaluate_input_errors() -> tuple[type[Exception], ...]:
    from songcorpus.train.checkpoint import CheckpointError
    from songcorpus.train.data import DataError
    from songcorpus.train.eval.heldout import EvalError

    return EvalError, CheckpointError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    """Add train, generate, train-report and evaluate to the command's subparsers."""
    p = sub.add_parser("train", help="train one of the four generators on a curated corpus",
                       description="Train SAMUeL, LaDA-Band, SongEcho or UniSinger on the shards of a curated corpus "
                                   "(a folder written by `songcorpus curate`, a wids index, a glob or shard paths). "
                                   "The run folder holds the config, what it trained on, a JSONL log and "
                                   "checkpoints; re-running the same command resumes from the latest checkpoint, and "
                                   "a larger --steps continues a finished run.",
                       epilog="Configs: YAML validated against schemas/training.py (unknown keys are errors).")
    p.add_argument("--model", required=True, choices=sorted(MODEL_NAMES))
    p.add_argument("--data", required=True, metavar="CORPUS", help="corpus folder, index JSON, glob or shard")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (created; reused to resume)")
    p.add_argument("--config", metavar="FILE", help="training config YAML (defaults: the compact model)")
    p.add_argument("--steps", type=int, help="optimiser steps in total (overrides the config)")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps")
    p.add_argument("--launcher", choices=["local", "torchrun", "ray"], default="local",
                   help="local: this process; torchrun: DDP over --workers processes; ray: Ray Train workers")
    p.add_argument("--workers", type=int, default=2, help="processes for torchrun / Ray Train (default 2)")
    p.add_argument("--address", help="with --launcher ray: a Ray cluster to join (default: a private local one); "
                                     "--out and --data must then be paths every node reaches")
    p.add_argument("--node-ip-address", metavar="IP", help="with --address: this machine's address in the cluster "
                                                           "(default: 127.0.0.1 for a head on 127.0.0.1, else Ray's guess)")
    p.add_argument("--stage", choices=["backbone", "melody"], default="backbone",
                   help="SongEcho: backbone (stage A, text-to-song) or melody (stage B, needs --backbone)")
    p.add_argument("--backbone", metavar="RUN", help="SongEcho stage B: the finished stage-A run")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train, input_errors=train_input_errors)

    p = sub.add_parser("generate", help="generate audio with a trained run (EMA weights)",
                       description="Generate with a run of `songcorpus train`: SAMUeL and LaDA-Band an accompaniment "
                                   "for --vocals; SongEcho a song for --caption (stage B: following the f0 of "
                                   "--melody's vocals); UniSinger --task song (--caption, --lyrics, --melody for "
                                   "duration and singer) or --task svc (--vocals sung by the --reference singer). "
                                   "Inputs pass through the corpus's own stages (ingest, stems for a mix, VAD, f0, "
                                   "the embedded codec and codebook named by the corpus lineage); the output is "
                                   "decoded by that codec (Griffin-Lim from log-mel) at the corpus sample rate. "
                                   "Long inputs are generated window by window at the run's window length and "
                                   "concatenated.")
    p.add_argument("run", metavar="RUN", help="a run folder written by `songcorpus train --out RUN`")
    p.add_argument("--out", required=True, metavar="FILE", help="output .wav or .flac")
    p.add_argument("--vocals", metavar="FILE", help="a vocal stem (used as given): SAMUeL, LaDA-Band, UniSinger svc")
    p.add_argument("--melody", metavar="FILE", help="a song (mix) whose vocal f0 SongEcho stage B follows; "
                                                    "UniSinger song: duration and singer")
    p.add_argument("--reference", metavar="FILE", help="LaDA-Band: a song whose accompaniment is the style reference; "
                                                       "UniSinger: the target singer's song")
    p.add_argument("--inputs-are-stems", action="store_true",
                   help="--melody/--reference are already stems (vocals; LaDA-Band's reference: accompaniment), "
                        "not mixes to separate")
    p.add_argument("--caption", metavar="TEXT", help="caption / tags (SongEcho, UniSinger; optional for LaDA-Band)")
    p.add_argument("--lyrics", metavar="TEXT", help="lyrics, spread over the windows (SongEcho, UniSinger song)")
    p.add_argument("--task", choices=["song", "svc"], help="UniSinger: song generation or voice conversion")
    p.add_argument("--duration", type=float, metavar="S", help="SongEcho stage A without --melody: seconds (default "
                                                                  "one window)")
    p.add_argument("--checkpoint", metavar="STEP", help="a checkpoint step of RUN or a step folder (default: latest)")
    p.add_argument("--steps", type=int, metavar="N", help="sampler steps (default: the model's)")
    p.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0): same inputs and seed, same output")
    p.add_argument("--stems", action="store_true", help="also write OUT.vocals / OUT.accompaniment (SongEcho, UniSinger)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one step per window) on stderr")
    p.set_defaults(func=cmd_generate, input_errors=generate_input_errors)

    p = sub.add_parser("train-report", help="plot a training run's log and print a summary",
                       description="Draw loss terms, learning rate, gradient norm, samples/s and the data-wait "
                                   "fraction against the step from RUN/log.jsonl, and print first/last/min/mean "
                                   "of each.")
    p.add_argument("run", metavar="RUN", help="a run folder written by `songcorpus train --out RUN`")
    p.add_argument("--png", metavar="FILE", help="write the plot here")
    p.set_defaults(func=cmd_train_report, input_errors=train_report_input_errors)

    p = sub.add_parser("evaluate", help="score a run on held-out songs (or a folder of outputs) between floor and ceiling",
                       description="Generate every held-out window of a split with RUN and score it with the papers' "
                                   "metrics, next to reference systems on the same windows: ground_truth (the real "
                                   "stems), codec_ceiling (the real stems through the run's codec), floor (another "
                                   "held-out song's stems) and untrained (the architecture at its initial weights). "
                                   "With --generated DIR --reference DIR, score any system's files against "
                                   "references of the same name (NAME.wav, optional NAME.vocals.wav / "
                                   "NAME.accompaniment.wav, NAME.lyrics.txt, NAME.caption.txt). Writes "
                                   "OUT/metrics.parquet and OUT/metrics.duckdb (table metrics, view summary with "
                                   "95%% bootstrap intervals) and prints the summary. Metrics whose model is "
                                   "not in the model store, or that are undefined for a window, are rows with "
                                   "their reason.")
    p.add_argument("run", metavar="RUN", nargs="?", help="a run folder written by `songcorpus train --out RUN`")
    p.add_argument("--out", required=True, metavar="EVAL", help="output folder for the tables")
    p.add_argument("--data", metavar="CORPUS", help="corpus folder, index or shards (default: the run's corpus)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="held-out split (default test)")
    p.add_argument("--checkpoint", metavar="STEP", help="a checkpoint step of RUN or a step folder (default: latest)")
    p.add_argument("--metrics", metavar="LIST", help="comma-separated metric groups or metrics (default: the model's "
                                                     "headline set; groups: melody, onset_f1, chroma_cosine, "
                                                     "hpcp_similarity, fad, kl, per, clap_score, "
                                                     "speaker_similarity, aesthetics, rtf)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N windows of the split")
    p.add_argument("--steps", type=int, metavar="N", help="sampler steps (default: the model's)")
    p.add_argument("--task", default="svc", choices=["song", "svc"], help="UniSinger's task (default svc)")
    p.add_argument("--generated", metavar="DIR", help="score this folder of another system's outputs instead of a run")
    p.add_argument("--reference", metavar="DIR", help="with --generated: the reference files, matched by name")
    p.add_argument("--system", metavar="NAME", help="with --generated: the system's name (default: the folder's)")
    p.add_argument("--models-dir", metavar="DIR", help="model store for Whisper, CLAP, ECAPA, SongEval, Audiobox "
                                                       "(default $SONGCORPUS_MODELS or ~/.cache/songcorpus/models)")
    p.add_argument("--speaker-model", metavar="NAME", help="store model for speaker similarity: ecapa-voxceleb "
                   "(default) or ge2e-resemblyzer (weights in the resemblyzer wheel; scores of the two differ in scale)")
    p.add_argument("--seed", type=int, default=0, help="generation and bootstrap seed (default 0)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap draws of per-window means")
    p.add_argument("--fad-bootstrap", type=int, default=50, metavar="N", help="bootstrap draws of FAD (each recomputes "
                                                                              "it; default 50)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--keep-audio", type=int, default=16, metavar="N",
                   help="keep the evaluated system's stems of the first N windows as FLAC under OUT/audio, to listen "
                        "to with `songcorpus view CORPUS --eval OUT` (default 16, about 1.5 MB per 10 s window; 0: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.set_defaults(func=cmd_evaluate, input_errors=evaluate_input_errors)
