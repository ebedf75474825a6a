"""What every metric module shares: the typed "metric unavailable" outcome, audio to mono at a rate, the cosine
of two embeddings, and model-store access.

A metric that cannot be computed for an input (no voiced reference frames, too few embedding frames for a
covariance, no reference onsets...) raises :class:`MetricUnavailable` with the metric's name and a reason;
it never returns a made-up number and never drops the row. Functions with several outputs return
``dict[str, MetricResult]``, so one undefined output (voicing false alarm on an all-voiced reference)
does not hide the others. :func:`measure` turns any scalar metric call into a :class:`MetricResult`, the
shape the evaluator writes as one row (value, or None with the reason).

Models that do not ship in a package come from the model store (transforms/models/store.py) through
:func:`store_model_folder`: the registry entry, its kind checked, every file verified by sha256; a
missing or altered model is a ModelError naming the model and how to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from songcorpus.transforms.models.registry import StoreModel


class MetricUnavailable(Exception):  # noqa: N818 - an outcome, not a failure: the row records it with its reason
    """The metric is undefined for this input; ``reason`` says why (recorded as the row's reason)."""

    def __init__(self, metric: str, reason: str) -> None:
        super().__init__(f"{metric} unavailable: {reason}")
        self.metric = metric
        self.reason = reason


@dataclass(frozen=True)
class MetricResult:
    """One metric outcome: a value, or None with the reason it could not be computed."""

    metric: str
    value: float | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None

    @classmethod
    def of(cls, metric: str, value: float) -> MetricResult:
        return cls(metric, float(value))

    @classmethod
    def unavailable(cls, metric: str, reason: str) -> MetricResult:
        return cls(metric, None, reason)


def measure(metric: str, fn: Callable[..., float], *args: Any, **kwargs: Any) -> MetricResult:
    """``fn(*args, **kwargs)`` as a MetricResult: its value, or its MetricUnavailable reason. Any other
    error propagates (a bug or a bad input is not an unavailable metric)."""
    try:
        return MetricResult.of(metric, fn(*args, **kwargs))
    except MetricUnavailable as exc:
        return MetricResult.unavailable(metric, exc.reason)


def mono(audio: np.ndarray) -> np.ndarray:
    """float32 mono from (samples,) or (samples, channels); anything else is a ValueError."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {x.shape}")
    return np.ascontiguousarray(x)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 at ``target`` Hz (soxr HQ, as the curation stages resample)."""
    import soxr

    x = mono(audio)
    if int(rate) != int(target) and x.size:
        x = soxr.resample(x, int(rate), int(target), quality="HQ").astype(np.float32, copy=False)
    return x


def cosine(a: np.ndarray, b: np.ndarray, eps: float) -> float:
    """Cosine similarity of two embedding vectors, ``<a, b> / max(|a| |b|, eps)``: speaker similarity and the CLAP
    score both read two embeddings this way (each with the eps its reference implementation uses)."""
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), eps))


def store_model_folder(name: str, kinds: tuple[str, ...], store_dir: str | Path | None = None
                       ) -> tuple[StoreModel, Path]:
    """The registry entry and verified folder of store model ``name`` (``store_dir``, else
    ``$SONGCORPUS_MODELS``, else ``~/.cache/songcorpus/models``); a model of another kind than ``kinds``
    is refused, naming what the metric loads."""
    from songcorpus.transforms.models.registry import ModelError
    from songcorpus.transforms.models.store import load_registry, store_model, store_root

    root = store_root(None if store_dir is None else str(store_dir))
    spec = store_model(name, load_registry(root))
    if kinds and spec.kind not in kinds:
        raise ModelError(f"this metric loads {' or '.join(kinds)} models; {spec.name} is {spec.kind or 'of no kind'} "
                         f"(choose another model: songcorpus models list)")
    return spec, spec.verified_folder(root)
