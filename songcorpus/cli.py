"""The ``songcorpus`` command: curate, rebuild, report, inspect, models, train, generate, train-report, demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from importlib import resources
from pathlib import Path

from songcorpus.schemas.config import load_config
from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.failures import JOB_FAULT_EXIT, JobFault, describe

DEMO_MANIFEST = "demo/manifest.jsonl"


def demo_manifest() -> str:
    return str(resources.files("songcorpus.pipelines").joinpath(DEMO_MANIFEST))


def _config_from_args(args: argparse.Namespace):
    overrides: dict = {"engine": {}}
    if getattr(args, "engine", None):
        overrides["engine"]["name"] = args.engine
    if getattr(args, "workers", None):
        overrides["engine"]["workers"] = args.workers
    if getattr(args, "address", None):
        overrides["engine"]["ray_address"] = args.address
    if getattr(args, "node_ip_address", None):
        overrides["engine"]["ray_node_ip"] = args.node_ip_address
    if getattr(args, "beam_option", None):
        overrides["engine"]["beam_options"] = args.beam_option
    if getattr(args, "cache_dir", None):
        overrides["cache_dir"] = args.cache_dir
    return load_config(args.profile, args.config, overrides)


def print_funnel(out: Path | str) -> None:
    from songcorpus.pipelines.sinks.catalog import read_funnel

    rows = read_funnel(out)
    total = sum(r[3] for r in rows)
    hours = sum(r[4] for r in rows)
    print(f"funnel for {out} ({total} inputs, {hours:.4f} h)")
    print(f"{'status':<9} {'stage':<9} {'reason':<20} {'tracks':>7} {'hours':>9}")
    for status, stage, code, n, h in rows:
        print(f"{status:<9} {stage:<9} {code:<20} {n:>7} {h:>9.4f}")
    import duckdb

    from songcorpus.io.storage import join
    from songcorpus.pipelines.sinks.catalog import local_catalog

    with local_catalog(out) as db:
        con = duckdb.connect(str(db), read_only=True)
        try:
            n_shards, n_windows = con.execute("SELECT (SELECT count(DISTINCT family) FROM shards), "
                                              "(SELECT count(*) FROM windows)").fetchone()
        finally:
            con.close()
    print(f"{n_windows} samples in {n_shards} shards under {join(out, 'shards')}; catalog: {join(out, 'catalog.duckdb')}")


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="lite", help="config profile to start from (default: lite)")
    p.add_argument("--config", help="YAML file whose keys override the profile (unknown keys are errors)")
    p.add_argument("--engine", choices=["ray", "beam"], help="execution engine (default from config: ray)")
    p.add_argument("--workers", type=int, help="parallel workers: local Ray CPUs or Beam direct workers")
    p.add_argument("--address", help="Ray cluster address, e.g. HEAD:6379 or ray://HEAD:10001 (default: start a "
                                     "private local Ray, whatever other Ray runs on the machine)")
    p.add_argument("--node-ip-address", metavar="IP", help="with --address: this machine's address in the cluster "
                                                           "(default: 127.0.0.1 for a head on 127.0.0.1, else Ray's guess)")
    p.add_argument("--beam-option", action="append", metavar="FLAG",
                   help="Beam pipeline option, repeatable, e.g. --beam-option=--runner=FlinkRunner")
    p.add_argument("--cache-dir", help="content-addressed cache (default OUT/.cache); share it between runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def _print_result(headline: str, result) -> None:
    counts = result.counts()
    print(f"{headline}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("accepted", "rejected", "failed")))
    print_funnel(result.out)


def cmd_curate(args: argparse.Namespace) -> int:
    from songcorpus.pipelines.curate import curate

    config = _config_from_args(args)
    result = curate(args.inputs, args.out, config, progress=not args.no_progress)
    _print_result(f"curated {len(result.decisions)} inputs in {result.seconds:.1f} s", result)
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from songcorpus.pipelines.curate import load_state, rebuild

    if args.config is None:
        config, _, _ = load_state(args.dir)
    else:
        config = load_config(args.profile, args.config)
    result = rebuild(args.dir, config, progress=not args.no_progress)
    _print_result(f"rebuilt {args.dir} in {result.seconds:.1f} s without re-running any stage", result)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from songcorpus.io.storage import PUBLISHED, is_url, read_published

    out = args.dir if is_url(args.dir) else Path(args.dir)
    if is_url(out) and read_published(out) is None:
        raise ConfigError(f"{out} holds no published corpus (no {PUBLISHED}: not curated, or a curate there is "
                          f"running or crashed); run `songcorpus curate ... --out {out}` to finish it")
    if not is_url(out) and not (out / "catalog.duckdb").exists():
        raise ConfigError(f"{out} has no catalog.duckdb; run `songcorpus curate ... --out {out}` first")
    print_funnel(out)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Render synthetic songs with stems and ground truth (pipelines/sources/synth.py), then a curate-ready manifest."""
    import time

    from songcorpus.pipelines.sources.synth import SynthError, synthesize

    t0 = time.perf_counter()
    try:
        rows = synthesize(args.n, Path(args.out), seed=args.seed, workers=args.workers, soundfont=args.soundfont,
                          start=args.start)
    except SynthError as exc:
        print(f"songcorpus: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")}
    print(f"synthesised {len(rows)} songs (seed {args.seed}) in {wall:.1f} s ({wall / max(len(rows), 1):.2f} s per "
          f"song on {args.workers} worker(s)); splits {splits}; manifest: {Path(args.out) / 'manifest.jsonl'}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from songcorpus.pipelines.readers.inspect_sample import SampleNotFound, inspect_sample

    try:
        meta = inspect_sample(Path(args.dir), args.key, Path(args.png) if args.png else None,
                              Path(args.listen) if args.listen else None)
    except SampleNotFound as exc:
        raise ConfigError(str(exc)) from None
    shown = {k: meta.get(k) for k in ("key", "source", "split", "start_s", "duration_s", "reference_key",
                                      "augmentation", "stems_method", "fields")}
    print(json.dumps(shown, indent=1, ensure_ascii=False))
    if args.png:
        print(f"wrote {args.png}")
    if args.listen:
        print(f"wrote WAVs (stems, and the embedded codec's decodes of latents and tokens) under {args.listen}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from songcorpus.transforms.models import store as ms

    root = ms.store_root(args.store)
    if args.action in ("list", "verify"):
        rows = ms.list_models(root)
        print(f"model store: {root}")
        for r in rows:
            print(f"  {r['name']:<26} {r['version']:<20} {r['where']:<28} {r['state']}")
        bad = [r for r in rows if r["state"] != "verified" and (args.action == "verify" or r["where"] != "store")]
        if args.action == "verify" and bad:
            print(f"songcorpus: {len(bad)} model(s) missing or not matching their checksums", file=sys.stderr)
            return 1
        return 0
    if not args.name:
        raise ConfigError(f"`songcorpus models {args.action}` needs a model NAME")
    if args.action == "pull":
        folder = ms.pull_model(args.name, root)
    else:
        if not args.path:
            raise ConfigError("`songcorpus models add NAME PATH`: PATH (the folder holding the files) is missing")
        if args.kind:
            folder = ms.register_model(args.name, Path(args.path), root, kind=args.kind, version=args.version,
                                       licence=args.licence)
        else:
            folder = ms.add_model(args.name, Path(args.path), root)
    print(f"{args.name}: verified and installed in {folder}")
    return 0


MODEL_NAMES = {"samuel": "samuel", "lada-band": "lada_band", "songecho": "songecho", "unisinger": "unisinger"}


def cmd_train(args: argparse.Namespace) -> int:
    """Validate the config and the inputs here, then hand over to a launcher (train/launch.py); a config that
    cannot be read or does not validate is a ConfigError, which main() prints (exit 2)."""
    from pathlib import Path

    from songcorpus.schemas.training import load_train_config
    from songcorpus.train import launch
    from songcorpus.train.checkpoint import CheckpointError
    from songcorpus.train.data import DataError
    from songcorpus.train.trainer import TrainError

    name = MODEL_NAMES[args.model]
    backbone = None
    if args.model == "songecho" and args.stage == "melody":
        name = "songecho_melody"
        if not args.backbone:
            print("songcorpus: --stage melody needs --backbone RUN (a stage-A run of --model songecho)", file=sys.stderr)
            return 2
        backbone = Path(args.backbone)
    overrides: dict = {}
    for flag, value in (("--steps", args.steps), ("--checkpoint-every", args.checkpoint_every)):
        if value is not None and value < 1:  # checked here: the config's validation would blame the config file
            print(f"songcorpus: {flag} {value}: must be at least 1", file=sys.stderr)
            return 2
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.checkpoint_every is not None:
        overrides["checkpoint"] = {"every": args.checkpoint_every}
    config = load_train_config(name, args.config, overrides)
    try:
        run = Path(args.out)
        if args.launcher == "local":
            result = launch.launch_local(config, args.data, run, progress=not args.no_progress, backbone=backbone)
        elif args.launcher == "torchrun":
            return launch.launch_torchrun(config, args.data, run, args.workers, backbone=backbone,
                                          progress=not args.no_progress)
        else:
            result = launch.launch_ray(config, args.data, run, args.workers, backbone=backbone, address=args.address,
                                       node_ip=args.node_ip_address)
    except (DataError, CheckpointError, TrainError) as exc:
        print(f"songcorpus: {exc}", file=sys.stderr)
        return 2
    print(f"trained {name} to step {result.get('step')} in {args.out} (loss {result.get('loss', float('nan')):.4f})")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Load the run's EMA weights and the corpus codec, prepare the inputs as the corpus was, write audio."""
    from songcorpus.train.checkpoint import CheckpointError
    from songcorpus.train.data import DataError
    from songcorpus.train.generate import GenerateError, Request, generate
    from songcorpus.train.run import RunError

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
    import signal

    # SIGTERM (a scheduler's, a timeout's) unwinds like Ctrl-C, so the scratch folder is removed
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        info = generate(args.run, req, checkpoint=args.checkpoint, device=device, progress=not args.no_progress)
    except (RunError, GenerateError, CheckpointError, DataError) as exc:
        print(f"songcorpus: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"generated {info['duration_s']:.2f} s at {info['sample_rate']} Hz with {info['model']} (EMA weights of "
          f"step {info['step']}; {info['windows']} window(s) of {info['window_s']:g} s): "
          + ", ".join(info["written"]))
    return 0


def cmd_train_report(args: argparse.Namespace) -> int:
    from songcorpus.train.report import ReportError, train_report

    try:
        print(train_report(Path(args.run), Path(args.png) if args.png else None))
    except ReportError as exc:
        print(f"songcorpus: {exc}", file=sys.stderr)
        return 2
    if args.png:
        print(f"wrote {args.png}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a run on held-out windows (or a folder of outputs) with its reference systems; write the tables."""
    from songcorpus.train.checkpoint import CheckpointError
    from songcorpus.train.data import DataError
    from songcorpus.train.eval.evaluate import evaluate_folders, evaluate_run
    from songcorpus.train.eval.heldout import EvalError

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    common = {"metrics": metrics, "store_dir": args.models_dir, "seed": args.seed, "resamples": args.bootstrap,
              "set_resamples": args.fad_bootstrap, "device": device, "progress": not args.no_progress,
              "speaker_model": args.speaker_model}
    try:
        if args.generated:
            if args.run or not args.reference:
                raise EvalError("--generated DIR scores a folder against --reference DIR: give both, and no RUN")
            info = evaluate_folders(args.generated, args.reference, args.out, system=args.system, **common)
        else:
            if not args.run:
                raise EvalError("give RUN (a `songcorpus train --out` folder), or --generated DIR --reference DIR")
            info = evaluate_run(args.run, args.out, data=args.data, split=args.split, checkpoint=args.checkpoint,
                                limit=args.limit, steps=args.steps, task=args.task, **common)
    except (EvalError, CheckpointError, DataError) as exc:
        print(f"songcorpus: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {info['outputs']['parquet']} and {info['outputs']['duckdb']} ({info['rows']} rows, "
          f"{info['failed_rows']} with a reason instead of a value)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.inputs = [demo_manifest()]
    return cmd_curate(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="songcorpus",
        description="Turn raw songs into WebDataset shards and a DuckDB catalog for music-generation training.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("curate", help="curate inputs into shards and a catalog",
                       description="Decode, standardise, score and classify every input, apply the config's gates, "
                                   "and write WebDataset shards plus a Parquet/DuckDB catalog with one row per "
                                   "input. Re-running the same command resumes: finished work is reused from the "
                                   "cache. INPUT may be a folder (scanned recursively), a glob, an audio file, a "
                                   "manifest (.csv/.jsonl/.parquet with a 'path' column) or a saved Hugging Face "
                                   "dataset folder (or hf:PATH).")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", required=True, help="output folder (shards/, catalog/, catalog.duckdb)")
    _add_engine_args(p)
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("rebuild", help="re-apply gates/shard settings from stored scores (no model runs)",
                       description="Re-decide every track of a curated folder with new gate thresholds, shard or "
                                   "split settings, and rewrite shards and catalog. No analysis stage runs: "
                                   "scores come from DIR/state. Changing analysis settings needs `curate`.")
    p.add_argument("dir", metavar="DIR", help="a folder written by `songcorpus curate --out DIR`")
    p.add_argument("--profile", default="lite", help="profile the new config starts from (default: lite)")
    p.add_argument("--config", help="YAML with the new thresholds (default: the folder's own config)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser("report", help="print the funnel of a curated folder",
                       description="Print the funnel of a curated folder: how many inputs, and how many hours of "
                                   "audio, were accepted, rejected (by which stage and gate) or failed (by which "
                                   "error), from DIR/catalog.duckdb.",
                       epilog="The same table is the DuckDB view `funnel`: "
                              "python -c \"import duckdb; print(duckdb.connect('DIR/catalog.duckdb').sql("
                              "'SELECT * FROM funnel'))\"; every input's row is in the table `tracks`.")
    p.add_argument("dir", metavar="DIR", help="a folder written by `songcorpus curate --out DIR`")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("synth", help="render synthetic songs with stems and ground truth",
                       description="Render N synthetic songs (key, tempo, chords, a melody on chord tones, lyrics, "
                                   "bass, a chord instrument, drums on the beat) into OUT/song_NNNN/ (vocal score, "
                                   "MIDI, vocals/accompaniment/mix FLAC, song.json ground truth) and OUT/manifest.jsonl "
                                   "for `songcorpus curate`. Same seed, same files. Needs the Debian packages "
                                   "festival, festvox-kallpc16k, festvox-kdlpc16k, fluidsynth and "
                                   "musescore-general-soundfont-small.")
    p.add_argument("n", type=int, metavar="N", help="how many songs")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="song i is drawn from (seed, i) (default 0)")
    p.add_argument("--start", type=int, default=0, help="index of the first song (default 0): extend a set")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    p.add_argument("--soundfont", metavar="FILE", help="a GM .sf2/.sf3 (default: $SONGCORPUS_SOUNDFONT or Debian's)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("inspect", help="show one sample (and draw it with --png)",
                       description="Read sample KEY of a curated folder straight from its shard (offsets from the "
                                   "catalog) and print its metadata; with --png, draw spectrograms of the mix and "
                                   "stems with the vocal f0, VAD segments, beats, downbeats and sections over them.")
    p.add_argument("dir", metavar="DIR", help="a folder written by `songcorpus curate --out DIR`")
    p.add_argument("key", metavar="KEY", help="a sample key (the `key` column of the catalog's windows table)")
    p.add_argument("--png", metavar="FILE", help="write the picture here")
    p.add_argument("--listen", metavar="DIR", help="write the stems as WAV, and the embedded codec's latents and tokens "
                                                    "decoded back to audio (Griffin-Lim), into DIR")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("models", help="list, verify, pull or add model weights in the model store",
                       description="The model store holds weights that do not ship in a package, each checked "
                                   "against the registry's sha256. list: every known model and its state; verify: "
                                   "the same, exit 1 if any is missing or altered; pull NAME: download where the "
                                   "network allows; add NAME PATH: install files copied in by hand (air-gapped); "
                                   "add NAME PATH --kind K --version V: register weights the registry does not know "
                                   "(a fine-tune), pinned by their sha256. Stages never download anything while "
                                   "they run.")
    p.add_argument("action", choices=["list", "verify", "pull", "add"])
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("path", nargs="?", metavar="PATH")
    p.add_argument("--store", metavar="DIR",
                   help="the model store (default: $SONGCORPUS_MODELS, else ~/.cache/songcorpus/models)")
    p.add_argument("--kind", help="with add: register a new model of this architecture family (htdemucs, "
                                  "ct2-whisper, encodec, dac, oobleck, ast, songeval, audiobox-aesthetics, ecapa, hubert)")
    p.add_argument("--version", default="1", help="with add --kind: the new model's version (default 1)")
    p.add_argument("--licence", default="unknown", help="with add --kind: the weights' licence")
    p.set_defaults(func=cmd_models)

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
    p.set_defaults(func=cmd_train)

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
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train-report", help="plot a training run's log and print a summary",
                       description="Draw loss terms, learning rate, gradient norm, samples/s and the data-wait "
                                   "fraction against the step from RUN/log.jsonl, and print first/last/min/mean "
                                   "of each.")
    p.add_argument("run", metavar="RUN", help="a run folder written by `songcorpus train --out RUN`")
    p.add_argument("--png", metavar="FILE", help="write the plot here")
    p.set_defaults(func=cmd_train_report)

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
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="curate the bundled demo corpus",
                       description="Curate the bundled demo corpus (songs with ground-truth stems, instrumentals, "
                                   "and speech clips that must be rejected) with the embedded defaults: local Ray, "
                                   "the lite profile, a DuckDB catalog.")
    p.add_argument("--out", default="songcorpus-demo", help="output folder (default: ./songcorpus-demo)")
    _add_engine_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, single-user Ray: no token prompt in logs
    for noisy in ("apache_beam", "ray", "ray.data"):
        # a worker's error reaches the user once, as the job's own message (schemas/failures.py), not also as
        # the engine's logged traceback
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"songcorpus: {exc}", file=sys.stderr)
        return 2
    except JobFault as exc:  # the machine or our code, not the input: one message, nothing published
        if args.verbose:
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        print(f"songcorpus: {exc}", file=sys.stderr)
        return JOB_FAULT_EXIT
    except FileNotFoundError as exc:
        print(f"songcorpus: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full, read-only or failing disk met outside a job (report, inspect, models...)
        if exc.errno is None:
            raise
        if args.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"songcorpus: {describe(exc)}", file=sys.stderr)
        return JOB_FAULT_EXIT
    except Exception as exc:  # noqa: BLE001 - top level: one clear line, not a traceback wall
        from songcorpus.io.storage import StorageError
        from songcorpus.schemas.failures import SourceError
        from songcorpus.transforms.models.registry import ModelError

        if isinstance(exc, SourceError | ModelError | StorageError):  # a bad input location: its one line
            print(f"songcorpus: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
