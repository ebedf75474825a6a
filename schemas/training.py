"""The training run's config: one validated model, YAML on disk, recorded in every run folder.

``TrainConfig`` = the generator (a :data:`GeneratorConfig`, tagged by ``name``) + data + optimisation +
checkpointing. Unknown keys anywhere are errors that name the key, like the pipeline's config. Importable
without torch (the CLI validates a config before any model is built).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from songcorpus.schemas.train_models import MODEL_CONFIGS, GeneratorConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    split: Literal["train", "valid", "test"] = "train"
    codec: str = Field("embedded", description="which codec's latents/tokens to read: 'embedded' (lite) or a full-"
                       "profile codec name from the samples' JSON 'codecs' (sao_vae, encodec, dac)")
    window_s: float | None = Field(None, gt=0, description="model length in seconds; windows are cropped or padded "
                                   "to it (default: the corpus's window length)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per rank")
    prefetch: int = Field(4, ge=1, description="batches each worker keeps ready")
    max_phonemes: int = Field(256, ge=1)
    normalise_latents: bool = Field(True, description="z-score latents per channel and stem with train-split stats")


class OptimConfig(_Section):
    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * min_lr_ratio at the last step")
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)


class CheckpointConfig(_Section):
    every: int = Field(100, ge=1, description="write a checkpoint every N optimiser steps (and at the end)")
    keep: int = Field(3, ge=1, description="keep the last K checkpoints")


class TrainConfig(_Section):
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

    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TrainConfigError(ValueError):
    """A training config that does not validate, with every problem named by its key."""


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_train_config(model: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The defaults for ``model``, then the YAML file, then ``overrides`` (the CLI's flags)."""
    if model not in MODEL_CONFIGS:
        raise TrainConfigError(f"unknown model {model!r}; choose one of {', '.join(sorted(MODEL_CONFIGS))}")
    data: dict[str, Any] = {"model": {"name": model}}
    if path is not None:
        text = Path(path).read_text()
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise TrainConfigError(f"{path}: a training config is a YAML mapping")
        data = _merge(data, loaded)
        data["model"] = {**data.get("model", {}), "name": data.get("model", {}).get("name", model)}
        if data["model"]["name"] != model:
            raise TrainConfigError(f"{path} configures model {data['model']['name']!r}, the command trains {model!r}")
    data = _merge(data, overrides or {})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise TrainConfigError(f"training config {path or '(defaults)'}: {problems}") from None


# Fields added to a model's schema after checkpoints were written, whose new default changes the architecture:
# (model name, a field every complete dump of that model has, the new field, the value that reproduces the model
# a dump without it describes).
ADDED_ARCHITECTURE_FIELDS: tuple[tuple[str, str, str, Any], ...] = (
    ("unisinger", "content_bottleneck", "content_lifter", 0),            # 2026-12-03: content was the whole frame
    ("unisinger", "content_bottleneck", "content_alignment_bias", 0.0),  # 2026-12-03: no alignment bias
)


def saved_train_config(saved: dict[str, Any]) -> TrainConfig:
    """A config a checkpoint stored (a complete dump), read with the defaults it was written under: each field of
    :data:`ADDED_ARCHITECTURE_FIELDS` missing from the dump takes the value that reproduces the old model."""
    data = json.loads(json.dumps(saved))
    model = data.get("model") or {}
    for name, always, field, old in ADDED_ARCHITECTURE_FIELDS:
        if model.get("name") == name and always in model and field not in model:
            model[field] = old
    return TrainConfig.model_validate(data)


def dump_train_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
