"""The training run's config: one validated model, YAML on disk, recorded in every run folder.

``TrainConfig`` = the generator (a :data:`GeneratorConfig`, tagged by ``name``) + data + optimisation +
checkpointing. Reads: a YAML file and override mappings on top of a model's defaults (:func:`load_train_config`),
or a checkpoint's complete dump (:func:`saved_train_config`). Writes: nothing (``config.to_yaml()`` is what the
run folder records). Needs: pydantic and PyYAML, not torch (the CLI validates a config before any model is built).
Fails: :class:`~songcorpus.schemas.config_base.ConfigError` naming the file, the key and the problem, like the
pipeline's config (``schemas/config_base.py``); unknown keys anywhere are errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from songcorpus.schemas.config_base import ConfigError, ConfigModel, Layer, read_yaml
from songcorpus.schemas.train_models import MODEL_CONFIGS, GeneratorConfig


class DataConfig(ConfigModel):
    split: Literal["train", "valid", "test"] = "train"
    codec: str = Field("embedded", description="which codec's latents/tokens to read: 'embedded' (lite) or a full-"
                       "profile codec name from the samples' JSON 'codecs' (sao_vae, encodec, dac)")
    window_s: float | None = Field(None, gt=0, description="model length in seconds; windows are cropped or padded "
                                   "to it (default: the corpus's window length)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per rank")
    prefetch: int = Field(4, ge=1, description="batches each worker keeps ready")
    max_phonemes: int = Field(256, ge=1)
    normalise_latents: bool = Field(True, description="z-score latents per channel and stem with train-split stats")


class OptimConfig(ConfigModel):
    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * min_lr_ratio at the last step")
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)


class CheckpointConfig(ConfigModel):
    every: int = Field(100, ge=1, description="write a checkpoint every N optimiser steps (and at the end)")
    keep: int = Field(3, ge=1, description="keep the last K checkpoints")


class TrainConfig(ConfigModel):
    model: GeneratorConfig
    steps: int = Field(1000, ge=1, description="optimiser steps in total (a re-run with more continues)")
    global_batch: int = Field(8, ge=1, description="samples per optimiser step, over all ranks and accumulation")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step on each rank")
    seed: int = 0
    log_every: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    @model_validator(mode="after")
    def _batch_splits(self) -> TrainConfig:
        if self.global_batch % self.grad_accum:
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of grad_accum {self.grad_accum}")
        m = self.model
        if (m.name == "unisinger" and m.content_source == "latents" and m.content_lifter
                and self.data.codec != "embedded"):
            raise ValueError(f"model.content_lifter {m.content_lifter} lifters log-mel frames (the embedded codec); "
                             f"data.codec {self.data.codec!r} has latents whose channels are not frequencies: set "
                             "model.content_lifter: 0, or model.content_source: units")
        return self


def load_train_config(model: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The defaults for ``model``, then the YAML file, then ``overrides`` (the CLI's flags); validated once."""
    if model not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(sorted(MODEL_CONFIGS))}")
    layers = [Layer(f"model {model!r} defaults", {"model": {"name": model}})]
    if path is not None:
        user = read_yaml(path)
        section = user.data.get("model")
        named = section.get("name", model) if isinstance(section, dict) else model
        if named != model:
            raise ConfigError(f"{user.source}: model.name: configures model {named!r}, the command trains {model!r}")
        layers.append(user)
    if overrides:
        layers.append(Layer("overrides", overrides))
    return TrainConfig.from_layers(layers)


# Fields added to a model's schema after checkpoints were written, whose new default changes the architecture:
# (model name, a field every complete dump of that model has, the new field, the value that reproduces the model
# a dump without it describes).
ADDED_ARCHITECTURE_FIELDS: tuple[tuple[str, str, str, Any], ...] = (
    ("unisinger", "content_bottleneck", "content_lifter", 0),            # 2026-12-03: content was the whole frame
    ("unisinger", "content_bottleneck", "content_alignment_bias", 0.0),  # 2026-12-03: no alignment bias
)


def saved_train_config(saved: dict[str, Any], source: str = "stored training config") -> TrainConfig:
    """A config a run folder or checkpoint stored (a complete dump), read with the defaults it was written under:
    each field of :data:`ADDED_ARCHITECTURE_FIELDS` missing from the dump takes the value that reproduces the old
    model. ``source`` names it in a ConfigError."""
    data = json.loads(json.dumps(saved))
    model = data.get("model") or {}
    for name, always, field, old in ADDED_ARCHITECTURE_FIELDS:
        if model.get("name") == name and always in model and field not in model:
            model[field] = old
    return TrainConfig.from_layers([Layer(source, data, is_file=True)])

