"""The training loop: one for all four generators, on one process, torchrun DDP or Ray Train workers.

Reads: a corpus (train/data.py resolves folders, indexes, globs, shard lists), a :class:`TrainConfig`.
Writes, into the run folder ``RUN``:
  config.yaml          the validated config (a re-run with another config is refused, except ``steps``)
  provenance.json      what the run trained on: every shard's sha256, the catalog's, the code version
  latent_stats.npz     per-channel latent mean/std per stem over the training split (inverted before decoding)
  log.jsonl            one line per step: loss terms, lr, grad norm, samples/s, fraction of time waiting for data
  checkpoints/step-N/  see train/checkpoint.py
Composes: the loader (train/data.py), the LR function, AdamW and EMA (train/optim.py), checkpoints
(train/checkpoint.py). Re-running the same command resumes from the latest checkpoint and ends with the
same parameters an uninterrupted run has: the batch of a step is a pure function of (seed, step), and so is
every random draw of the loss (a torch.Generator seeded per step and micro-batch), so nothing but the saved
model, EMA and optimiser states carries from one step to the next.

Distributed: the global batch is cut into ``world_size * grad_accum`` micro-batches; micro-batch ``m`` (rank
``m // grad_accum``, accumulation step ``m % grad_accum``) holds the same samples and draws the same noise
whatever the world size, and gradients are averaged over all of them (one all-reduce of a flat buffer per
step). So 2 ranks x 1 micro-batch equal 1 rank x 2 micro-batches up to float summation order.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from songcorpus.io.atomic import atomic_write_bytes
from songcorpus.io.atomic import sha256_file as artefact_sha256
from songcorpus.schemas.training import TrainConfig, load_train_config, saved_train_config
from songcorpus.train.checkpoint import (
    CheckpointError,
    begin_checkpoint,
    clear_leftovers,
    latest_checkpoint,
    load_checkpoint,
    load_latent_stats,
    publish_checkpoint,
    rng_state,
    save_latent_stats,
    set_rng_state,
    write_rank_rng,
)
from songcorpus.train.data import (
    BatchBuilder,
    CorpusView,
    DataError,
    ShardStream,
    StepOrder,
    check_model_fits,
    latent_statistics,
)
from songcorpus.train.optim import EMA, learning_rate, make_optimizer

MODEL_CLASSES = {
    "samuel": ("songcorpus.train.models.samuel", "SAMUeL"),
    "lada_band": ("songcorpus.train.models.lada_band", "LadaBand"),
    "songecho": ("songcorpus.train.models.songecho", "SongEcho"),
    "songecho_melody": ("songcorpus.train.models.songecho", "SongEchoMelody"),
    "unisinger": ("songcorpus.train.models.unisinger", "UniSinger"),
}


class TrainError(RuntimeError):
    """A run that cannot start or continue, with what to do."""


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


def init_distributed() -> Dist:
    """From torchrun's / Ray Train's environment (RANK, WORLD_SIZE, LOCAL_RANK); gloo on CPU, NCCL on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and os.environ.get("SONGCORPUS_DEVICE", "auto") != "cpu"
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return Dist(rank, world, device)


def build_model(config: TrainConfig, backbone: Path | None = None) -> torch.nn.Module:
    import importlib

    module, cls = MODEL_CLASSES[config.model.name]
    model_cls = getattr(importlib.import_module(module), cls)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    if config.model.name == "songecho_melody":
        if backbone is None:
            raise TrainError("SongEcho stage B (--stage melody) needs --backbone RUN, a finished stage-A run")
        return model_cls(config.model, backbone=load_backbone(backbone))
    return model_cls(config.model)


def load_backbone(run: Path) -> torch.nn.Module:
    """The EMA weights of a SongEcho stage-A run's latest checkpoint, as a SongEcho model."""
    found = latest_checkpoint(run)
    if found is None:
        raise TrainError(f"--backbone {run} has no checkpoint; train stage A first (songcorpus train --model songecho)")
    cfg = load_train_config("songecho", run / "config.yaml")
    state, _ = load_checkpoint(found[1], "songecho", 0)
    model = build_model(cfg)
    model.load_state_dict(state["ema"])
    return model


def step_seed(seed: int, step: int, micro: int) -> int:
    digest = hashlib.sha256(f"{seed}:{step}:{micro}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def code_version() -> str:
    from songcorpus import __version__

    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    return f"{__version__}+{rev[:12]}{'-dirty' if dirty else ''}" if rev else __version__


def sha256_file(path: Path) -> str:
    return artefact_sha256(path)[0]


def provenance(view: CorpusView, data: Any) -> dict[str, Any]:
    """The corpus a run trained on: shard and catalog sha256s (the checkpoint can always be traced back). For a
    corpus URL they are its publication marker's (the loader read only shards it lists), so nothing is
    downloaded again and the same corpus gives the same provenance on a local disk and on an object store."""
    from songcorpus.io import storage

    marker = storage.read_published(str(data)) if isinstance(data, str) and storage.is_url(data) else None
    if marker is not None:
        objects = marker["objects"]
        shards = {s: objects[f"shards/{storage.basename(s)}"]["sha256"] for s in view.index.shards}
        catalog = {rel.rsplit("/", 1)[1]: objects[rel]["sha256"] for rel in sorted(objects)
                   if rel.startswith("catalog/") and rel.endswith(".parquet")}
    else:
        shards = {s: storage.sha256_of(s)[0] if storage.is_url(s) else sha256_file(Path(s)) for s in view.index.shards}
        catalog = {}
    if marker is None and isinstance(data, (str, Path)) and (Path(data) / "catalog").is_dir():
        catalog = {p.name: sha256_file(p) for p in sorted((Path(data) / "catalog").glob("*.parquet"))}
    corpus = hashlib.sha256(json.dumps([sorted(shards.values()), catalog], sort_keys=True).encode()).hexdigest()
    return {"corpus_sha256": corpus, "split": view.split, "n_samples": len(view),
            "shards": {Path(k).name: v for k, v in shards.items()}, "shard_paths": list(shards),
            "catalog": catalog, "code_version": code_version()}


def to_tensors(batch: dict[str, Any], device: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in batch.items():
        out[k] = torch.from_numpy(np.ascontiguousarray(v)).to(device) if isinstance(v, np.ndarray) else v
    return out


def micro_batches(batch: dict[str, Any], n: int) -> list[dict[str, Any]]:
    size = len(batch["keys"])
    per = size // n
    parts = []
    for i in range(n):
        sl = slice(i * per, (i + 1) * per)
        parts.append({k: (v[sl] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()})
    return parts


def all_reduce_mean(params: list[torch.nn.Parameter], world: int) -> None:
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone()
        offset += n


def uses_bf16(config: TrainConfig, device: str) -> bool:
    """Whether the loss runs under bf16 autocast: ``precision`` bf16, or auto on CUDA."""
    return config.precision == "bf16" or (config.precision == "auto" and device.startswith("cuda"))


def optimiser_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA, params: list[torch.nn.Parameter],
                   tensors: dict[str, Any], config: TrainConfig, step: int, dist: Dist,
                   autocast: bool) -> tuple[dict[str, float], float, float]:
    """One optimiser step of this rank's share of the global batch: the step's LR, its micro-batches' losses
    (each with the generator seeded by (seed, step, micro-batch), under bf16 autocast when ``autocast``) and
    gradients, their all-reduce across ranks, clipping, AdamW and the EMA. Returns the loss terms (averaged over
    micro-batches and ranks), the LR and the gradient norm before clipping. The loop calls it once per step;
    bench/gpu_check.py times it on synthetic batches."""
    lr = learning_rate(step, config.steps, config.optim)
    for group in optimizer.param_groups:
        group["lr"] = lr
    micro = config.grad_accum
    terms_sum: dict[str, float] = {}
    for a, part in enumerate(micro_batches(tensors, micro)):
        g = torch.Generator(device=dist.device).manual_seed(step_seed(config.seed, step, dist.rank * micro + a))
        with torch.autocast(device_type=dist.device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
            loss, terms = model.loss(part, generator=g, step=step, total_steps=config.steps)
        (loss / micro).backward()
        for k, v in terms.items():
            terms_sum[k] = terms_sum.get(k, 0.0) + float(v) / micro
    if dist.world_size > 1:
        all_reduce_mean(params, dist.world_size)
        reduced = torch.tensor([terms_sum[k] for k in sorted(terms_sum)], dtype=torch.float64)
        torch.distributed.all_reduce(reduced)
        terms_sum = {k: float(v) / dist.world_size for k, v in zip(sorted(terms_sum), reduced, strict=True)}
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ema.update(model, step)
    return terms_sum, lr, grad_norm


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` whole: a kill while writing leaves the old file, never a truncated one (a resume reads
    provenance.json, and log.jsonl holds the run's history)."""
    atomic_write_bytes(path, text.encode())


def log_lines_before(path: Path, step: int) -> list[str]:
    """The lines of log.jsonl for steps before ``step`` (a resumed run writes the later ones again). A line that
    does not parse (cut off by a kill or a full disk) is dropped rather than stopping the resume."""
    keep = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            logged = int(json.loads(line)["step"])
        except (ValueError, TypeError, KeyError):
            continue
        if logged < step:
            keep.append(line)
    return keep


def prepare_run(run: Path, config: TrainConfig, dist: Dist) -> None:
    """Record the config; a different config (other than ``steps``) in an existing run folder is refused."""
    path = run / "config.yaml"
    if path.exists():
        # read as the complete dump it is: a field added to the schema since takes the value the run was
        # trained with, not today's default (schemas/training.py ADDED_ARCHITECTURE_FIELDS)
        try:
            old = saved_train_config(yaml.safe_load(path.read_text()) or {}, str(path))
        except (yaml.YAMLError, ValueError) as exc:
            raise TrainError(f"{path} is not a readable training config ({exc}); restore it from the run's "
                             f"checkpoint config or choose a new --out") from None
        if old.model_copy(update={"steps": config.steps}).digest() != config.digest():
            new = config.model.model_dump()
            changed = sorted(k for k, v in old.model.model_dump().items() if new.get(k) != v)
            hint = f" (model fields that differ: {', '.join(changed)})" if changed else ""
            raise TrainError(f"{run} was started with another config ({old.model.name}, {path}){hint}; resume with "
                             f"the same config (only --steps may change) or choose a new --out")
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        write_atomic(path, config.to_yaml())
    dist.barrier()


def train(config: TrainConfig, data: Any, run: str | Path, dist: Dist | None = None, progress: bool = True,
          backbone: Path | None = None, on_checkpoint: Callable[[int, dict[str, float]], None] | None = None,
          stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) ``run`` to ``config.steps`` optimiser steps. ``stop_after`` ends early after that
    many steps of this call (tests: a run cut short, like a kill, then resumed)."""
    dist = dist or init_distributed()
    run = Path(run)
    prepare_run(run, config, dist)
    model = build_model(config, backbone).to(dist.device)
    keys = tuple(dict.fromkeys([*model.batch_keys, *[k for k in model.optional_keys if k != "mask"]]))
    view = CorpusView(data, config.data.split, [k for k in keys if k not in ("mask", "has_reference")],
                      codec=config.data.codec, window_s=config.data.window_s)
    check_model_fits(view.first_meta, config.model, view.suffixes, config.data.codec)
    if config.global_batch % (dist.world_size * config.grad_accum):
        raise TrainError(f"global_batch {config.global_batch} does not split into {dist.world_size} ranks x "
                         f"{config.grad_accum} micro-batches; make it a multiple of {dist.world_size * config.grad_accum}")

    if dist.main:
        clear_leftovers(run)  # a killed run's half-written checkpoint folder: never read, removed
    stats_path = run / "latent_stats.npz"
    latent_keys = [k for k in keys if "latents" in k and k in view.suffixes]
    if config.data.normalise_latents and latent_keys:
        if dist.main and not stats_path.exists():
            save_latent_stats(stats_path, latent_statistics(view, latent_keys))
        dist.barrier()
        stats = load_latent_stats(stats_path, latent_keys, fix="remove it and run the same command again: it is "
                                  "recomputed from the run's corpus (the same corpus gives the same statistics)")
        for ref_key, base in (("reference_latents", "accompaniment_latents"), ("reference_vocals_latents", "vocals_latents")):
            if ref_key in keys and base in stats:
                stats[ref_key] = stats[base]
    else:
        stats = {}
    caption = phonemes = None
    if "text_emb" in keys:
        from songcorpus.train.text import CaptionEncoder

        caption = CaptionEncoder()
    if "phonemes" in keys:
        from songcorpus.train.text import PhonemeTokenizer

        phonemes = PhonemeTokenizer(vocab_size=getattr(config.model, "phoneme_vocab_size", 256))
    builder = BatchBuilder(view, caption, phonemes, stats, config.data.max_phonemes)
    order = StepOrder(len(view), config.seed, config.global_batch)

    prov_path = run / "provenance.json"
    prov = provenance(view, data)
    if prov_path.exists():
        try:
            old_sha = str(json.loads(prov_path.read_text())["corpus_sha256"])
        except (ValueError, TypeError, KeyError) as exc:
            raise TrainError(f"{prov_path} is not a readable provenance record ({type(exc).__name__}: {exc}); "
                             f"restore it, or remove it to record this corpus as the run's") from None
        if old_sha != prov["corpus_sha256"]:
            raise TrainError(f"{run} trained on another corpus (sha256 {old_sha[:12]}, now "
                             f"{prov['corpus_sha256'][:12]}): resuming would mix data; use a new --out")
    elif dist.main:
        write_atomic(prov_path, json.dumps(prov, indent=1, sort_keys=True) + "\n")

    params = model.trainable_parameters()
    optimizer = make_optimizer(params, config.optim)
    ema = EMA(model, config.optim.ema_decay)
    start = 0
    found = latest_checkpoint(run)
    if found is not None:
        state, rng = load_checkpoint(found[1], config.model.name, dist.rank)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        ShardStream(builder, order, dist.rank, dist.world_size).check_resume(state["loader"])
        start = int(state["step"])
        if rng is not None:
            set_rng_state(rng)
    if start >= config.steps:
        return {"step": start, "resumed_from": start, "done": True}

    stream = ShardStream(builder, order, dist.rank, dist.world_size, start_step=start, end_step=config.steps)
    loader = torch.utils.data.DataLoader(stream.torch_dataset(), batch_size=None, num_workers=config.data.num_workers,
                                         prefetch_factor=config.data.prefetch if config.data.num_workers else None,
                                         persistent_workers=False)
    log_path = run / "log.jsonl"
    if dist.main:
        write_atomic(log_path, "".join(ln + "\n" for ln in log_lines_before(log_path, start)))
    bar = None
    if progress and dist.main:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=start, desc=f"train {config.model.name}", unit="step")
    autocast = uses_bf16(config, dist.device)
    per_rank = config.global_batch // dist.world_size
    last: dict[str, float] = {}
    done = 0
    wait_start = time.perf_counter()
    model.train()
    for batch in loader:
        step = int(batch["step"])
        if step != start + done:
            raise TrainError(f"the loader handed out step {step} where step {start + done} was due: batches out of "
                             f"order would make a resumed run differ from an uninterrupted one (a bug in "
                             f"train/data.py ShardStream.steps)")
        t_data = time.perf_counter() - wait_start
        t0 = time.perf_counter()
        tensors = to_tensors(batch, dist.device)
        terms_sum, lr, grad_norm = optimiser_step(model, optimizer, ema, params, tensors, config, step, dist, autocast)
        t_step = time.perf_counter() - t0
        last = {**terms_sum, "lr": lr, "grad_norm": grad_norm,
                "samples_per_s": per_rank * dist.world_size / max(t_step + t_data, 1e-9),
                "data_wait_frac": t_data / max(t_step + t_data, 1e-9)}
        if dist.main and (step % config.log_every == 0 or step + 1 == config.steps):
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"step": step, **{k: round(v, 6) for k, v in last.items()}}) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}")
        done += 1
        finished = step + 1
        if finished % config.checkpoint.every == 0 or finished == config.steps or (stop_after and done >= stop_after):
            save_checkpoint(run, finished, model, ema, optimizer, stream, config, prov, dist)
            if on_checkpoint is not None:
                on_checkpoint(finished, last)
        if stop_after and done >= stop_after:
            break
        wait_start = time.perf_counter()
    if bar is not None:
        bar.close()
    return {"step": start + done, "resumed_from": start, "done": start + done >= config.steps, **last}


def save_checkpoint(run: Path, step: int, model: torch.nn.Module, ema: EMA, optimizer: torch.optim.Optimizer,
                    stream: ShardStream, config: TrainConfig, prov: dict[str, Any], dist: Dist) -> None:
    if dist.main:
        begin_checkpoint(run, step)
    dist.barrier()
    write_rank_rng(run, step, dist.rank)
    dist.barrier()
    if dist.main:
        state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "model_name": config.model.name, "loader": stream.state_dict(step),
                 "config": json.loads(json.dumps(config.model_dump(mode="json"))),
                 "world_size": dist.world_size, "corpus_sha256": prov["corpus_sha256"],
                 "code_version": prov["code_version"]}
        publish_checkpoint(run, step, state, config.checkpoint.keep)
    dist.barrier()


__all__ = ["CheckpointError", "DataError", "Dist", "TrainError", "build_model", "init_distributed", "optimiser_step", "rng_state",
           "train", "uses_bf16"]
