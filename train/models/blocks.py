"""Shared network blocks of the four generators, written once.

- :class:`RMSNorm`, :class:`RotaryEmbedding` + :func:`apply_rope` (LLaMA/HF "rotate half" layout, cos/sin
  cached per length; arbitrary float positions for streams that share a time axis);
- :func:`attend` (softmax attention through ``F.scaled_dot_product_attention``: bidirectional, optional key
  mask, optional local window, grouped-query heads) and the :class:`Attention` module around it (self or
  cross, optional RoPE, optional QK-RMSNorm);
- :class:`LinearAttention` (ReLU-kernel linear attention with RoPE, as ACE-Step's self-attention);
- :class:`SwiGLU` (LLaMA MLP), :class:`GLUConvFFN` (ACE-Step's GLUMBConv) and :class:`TransformerBlock`
  (pre-norm LLaMA block: RMSNorm, RoPE, GQA, SwiGLU);
- adaLN: :func:`modulate`, :class:`AdaLNZero` (DiT: a zero-initialised projection of the condition vector per
  block) and :class:`AdaLNSingleTable` (PixArt/Sana/ACE-Step: one shared projection of t for all blocks plus a
  learned per-block table);
- :func:`timestep_sinusoid` + :class:`TimestepEmbedding` (sinusoid -> MLP);
- conditioning helpers shared by SongEcho and UniSinger: :func:`f0_features`, :func:`resample_time`,
  :func:`masked_mean`.

Tensors are (batch, time, channels) unless a docstring says otherwise; attention heads are (B, H, T, D).
Nothing here draws random numbers (no dropout), so a model's randomness is all in its loss/sampler, drawn
from the caller's ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.RMSNorm):
    """``torch.nn.RMSNorm`` over the last dimension, eps 1e-6 by default (ACE-Step, DiT); affine optional."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__(dim, eps=eps, elementwise_affine=affine)


# ---------------------------------------------------------------------------------------------
# rotary position embedding
# ---------------------------------------------------------------------------------------------

def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, T, D) by angles whose cos/sin are (T, D) or (B, 1, T, D)."""
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE over ``head_dim`` (even), base ``theta``; integer lengths are cached.

    The cache is a plain dict, not a buffer: it is never saved, and it is rebuilt on a new device/dtype.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.theta = theta
        self._cache: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _inv_freq(self, device: torch.device) -> torch.Tensor:
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float64) / self.head_dim))

    def angles(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for arbitrary (possibly fractional) positions (..., T) -> (..., T, head_dim)."""
        freqs = positions.to(torch.float64)[..., None] * self._inv_freq(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, length: int, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions 0..length-1, (length, head_dim) each."""
        key = (int(length), torch.device(device), dtype)
        if key not in self._cache:
            self._cache[key] = self.angles(torch.arange(length, device=device), dtype)
        return self._cache[key]


# ---------------------------------------------------------------------------------------------
# softmax attention
# ---------------------------------------------------------------------------------------------

def window_mask(t_q: int, t_k: int, window: int, device: torch.device) -> torch.Tensor:
    """Bool (t_q, t_k): key j visible from query i when i - window//2 <= j <= i + window - window//2 - 1
    (SAMUeL's sliding window: ``window`` keys, left-heavy for even sizes)."""
    left, right = window // 2, window - window // 2 - 1
    i = torch.arange(t_q, device=device)[:, None]
    j = torch.arange(t_k, device=device)[None, :]
    return (j >= i - left) & (j <= i + right)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
           window: int | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Bidirectional softmax attention, (B, H, Tq, D) x (B, Hkv, Tk, D) -> (B, H, Tq, D).

    ``key_mask`` (B, Tk) bool: True = a key that may be attended. ``window``: local attention (Tq == Tk).
    ``bias``: added to the scores before the softmax (broadcast to (B, H, Tq, Tk)), on allowed keys only.
    Grouped-query attention when Hkv divides H. A query that may see no key at all (a padded frame whose
    whole window is padding, a sample with no valid key) attends to every key instead of producing NaN;
    such rows belong to padding and are masked out of every loss.
    """
    h, h_kv = q.shape[1], k.shape[1]
    if h != h_kv:
        if h % h_kv:
            raise ValueError(f"query heads {h} not a multiple of key/value heads {h_kv}")
        k = k.repeat_interleave(h // h_kv, dim=1)
        v = v.repeat_interleave(h // h_kv, dim=1)
    mask = None
    if key_mask is not None:
        mask = key_mask[:, None, None, :].to(torch.bool)
    if window is not None:
        w = window_mask(q.shape[2], k.shape[2], window, q.device)[None, None]
        mask = w if mask is None else (mask & w)
    if mask is not None:
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    if bias is not None:
        bias = bias.to(q.dtype)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, n_heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class Attention(nn.Module):
    """Multi-head attention: self (``context=None``) or cross; GQA, RoPE, QK-RMSNorm and a local window optional.

    RoPE is given per call as (cos, sin) for the queries and for the keys (``rope_k`` defaults to ``rope_q``
    for self-attention), so cross-attention can rotate both sides (ACE-Step does) or neither.
    """

    def __init__(self, dim: int, n_heads: int, head_dim: int | None = None, n_kv_heads: int | None = None,
                 kv_dim: int | None = None, qk_norm: bool = False, bias: bool = False, window: int | None = None):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.head_dim = head_dim or dim // n_heads
        self.window = window
        kv_dim = kv_dim or dim
        self.q = nn.Linear(dim, n_heads * self.head_dim, bias=bias)
        self.k = nn.Linear(kv_dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.v = nn.Linear(kv_dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.o = nn.Linear(n_heads * self.head_dim, dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                rope_q: tuple[torch.Tensor, torch.Tensor] | None = None,
                rope_k: tuple[torch.Tensor, torch.Tensor] | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        src = x if context is None else context
        q = self.q_norm(split_heads(self.q(x), self.n_heads))
        k = self.k_norm(split_heads(self.k(src), self.n_kv_heads))
        v = split_heads(self.v(src), self.n_kv_heads)
        if rope_q is not None:
            q = apply_rope(q, *rope_q)
            rk = rope_k if rope_k is not None else (rope_q if context is None else None)
            if rk is not None:
                k = apply_rope(k, *rk)
        return self.o(merge_heads(attend(q, k, v, key_mask=key_mask, window=self.window)))


class LinearAttention(nn.Module):
    """ReLU-kernel linear self-attention with RoPE (Sana's LiteLA as ACE-Step uses it), O(T) in time.

    out_i = sum_j phi(q_i) . phi(k_j) v_j / (sum_j phi(q_i) . phi(k_j) + eps), phi = ReLU after RoPE;
    masked keys are zeroed so padding adds nothing. Accumulates in float32 (ACE-Step casts the same way).
    """

    def __init__(self, dim: int, n_heads: int, head_dim: int, bias: bool = True, eps: float = 1e-15):
        super().__init__()
        self.n_heads, self.head_dim, self.eps = n_heads, head_dim, eps
        self.q = nn.Linear(dim, n_heads * head_dim, bias=bias)
        self.k = nn.Linear(dim, n_heads * head_dim, bias=bias)
        self.v = nn.Linear(dim, n_heads * head_dim, bias=bias)
        self.o = nn.Linear(n_heads * head_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, *, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = split_heads(self.q(x), self.n_heads)
        k = split_heads(self.k(x), self.n_heads)
        v = split_heads(self.v(x), self.n_heads)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = F.relu(q).float(), F.relu(k).float(), v.float()
        if key_mask is not None:
            m = key_mask[:, None, :, None].float()
            k, v = k * m, v * m
        kv = torch.einsum("bhtd,bhte->bhde", k, v)                     # (B, H, D, D)
        num = torch.einsum("bhtd,bhde->bhte", q, kv)
        den = torch.einsum("bhtd,bhd->bht", q, k.sum(dim=2))[..., None]
        out = (num / (den + self.eps)).to(x.dtype)
        return self.o(merge_heads(out))


# ---------------------------------------------------------------------------------------------
# feed-forward
# ---------------------------------------------------------------------------------------------

class SwiGLU(nn.Module):
    """LLaMA MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def swiglu_hidden(dim: int, mult: float) -> int:
    """SwiGLU hidden width for a GELU-MLP-equivalent ``mult``: 2/3 of dim*mult, rounded up to a multiple of 8."""
    h = int(2 * dim * mult / 3)
    return 8 * math.ceil(h / 8)


class GLUConvFFN(nn.Module):
    """ACE-Step's GLUMBConv: 1x1 D->2H + SiLU, depthwise conv k3, SiLU-GLU, 1x1 H->D (no bias).

    The 1x1 convolutions are ``nn.Linear`` here (the same map and parameter count; much faster on CPU).
    """

    def __init__(self, dim: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.inverted = nn.Linear(dim, 2 * hidden, bias=True)
        self.depthwise = nn.Conv1d(2 * hidden, 2 * hidden, kernel, padding=kernel // 2, groups=2 * hidden, bias=True)
        self.point = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(F.silu(self.inverted(x)).transpose(1, 2)).transpose(1, 2)
        h, gate = h.chunk(2, dim=-1)
        return self.point(h * F.silu(gate))


class TransformerBlock(nn.Module):
    """Pre-norm LLaMA block, bidirectional: x + attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x)) (RoPE, GQA optional)."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, n_kv_heads: int | None = None, eps: float = 1e-5):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps)
        self.attn = Attention(dim, n_heads, n_kv_heads=n_kv_heads)
        self.mlp_norm = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, ffn_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope_q=rope, key_mask=key_mask)
        return x + self.mlp(self.mlp_norm(x))


# ---------------------------------------------------------------------------------------------
# adaLN and timestep embedding
# ---------------------------------------------------------------------------------------------

def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class AdaLNZero(nn.Module):
    """DiT adaLN-Zero: SiLU -> Linear(cond -> n*dim), zero-initialised, so every gated branch starts closed.

    Returns ``n`` tensors of shape (B, 1, dim) (shift, scale, gate, ... in the caller's order).
    """

    def __init__(self, cond_dim: int, dim: int, n: int):
        super().__init__()
        self.n = n
        self.proj = nn.Linear(cond_dim, n * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.proj(F.silu(c))[:, None, :].chunk(self.n, dim=-1)


class AdaLNSingleTable(nn.Module):
    """adaLN-single's per-block part: a learned (n, dim) table added to the shared projection of t.

    The shared projection (``SiLU -> Linear(dim -> n*dim)``, one for the whole network) is built by the model;
    each block adds its table and splits into ``n`` (B, 1, dim) tensors (PixArt-alpha, Sana, ACE-Step).
    """

    def __init__(self, dim: int, n: int = 6):
        super().__init__()
        self.n = n
        self.table = nn.Parameter(torch.randn(n, dim) / dim**0.5)

    def forward(self, t_proj: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = t_proj.shape[0]
        return (self.table[None] + t_proj.view(b, self.n, -1)).chunk(self.n, dim=1)


def timestep_sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0, flip_sin_to_cos: bool = True) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps (any scale) -> (B, dim); [cos, sin] when ``flip_sin_to_cos``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)] if flip_sin_to_cos else [torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoid(t) -> Linear -> SiLU -> Linear (diffusers' Timesteps + TimestepEmbedding)."""

    def __init__(self, channels: int, hidden: int, out: int | None = None, max_period: float = 10000.0):
        super().__init__()
        self.channels, self.max_period = channels, max_period
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, out or hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_sinusoid(t, self.channels, self.max_period))


# ---------------------------------------------------------------------------------------------
# conditioning helpers
# ---------------------------------------------------------------------------------------------

def f0_features(f0: torch.Tensor, fmin: float = 50.0, fmax: float = 900.0) -> torch.Tensor:
    """SongEcho's melody input: f0 (B, T) in Hz, 0 = unvoiced -> (B, 2, T) channels
    [(ln f0 - ln fmin) / (ln fmax - ln fmin), 0 when unvoiced; voiced flag]."""
    voiced = f0 > 0
    logf = (torch.log(f0.clamp_min(1e-5)) - math.log(fmin)) / (math.log(fmax) - math.log(fmin))
    return torch.stack([torch.where(voiced, logf, torch.zeros_like(logf)), voiced.to(f0.dtype)], dim=1)


F0_BINS = 128  # pitch bins over fmin..fmax for f0_bin_features: 50-900 Hz is 50 semitones, so 0.39 semitone a bin


def f0_bin_features(f0: torch.Tensor, fmin: float = 50.0, fmax: float = 900.0, n_bins: int = F0_BINS,
                    width_bins: float = 1.0) -> torch.Tensor:
    """f0 (B, T) Hz, 0 = unvoiced -> (B, n_bins + 1, T): a soft one-hot of log f0 over ``n_bins`` bins (a
    Gaussian of ``width_bins`` bins, so neighbouring pitches share channels; all 0 when unvoiced) and the voiced
    flag. Why: in :func:`f0_features` a semitone moves the one pitch channel by 0.02, which compact models
    trained for minutes never resolve (measured: their loss did not change when the melody was shifted by 4
    semitones, only when its voicing was removed); here a semitone moves the pitch to other channels, as
    FastSpeech 2's and DiffSinger's bucketed pitch embeddings do."""
    voiced = (f0 > 0).to(f0.dtype)[:, None, :]
    pos = (torch.log(f0.clamp_min(1e-5)) - math.log(fmin)) / (math.log(fmax) - math.log(fmin)) * (n_bins - 1)
    centres = torch.arange(n_bins, device=f0.device, dtype=f0.dtype)
    soft = torch.exp(-0.5 * ((pos[:, None, :] - centres[None, :, None]) / width_bins) ** 2)
    return torch.cat([soft * voiced, voiced], dim=1)


_MELODY_INPUTS = {"log": (f0_features, 2), "bins": (f0_bin_features, F0_BINS + 1)}  # encoding -> (features, channels)


def _melody_encoding(encoding: str) -> tuple[Callable[..., torch.Tensor], int]:
    if encoding not in _MELODY_INPUTS:
        raise ValueError(f"f0 encoding must be one of {sorted(_MELODY_INPUTS)}, got {encoding!r}")
    return _MELODY_INPUTS[encoding]


def melody_input(f0: torch.Tensor, encoding: str, fmin: float = 50.0, fmax: float = 900.0) -> torch.Tensor:
    """The f0 channels a melody / f0 encoder reads: "log" = :func:`f0_features` (SongEcho's, 2 channels),
    "bins" = :func:`f0_bin_features` (F0_BINS + 1 channels)."""
    return _melody_encoding(encoding)[0](f0, fmin, fmax)


def melody_channels(encoding: str) -> int:
    """Input channels of :func:`melody_input` for ``encoding``."""
    return _melody_encoding(encoding)[1]


def dct_basis(n: int, keep: int) -> torch.Tensor:
    """(n, keep) orthonormal DCT-II basis: ``x @ dct_basis(n, k)`` gives the first ``k`` coefficients of
    ``scipy.fft.dct(x, type=2, norm="ortho")`` along the last axis. On log-mel frames that is a lifter: the low
    coefficients are the spectral envelope, the harmonics' fine structure (the pitch) sits in the high ones."""
    if not 0 < keep <= n:
        raise ValueError(f"keep must be in 1..{n}, got {keep}")
    i = torch.arange(n, dtype=torch.float64)[:, None] + 0.5
    k = torch.arange(keep, dtype=torch.float64)[None]
    basis = torch.cos(math.pi * i * k / n) * math.sqrt(2.0 / n)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def resample_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation of (B, C, T) to (B, C, length) (frame-rate alignment between streams)."""
    if x.shape[-1] == length:
        return x
    return F.interpolate(x, size=length, mode="linear", align_corners=False)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, T, ...) over every element of the valid frames (mask (B, T) bool; None: all)."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype).view(*mask.shape, *([1] * (x.dim() - 2)))
    return (x * m).sum() / (m.sum() * x[0, 0].numel()).clamp_min(1.0)


def time_pool(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of (B, T, C) valid frames -> (B, C)."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
