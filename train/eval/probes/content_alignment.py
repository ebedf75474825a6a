"""Can UniSinger's audio stream read the content and f0 frame it is generating? The attention mass each audio frame
puts on its own content token (the one at its frame, +-``radius``), per MM-DiT block and head, against what
uniform attention over the valid keys would put there.

Why this exists: UniSinger's f0 reaches the audio only through joint attention (content + f0 tokens sit in the
condition stream, at the same RoPE positions as the audio frames they describe). A frame-wise pitch can only be
followed once some head attends from frame i to content token i; until then the f0 is averaged over the window
and only its voicing and mean survive, which is what ``f0_use`` measured. This probe reads that alignment
directly, with no sampler or decoder.

Reads: a UniSinger training run through :func:`songcorpus.train.run.load_run` (EMA weights), held-out
batches of its corpus (``paired_loss.held_out_batches``). Every sample is put in the SVC task (the task that reads
content and f0), with the loss's own draws (t, noise, dropout flags: ``paired_loss.batch_draws``). Writes nothing.
Fails with :class:`~songcorpus.train.eval.probes.paired_loss.ProbeError` for a run of another model.

The attention weights are recomputed from each block's own ``pre`` (adaLN, QKV, QK-norm, RoPE) in a forward
pre-hook and the same key mask as :func:`songcorpus.train.models.blocks.attend`; the test checks that they
reproduce the block's attention output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from songcorpus.train.eval.probes.f0_use import condition_on_f0
from songcorpus.train.eval.probes.paired_loss import ProbeError, batch_draws, held_out_batches


@dataclass(frozen=True)
class ContentAlignment:
    """Per block (rows) and head (columns), mean over valid audio frames: ``aligned`` the attention mass on the
    frame's own content tokens (+-radius), ``content`` the mass on all content tokens, ``uniform`` what
    uniform attention over the valid keys would put on the aligned tokens. ``ratio`` = aligned / uniform: 1 for
    attention blind to position, large for a head that reads its frame."""

    run: str
    step: int
    radius: int
    aligned: np.ndarray  # (blocks, heads)
    content: np.ndarray  # (blocks, heads)
    uniform: float

    @property
    def ratio(self) -> np.ndarray:
        return self.aligned / self.uniform

    def table(self) -> str:
        lines = [f"aligned = attention from audio frame i to content tokens i+-{self.radius}; uniform would give "
                 f"{self.uniform:.4f}",
                 f"{'block':>5s} {'content mass':>12s} {'aligned (mean head)':>19s} {'best head':>10s} "
                 f"{'best / uniform':>14s}"]
        for i, (a, c) in enumerate(zip(self.aligned, self.content, strict=True)):
            lines.append(f"{i:5d} {c.mean():12.4f} {a.mean():19.4f} {a.max():10.4f} {a.max() / self.uniform:14.1f}")
        return "\n".join(lines)


def attention_weights(block: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, vec: torch.Tensor, rope_x, rope_c,
                      key_mask: torch.Tensor) -> torch.Tensor:
    """(B, H, T_audio, T_audio + T_cond) softmax weights of the audio stream's queries in an MM-DiT block, as
    the block computes them (its score bias, if any; ``attend``'s masking: a query that may see no key sees every
    key)."""
    qx, kx, vx, _ = block.audio.pre(x, vec, rope_x)
    _, kc, _, _ = block.cond.pre(c, vec, rope_c)
    k = torch.cat([kx, kc], dim=2)
    scores = qx @ k.transpose(-1, -2) / math.sqrt(qx.shape[-1])
    bias = block.score_bias(x.shape[1], c.shape[1], scores.dtype)
    if bias is not None:
        scores = scores + bias[:, :, :x.shape[1]]
    allowed = key_mask[:, None, None, :].bool()
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


class _Recorder:
    """Forward pre-hooks on every block: accumulate the aligned and content mass per block and head."""

    def __init__(self, blocks: Sequence[torch.nn.Module], radius: int):
        self.radius = radius
        n, heads = len(blocks), blocks[0].audio.n_heads
        self.aligned = np.zeros((n, heads))
        self.content = np.zeros((n, heads))
        self.uniform_sum = 0.0
        self.frames = 0.0
        self.handles = [b.register_forward_pre_hook(self._hook(i)) for i, b in enumerate(blocks)]

    def _hook(self, index: int):
        def hook(block: torch.nn.Module, args: tuple) -> None:
            x, c, vec, rope_x, rope_c, key_mask = args
            w = attention_weights(block, x, c, vec, rope_x, rope_c, key_mask)
            t = x.shape[1]
            phonemes = c.shape[1] - t - 1  # the condition stream is [phonemes (L); content (T); caption (1)]
            start = t + phonemes  # keys: audio (T), then the condition stream
            content_w = w[..., start:start + t]  # (B, H, T, T)
            pos = torch.arange(t, device=x.device)
            band = ((pos[:, None] - pos[None, :]).abs() <= self.radius).to(w.dtype)
            frames = key_mask[:, :t].to(w.dtype)  # (B, T) valid audio frames (queries)
            aligned = (content_w * band).sum(-1)  # (B, H, T)
            weight = frames[:, None, :]
            self.aligned[index] += (aligned * weight).sum(dim=(0, 2)).double().numpy()
            self.content[index] += (content_w.sum(-1) * weight).sum(dim=(0, 2)).double().numpy()
            if index == 0:
                self.frames += float(frames.sum())
                content_valid = key_mask[:, start:start + t].to(w.dtype)  # (B, T) content keys that may be read
                n_keys = key_mask.to(w.dtype).sum(-1)  # (B,)
                expected = (content_valid[:, None, :] * band).sum(-1) / n_keys[:, None]  # (B, T)
                self.uniform_sum += float((expected * frames).sum())
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def alignment_of(model: torch.nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], total_steps: int,
                 radius: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """(aligned, content, uniform) of a UniSinger ``model`` over ``batches``, every sample in SVC, with the loss's
    draws seeded per batch as the paired loss seeds them (``paired_loss.batch_draws``)."""
    condition_on_f0(model, "unisinger")
    rec = _Recorder(list(model.net.blocks), radius)
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                model.loss(batch, generator=batch_draws(seed, i), step=total_steps - 1, total_steps=total_steps)
    finally:
        rec.close()
    if rec.frames == 0:
        raise ValueError("no valid audio frame in the batches: nothing to measure")
    return rec.aligned / rec.frames, rec.content / rec.frames, rec.uniform_sum / rec.frames


def content_alignment(run: str | Path, data: str | None = None, split: str = "test", checkpoint: str | None = None,
                      batches: int = 6, batch_size: int = 8, seed: int = 0, radius: int = 1) -> ContentAlignment:
    """:class:`ContentAlignment` of a UniSinger run on ``batches`` held-out batches of ``split``."""
    from songcorpus.train.run import load_run

    loaded = load_run(run, checkpoint)
    if loaded.name != "unisinger":
        raise ProbeError(f"run {run} trains {loaded.name}; the content-alignment probe reads UniSinger runs")
    held_out = held_out_batches(loaded, data, split, batches, batch_size, seed)
    aligned, content, uniform = alignment_of(loaded.model, held_out, loaded.config.steps, radius, seed)
    return ContentAlignment(str(run), loaded.step, radius, aligned, content, uniform)
