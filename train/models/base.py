"""What every generator module shares: its declared batch keys, their check, and the trainable parameters.

The trainer reads ``model.batch_keys`` (required tensors) and ``model.optional_keys`` (used when present),
calls ``model.loss(batch, generator=g, step=s, total_steps=n)`` and ``model.generate(cond_batch, ...)``,
and optimises ``model.trainable_parameters()``. The class attributes give the default config's keys; an
instance whose config changes what it reads (SongEcho without lyrics, UniSinger's content and speaker
sources, SongEcho stage B) sets its own in ``__init__``, so always read them from the instance.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class GeneratorModel(nn.Module):
    """Base of the four generators (not a network by itself)."""

    batch_keys: tuple[str, ...] = ()
    optional_keys: tuple[str, ...] = ("mask",)

    def check_batch(self, batch: Mapping[str, torch.Tensor], keys: tuple[str, ...] | None = None) -> None:
        """KeyError naming every required key the batch lacks (and the keys it has)."""
        missing = [k for k in (self.batch_keys if keys is None else keys) if k not in batch]
        if missing:
            raise KeyError(f"{type(self).__name__} needs batch keys {missing}; the batch has {sorted(batch)}")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates (all of them, except where a model freezes a part)."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def stems_latents(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[vocals; accompaniment] latents concatenated on channels, (B, T, 2C): what SongEcho and UniSinger
    generate (the corpus stores latents per stem, not of the mix; see songecho.py)."""
    return torch.cat([batch["vocals_latents"], batch["accompaniment_latents"]], dim=-1)


def split_stems(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 2C) generated latents -> (vocals (B, T, C), accompaniment (B, T, C))."""
    return x.chunk(2, dim=-1)
