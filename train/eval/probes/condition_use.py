"""Does an accompaniment model (SAMUeL, LaDA-Band) read the vocals it is given, and their timing? A paired held-out
loss (probes/paired_loss.py), as ``f0_use`` does for f0: the same batches and random draws, scored with the true
vocals and with the vocals altered.

Why this exists next to onset F1 and chroma: those stay near their floor both for a model that ignores its
vocals and for one that reads them but samples poorly. A model that follows the vocals loses when they are
another song's; one that also follows their timing loses when they are moved by half a second.

Variants (each applied to the model's vocal key, ``vocals_latents`` or ``vocals_tokens``, the mask unchanged):
- "another song's vocals": the batch's vocals rolled by one sample (held-out windows of different songs);
- "vocals moved 0.5 s": rolled in time by half a second, wrapping around;
- "vocals nulled" (SAMUeL only): the zero condition its CFG dropout trains.

Reads: a training run through :func:`songcorpus.train.run.load_run` (EMA weights, latent stats, its
corpus); held-out batches of ``split`` (``paired_loss.held_out_batches``). Writes nothing. Fails with
:class:`~songcorpus.train.eval.probes.paired_loss.ProbeError` for a model that reads no vocals.
"""

from __future__ import annotations

from pathlib import Path

import torch

from songcorpus.train.eval.probes.paired_loss import PairedLoss, ProbeError, held_out_batches, paired_losses

VOCAL_KEYS = {"samuel": "vocals_latents", "lada_band": "vocals_tokens"}
MOVE_S = 0.5


def variants(name: str, frames_per_s: float) -> dict[str, object]:
    """Alterations of the vocal tensor (B, T, ...) for model ``name``."""
    shift = max(1, int(round(MOVE_S * frames_per_s)))
    out = {"true": lambda v: v,
           "another song's vocals": lambda v: torch.roll(v, 1, dims=0),
           f"vocals moved {MOVE_S:g} s": lambda v: torch.roll(v, shift, dims=1)}
    if name == "samuel":
        out["vocals nulled"] = torch.zeros_like
    return out


def condition_use(run: str | Path, data: str | None = None, split: str = "test", checkpoint: str | None = None,
                  batches: int = 6, batch_size: int = 8, seed: int = 0) -> PairedLoss:
    """The paired held-out loss of a SAMUeL or LaDA-Band run with each of :func:`variants` (``PairedLoss.delta``:
    the increase over the true vocals, per batch)."""
    from songcorpus.schemas.train_models import LATENT_RATE_HZ
    from songcorpus.train.run import load_run

    if batch_size < 2:
        raise ProbeError("the vocal-condition probe needs batch_size >= 2 (another song's vocals come from the batch)")
    loaded = load_run(run, checkpoint)
    key = VOCAL_KEYS.get(loaded.name)
    if key is None:
        raise ProbeError(f"run {run} trains {loaded.name}; the vocal-condition probe reads "
                         f"{' or '.join(VOCAL_KEYS)} runs")
    held_out = held_out_batches(loaded, data, split, batches, batch_size, seed)
    alter = {v: (lambda b, f=fn: ({**b, key: f(b[key])}, {})) for v, fn in variants(loaded.name, LATENT_RATE_HZ).items()}
    return PairedLoss(str(run), loaded.step, paired_losses(loaded.model, held_out, alter, loaded.config.steps, seed))
