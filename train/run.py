"""A trained run as a thing you load: its config, the EMA weights of a checkpoint, its latent statistics and the
corpus it trained on, checked, as ``songcorpus generate``, ``songcorpus evaluate`` and the research probes read it.

Reads: a run folder (``config.yaml``, ``provenance.json``, ``latent_stats.npz``, ``checkpoints/step-N/``; see
train/trainer.py) and the corpus it names (``provenance.json`` lists the shard paths; the corpus folder is the
one above ``shards/``: its ``config.yaml`` is the pipeline config, ``codec/codebook.npy`` the codebook, whose
sha256 must equal ``embedded_codec.codebook_sha256`` of the corpus's samples).
Writes: nothing.
Needs: torch and the model classes (train/models/), the embedded codec's codebook loader
(transforms/models/embedded_codec.py).
Fails with :class:`RunError` naming the problem: a missing run, config or checkpoint, a checkpoint of another
model or a corrupt one (train/checkpoint.py's CheckpointError), a codec other than the embedded one, a corpus
that is gone or was altered, a codebook whose sha256 differs from the corpus's, missing latent statistics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from songcorpus.schemas.training import TrainConfig, load_train_config, saved_train_config


class RunError(ValueError):
    """A training run that cannot be loaded, with what to do."""


@dataclass
class LoadedRun:
    """A trained run ready to sample: its config, the EMA weights of one checkpoint in ``model``, its latent
    statistics, and the corpus it trained on with that corpus's pipeline config, sample metadata and codebook."""

    path: Path
    config: TrainConfig
    model: torch.nn.Module
    step: int
    checkpoint: Path
    corpus: Path
    pipeline: Any  # PipelineConfig of the corpus
    sample_meta: dict[str, Any]
    codebook: np.ndarray
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.model.name

    @property
    def sample_rate(self) -> int:
        return int(self.sample_meta["sample_rate"])

    @property
    def window_s(self) -> float:
        return float(self.config.data.window_s or self.sample_meta["duration_s"])

    @property
    def latent_rate(self) -> float:
        return float(self.sample_meta["embedded_codec"]["latent_rate_hz"])

    @property
    def token_rate(self) -> float:
        return float(self.sample_meta["embedded_codec"]["token_rate_hz"])


def find_checkpoint(run: Path, checkpoint: str | None) -> tuple[int, Path]:
    """The step folder to load: the latest, ``checkpoint`` as a step number, or as a folder path."""
    from songcorpus.train.checkpoint import STEP_DIR, list_checkpoints

    found = list_checkpoints(run)
    if checkpoint is None:
        if not found:
            raise RunError(f"run {run} has no checkpoint (no {run / 'checkpoints'}/step-N); train it first "
                           f"with `songcorpus train ... --out {run}`")
        return found[-1]
    if checkpoint.isdigit():
        for step, path in found:
            if step == int(checkpoint):
                return step, path
        have = ", ".join(str(s) for s, _ in found) or "none"
        raise RunError(f"run {run} has no checkpoint at step {int(checkpoint)} (it has: {have})")
    path = Path(checkpoint)
    m = STEP_DIR.match(path.name)
    if not path.is_dir() or m is None:
        raise RunError(f"--checkpoint {checkpoint}: neither a step number of {run} nor a step-NNNNNNNN folder")
    return int(m.group(1)), path


def corpus_of(run: Path) -> tuple[Path, dict[str, Any]]:
    """The corpus folder a run trained on (from provenance.json) and its first sample's JSON."""
    from songcorpus.train.data import ShardIndex, read_members

    prov_path = run / "provenance.json"
    if not prov_path.exists():
        raise RunError(f"run {run} has no provenance.json: it does not name its corpus (was it trained?)")
    shards = [Path(p) for p in json.loads(prov_path.read_text()).get("shard_paths", [])]
    present = [p for p in shards if p.is_file()]
    if not present:
        raise RunError(f"the corpus run {run} trained on is gone: none of its shards exists "
                       f"({', '.join(map(str, shards[:2])) or 'none listed'}); generation needs its codec")
    corpus = present[0].parent.parent if present[0].parent.name == "shards" else present[0].parent
    index = ShardIndex.scan([str(present[0])])
    if not index.samples or "json" not in index.samples[0].members:
        raise RunError(f"shard {present[0]} holds no songcorpus sample")
    return corpus, json.loads(read_members(index.samples[0], ["json"])["json"])


def load_run(run: str | Path, checkpoint: str | None = None, device: str = "cpu") -> LoadedRun:
    """Everything generation and evaluation need from a run, checked: EMA weights, stats, the corpus codec and
    codebook."""
    import yaml

    from songcorpus.schemas.config import PipelineConfig
    from songcorpus.train.checkpoint import CheckpointError, load_checkpoint, load_latent_stats
    from songcorpus.transforms.models.embedded_codec import CODEC_NAME, load_codebook

    run = Path(run)
    if not (run / "config.yaml").exists():
        raise RunError(f"{run} is not a training run folder (no config.yaml); give the --out of "
                       f"`songcorpus train`")
    text = yaml.safe_load((run / "config.yaml").read_text()) or {}
    name = (text.get("model") or {}).get("name")
    config = load_train_config(name, run / "config.yaml")
    step, ckpt = find_checkpoint(run, checkpoint)
    try:
        state, _ = load_checkpoint(ckpt, config.model.name, 0)
    except CheckpointError as exc:  # corrupt, not a checkpoint, or another model's
        raise RunError(f"cannot generate with run {run} ({config.model.name}): {exc}") from None
    if config.data.codec != "embedded":
        raise RunError(f"run {run} trained on codec {config.data.codec!r}; generation decodes the embedded "
                       f"codec only (a full-profile codec decoder needs its weights)")
    corpus, meta = corpus_of(run)
    pipeline = PipelineConfig.model_validate(yaml.safe_load((corpus / "config.yaml").read_text()))
    emb = meta.get("embedded_codec")
    if emb is None:
        raise RunError(f"corpus {corpus}: its samples (spec {meta.get('spec_version')}) do not name their "
                       f"embedded codec; re-curate it with this version")
    if emb.get("codec") != CODEC_NAME or emb.get("config_hash") != pipeline.codec.digest():
        raise RunError(f"corpus {corpus}: its samples' codec ({emb.get('codec')}, config "
                       f"{emb.get('config_hash')}) is not the one its config.yaml describes "
                       f"({CODEC_NAME}, {pipeline.codec.digest()}); the corpus folder was altered")
    try:
        codebook = load_codebook(corpus / "codec" / "codebook.npy", emb["codebook_sha256"])
    except (OSError, ValueError) as exc:
        raise RunError(f"corpus codebook: {exc}") from None
    from songcorpus.train.trainer import build_model

    model_config = saved_train_config(state["config"], f"checkpoint {ckpt}") if "config" in state else config
    if model_config.model.name == "songecho_melody":  # the EMA state holds the frozen backbone too
        from songcorpus.train.models.songecho import SongEchoMelody

        model = SongEchoMelody(model_config.model)
    else:
        model = build_model(model_config)
    try:
        model.load_state_dict(state["ema"])
    except (KeyError, RuntimeError) as exc:
        raise RunError(f"checkpoint {ckpt}: its EMA weights do not fit the model its config describes "
                       f"({str(exc)[:200]})") from None
    model.to(device).eval()
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    latent_keys = [k for k in ("vocals_latents", "accompaniment_latents") if k in model.batch_keys]
    if config.data.normalise_latents and latent_keys:
        stats_path = run / "latent_stats.npz"
        if not stats_path.exists():
            raise RunError(f"run {run} has no latent_stats.npz: its latents cannot be normalised")
        try:  # every key the model reads, checked: a missing one would decode unscaled latents without a word
            stats = load_latent_stats(stats_path, latent_keys, channels=pipeline.codec.n_mels,
                                      fix="restore it, or remove it and re-run the run's `songcorpus train` "
                                          "command, which recomputes it from the corpus")
        except CheckpointError as exc:
            raise RunError(f"cannot generate with run {run}: {exc}") from None
    return LoadedRun(run, model_config, model, step, ckpt, corpus, pipeline, meta, codebook, stats)
