"""Does a trained model use the f0 it is given? A paired held-out loss: the same batches and the same random draws
(timesteps, noise, dropout flags), scored once with the true f0 and once with each altered f0. A model that follows
the pitch loses when the melody is transposed; one that only learned voicing loses nothing until the voicing goes.

Why this exists next to RPA: RPA of generated audio stays at its floor both for a model that ignores pitch and for
one that uses it but samples poorly; the loss difference separates the two, needs no sampler or decoder, and is
cheap enough to read at every checkpoint.

Reads: a training run of a model that takes ``f0`` (SongEcho stage B, UniSinger), through
:func:`songcorpus.train.generate.load_run` (EMA weights, latent stats, its corpus); held-out windows of ``split``
of that corpus (or ``data``). Writes nothing. Fails with :class:`F0UseError` for a model that reads no f0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

F0Variant = Callable[[torch.Tensor], torch.Tensor]

SEMITONES = 4.0
VOICING_HZ = 200.0
VARIANTS: dict[str, F0Variant] = {
    "true": lambda f0: f0,
    f"+{SEMITONES:g} semitones": lambda f0: f0 * 2.0 ** (SEMITONES / 12.0),
    "voicing only": lambda f0: (f0 > 0).to(f0.dtype) * VOICING_HZ,  # a constant pitch where voiced
    "nulled": lambda f0: torch.zeros_like(f0),  # every frame unvoiced
}


class F0UseError(ValueError):
    """The run cannot be probed (its model reads no f0), with what to do."""


@dataclass(frozen=True)
class F0Use:
    """Held-out loss per batch for each f0 variant; ``delta(v)`` is the paired increase over the true f0."""

    run: str
    step: int
    losses: dict[str, np.ndarray]

    def delta(self, variant: str) -> np.ndarray:
        return self.losses[variant] - self.losses["true"]

    def table(self) -> str:
        lines = [f"{'f0 given':16s} {'loss':>8s} {'minus true':>11s} {'batch min':>10s} {'batch max':>10s}"]
        for name, loss in self.losses.items():
            d = self.delta(name)
            lines.append(f"{name:16s} {loss.mean():8.4f} {d.mean():+11.4f} {d.min():+10.4f} {d.max():+10.4f}")
        return "\n".join(lines)


def _probe_config(model: torch.nn.Module, name: str) -> None:
    """Condition every sample on f0: no melody dropout (stage B), every sample in the SVC task (UniSinger)."""
    if name == "songecho_melody":
        model.config = model.config.model_copy(update={"melody_dropout": 0.0})
    elif name == "unisinger":
        model.config = model.config.model_copy(update={"curriculum_song_only": 0.0, "curriculum_ramp_end": 0.0,
                                                       "svc_max_share": 1.0})


def f0_use(run: str | Path, data: str | None = None, split: str = "test", checkpoint: str | None = None,
           batches: int = 6, batch_size: int = 8, seed: int = 0) -> F0Use:
    """The paired loss of ``run`` on ``batches`` held-out batches with each of :data:`VARIANTS`."""
    from songcorpus.train.data import BatchBuilder, CorpusView, ShardStream, StepOrder
    from songcorpus.train.generate import caption_encoder, load_run
    from songcorpus.train.text import PhonemeTokenizer
    from songcorpus.train.trainer import to_tensors

    loaded = load_run(run, checkpoint)
    name, model = loaded.name, loaded.model
    keys = [k for k in model.batch_keys if k != "mask"]
    if "f0" not in keys:
        raise F0UseError(f"run {run} trains {name}, which reads no f0; probe a SongEcho stage-B or UniSinger run")
    view = CorpusView(data or str(loaded.corpus), split, keys, window_s=loaded.window_s)
    stats = dict(loaded.stats)
    if "reference_vocals_latents" in keys:
        stats["reference_vocals_latents"] = stats["vocals_latents"]
    stream = ShardStream(BatchBuilder(view, caption_encoder(), PhonemeTokenizer(), stats),
                         StepOrder(len(view), seed, batch_size))
    held_out = [to_tensors(stream.batch(i), "cpu") for i in range(batches)]
    _probe_config(model, name)
    total = loaded.config.steps
    losses: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with torch.no_grad():
        for i, batch in enumerate(held_out):
            for variant, alter in VARIANTS.items():
                altered = {**batch, "f0": alter(batch["f0"].float())}
                draws = torch.Generator().manual_seed(seed * 1000 + i)
                loss, _ = model.loss(altered, generator=draws, step=total - 1, total_steps=total)
                losses[variant].append(float(loss))
    return F0Use(str(run), loaded.step, {k: np.asarray(v) for k, v in losses.items()})


# ---------------------------------------------------------------------------------------------
# how much of the target the pitch can explain at all: a linear read of the corpus, no model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PitchShare:
    """Held-out R² of the normalised vocal latents read linearly from voicing alone and from voicing plus pitch
    bins; ``pitch`` is what the pitch adds. A small ``pitch`` means an MSE-trained model gains little from
    following the melody until everything larger is learned: why short runs learn voicing first."""

    voicing: float
    voicing_and_pitch: float
    frames: tuple[int, int]  # (train, held-out) voiced-or-not frames read

    @property
    def pitch(self) -> float:
        return self.voicing_and_pitch - self.voicing


def ridge_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             ridge: float = 1e-3) -> float:
    """R² on (test_x, test_y) of a ridge regression fitted on the train pair (rows = frames; an intercept is
    added): 1 - SSE / SST summed over every output column, SST about the train mean."""
    def with_bias(x: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((len(x), 1)), x])

    a, b = with_bias(train_x), with_bias(test_x)
    w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ train_y)
    sse = float(((test_y - b @ w) ** 2).sum())
    sst = float(((test_y - train_y.mean(axis=0)) ** 2).sum())
    return 1.0 - sse / sst


def _frames(view, stats: dict, batches: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(f0 per latent frame (N,), normalised vocal latents (N, C)) of ``batches`` batches, padding dropped. The
    100 Hz f0 is pooled to the latent rate: voiced when most of a latent frame's f0 frames are, at their mean."""
    from songcorpus.train.data import BatchBuilder, ShardStream, StepOrder

    stream = ShardStream(BatchBuilder(view, latent_stats=stats), StepOrder(len(view), seed, batch_size))
    f0s, latents = [], []
    for i in range(min(batches, max(1, len(view) // batch_size))):
        batch = stream.batch(i)
        lat, f0, mask = (np.asarray(batch[k], dtype=np.float64) for k in ("vocals_latents", "f0", "mask"))
        hop = f0.shape[1] // lat.shape[1]
        pooled = f0[:, : hop * lat.shape[1]].reshape(len(f0), lat.shape[1], hop)
        voiced = (pooled > 0).mean(axis=2) > 0.5
        hz = np.where(voiced, pooled.sum(axis=2) / np.maximum((pooled > 0).sum(axis=2), 1), 0.0)
        keep = mask > 0
        f0s.append(hz[keep])
        latents.append(lat[keep])
    return np.concatenate(f0s), np.concatenate(latents)


def voicing_pitch_features(f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of ``f0`` (N,) Hz: (the voiced flag (N, 1), the flag plus the pitch bins the models' ``bins``
    encoding reads (N, bins + 1))."""
    from songcorpus.train.models.blocks import f0_bin_features

    bins = f0_bin_features(torch.from_numpy(np.asarray(f0, dtype=np.float64))[None, :].float())[0].T.double().numpy()
    return bins[:, -1:], bins


def pitch_share(corpus: str, latent_stats: dict, window_s: float, splits: tuple[str, str] = ("train", "test"),
                batches: int = 12, batch_size: int = 8, seed: int = 0) -> PitchShare:
    """:class:`PitchShare` of ``corpus``: fitted on ``splits[0]``, read on ``splits[1]``. ``latent_stats`` is a
    run's (``load_run(run).stats``), so the latents are the ones that run's loss sees."""
    from songcorpus.train.data import CorpusView

    keys = ["f0", "vocals_latents"]
    (fit_f0, fit_y), (read_f0, read_y) = (
        _frames(CorpusView(corpus, split, keys, window_s=window_s), latent_stats, batches, batch_size, seed)
        for split in splits)
    (fit_v, fit_vp), (read_v, read_vp) = voicing_pitch_features(fit_f0), voicing_pitch_features(read_f0)
    return PitchShare(ridge_r2(fit_v, fit_y, read_v, read_y), ridge_r2(fit_vp, fit_y, read_vp, read_y),
                      (len(fit_y), len(read_y)))
