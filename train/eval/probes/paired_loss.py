"""The paired held-out loss the probes read: the same held-out batches and the same random draws (timesteps, noise,
dropout flags), scored once as given and once per altered variant, so a difference is the variant's and not the
draws'. ``f0_use`` alters the f0 or nulls a condition, ``condition_use`` alters the vocals; ``content_alignment``
reads the same batches with the same draws.

Reads: a loaded run (train/run.py ``LoadedRun``: its model, latent stats and corpus) and ``batches`` batches of a
split of its corpus (or another corpus) through the training loader (train/data.py), as the run's loss reads them.
Writes nothing. Fails with :class:`ProbeError` where a probe cannot read a run (the probes raise it by name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from songcorpus.train.run import LoadedRun


class ProbeError(ValueError):
    """The run cannot be probed (its model lacks the condition the probe alters), with what to do."""


@dataclass(frozen=True)
class PairedLoss:
    """Held-out loss per batch for each variant; ``delta(v)`` is the paired increase over the true conditions."""

    run: str
    step: int
    losses: dict[str, np.ndarray]

    def delta(self, variant: str) -> np.ndarray:
        return self.losses[variant] - self.losses["true"]

    def table(self) -> str:
        w = max(16, *(len(n) for n in self.losses))
        lines = [f"{'f0 given':{w}s} {'loss':>8s} {'minus true':>11s} {'batch min':>10s} {'batch max':>10s}"]
        for name, loss in self.losses.items():
            d = self.delta(name)
            lines.append(f"{name:{w}s} {loss.mean():8.4f} {d.mean():+11.4f} {d.min():+10.4f} {d.max():+10.4f}")
        return "\n".join(lines)


def held_out_batches(loaded: LoadedRun, data: str | None, split: str, batches: int, batch_size: int,
                     seed: int) -> list[dict]:
    """``batches`` batches of ``split`` as the run's loss reads them (its latent stats; the reference window's
    latents normalised like the vocals), tensors on the CPU."""
    from songcorpus.train.data import BatchBuilder, CorpusView, ShardStream, StepOrder
    from songcorpus.train.text import PhonemeTokenizer, caption_encoder
    from songcorpus.train.trainer import to_tensors

    keys = [k for k in loaded.model.batch_keys if k != "mask"]
    view = CorpusView(data or str(loaded.corpus), split, keys, window_s=loaded.window_s)
    stats = dict(loaded.stats)
    if "reference_vocals_latents" in keys:
        stats["reference_vocals_latents"] = stats["vocals_latents"]
    stream = ShardStream(BatchBuilder(view, caption_encoder(), PhonemeTokenizer(), stats),
                         StepOrder(len(view), seed, batch_size))
    return [to_tensors(stream.batch(i), "cpu") for i in range(batches)]


def batch_draws(seed: int, batch: int) -> torch.Generator:
    """The generator of the loss's random draws for held-out batch ``batch``: every variant of the batch, and every
    probe reading it, gets the same draws."""
    return torch.Generator().manual_seed(seed * 1000 + batch)


def paired_losses(model: torch.nn.Module, held_out: list[dict], variants: dict[str, Callable[[dict], tuple[dict, dict]]],
                  total_steps: int, seed: int) -> dict[str, np.ndarray]:
    """The held-out loss per batch under each variant (batch -> (the batch to score, extra ``loss`` keywords)),
    every variant of a batch with the same draws (seeded per batch), at the run's last step."""
    losses: dict[str, list[float]] = {v: [] for v in variants}
    with torch.no_grad():
        for i, batch in enumerate(held_out):
            for variant, alter in variants.items():
                scored, extra = alter(batch)
                loss, _ = model.loss(scored, generator=batch_draws(seed, i), step=total_steps - 1,
                                     total_steps=total_steps, **extra)
                losses[variant].append(float(loss))
    return {k: np.asarray(v) for k, v in losses.items()}
