"""Does a trained model use the f0 it is given? A paired held-out loss: the same batches and the same random draws
(timesteps, noise, dropout flags), scored once with the true f0 and once with each altered f0. A model that follows
the pitch loses when the melody is transposed; one that only learned voicing loses nothing until the voicing goes.

Why this exists next to RPA: RPA of generated audio stays at its floor both for a model that ignores pitch and for
one that uses it but samples poorly; the loss difference separates the two, needs no sampler or decoder, and is
cheap enough to read at every checkpoint.

:func:`modality_use` asks the same of UniSinger's other SVC conditions, each nulled in turn.

Reads: a training run of a model that takes ``f0`` (SongEcho stage B, UniSinger), through
:func:`songcorpus.train.run.load_run` (EMA weights, latent stats, its corpus); held-out batches of ``split``
of that corpus (or ``data``), scored by probes/paired_loss.py. Writes nothing. Fails with
:class:`~songcorpus.train.eval.probes.paired_loss.ProbeError` for a model that reads no f0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from songcorpus.train.eval.probes.paired_loss import PairedLoss, ProbeError, held_out_batches, paired_losses

F0Variant = Callable[[torch.Tensor], torch.Tensor]

SEMITONES = 4.0
VOICING_HZ = 200.0
VARIANTS: dict[str, F0Variant] = {
    "true": lambda f0: f0,
    f"+{SEMITONES:g} semitones": lambda f0: f0 * 2.0 ** (SEMITONES / 12.0),
    "voicing only": lambda f0: (f0 > 0).to(f0.dtype) * VOICING_HZ,  # a constant pitch where voiced
    "nulled": lambda f0: torch.zeros_like(f0),  # every frame unvoiced
}


def condition_on_f0(model: torch.nn.Module, name: str) -> None:
    """Condition every sample on f0: no melody dropout (stage B), every sample in the SVC task (UniSinger)."""
    if name == "songecho_melody":
        model.config = model.config.model_copy(update={"melody_dropout": 0.0})
    elif name == "unisinger":
        model.config = model.config.model_copy(update={"curriculum_song_only": 0.0, "curriculum_ramp_end": 0.0,
                                                       "svc_max_share": 1.0})


def f0_use(run: str | Path, data: str | None = None, split: str = "test", checkpoint: str | None = None,
           batches: int = 6, batch_size: int = 8, seed: int = 0) -> PairedLoss:
    """The paired loss of ``run`` on ``batches`` held-out batches with each of :data:`VARIANTS`."""
    from songcorpus.train.run import load_run

    loaded = load_run(run, checkpoint)
    name, model = loaded.name, loaded.model
    if "f0" not in model.batch_keys:
        raise ProbeError(f"run {run} trains {name}, which reads no f0; probe a SongEcho stage-B or UniSinger run")
    held_out = held_out_batches(loaded, data, split, batches, batch_size, seed)
    condition_on_f0(model, name)
    variants = {v: (lambda b, a=alter: ({**b, "f0": a(b["f0"].float())}, {})) for v, alter in VARIANTS.items()}
    return PairedLoss(str(run), loaded.step, paired_losses(model, held_out, variants, loaded.config.steps, seed))


SVC_CONDITIONS = ("content", "f0", "speaker", "text")


def modality_use(run: str | Path, data: str | None = None, split: str = "test", checkpoint: str | None = None,
                 batches: int = 6, batch_size: int = 8, seed: int = 0) -> PairedLoss:
    """The paired held-out loss of a UniSinger run in the SVC task with all its conditions ("true") and with each
    of :data:`SVC_CONDITIONS` nulled in every sample by the model's own CFG path (``loss(null=...)``): which
    conditions the model reads. Same batches and draws per variant, as :func:`f0_use`."""
    from songcorpus.train.run import load_run

    loaded = load_run(run, checkpoint)
    if loaded.name != "unisinger":
        raise ProbeError(f"run {run} trains {loaded.name}; the modality probe reads UniSinger runs")
    model = loaded.model
    held_out = held_out_batches(loaded, data, split, batches, batch_size, seed)
    condition_on_f0(model, "unisinger")
    nulls = {"true": (), **{f"no {m}": (m,) for m in SVC_CONDITIONS}}
    variants = {v: (lambda b, n=null: (b, {"null": n})) for v, null in nulls.items()}
    return PairedLoss(str(run), loaded.step, paired_losses(model, held_out, variants, loaded.config.steps, seed))
