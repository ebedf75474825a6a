"""Sampler and noise-schedule math shared by the generators, written once.

- DDPM (SAMUeL): :func:`cosine_alpha_bar` (Nichol & Dhariwal, betas clipped at 0.999), :func:`q_sample`,
  v / x0 / eps conversions with the standard signs (v = sqrt(ab) eps - sqrt(1-ab) x0), the min-SNR-style
  weight SAMUeL uses, one DDIM step (eta) and the DDPM posterior (ancestral step).
- Flow matching (SongEcho, UniSinger): :func:`logit_normal`, :func:`flow_shift`, :func:`flow_sigmas`.
- Masked tokens (LaDA-Band): :func:`cosine_mask_ratio`, :func:`remask_count`, :func:`sobol_uniform`,
  :func:`gumbel_noise`.
- Guidance: :func:`cfg`, APG (:class:`MomentumBuffer`, :func:`apg`, :func:`apg_dual`; ACE-Step/SongEcho).

Every random draw takes an explicit ``torch.Generator`` (None = torch's global generator), so a resumed run
that restores the generator draws the same numbers. Draws land on the data's device, so the generator must
live there too (``torch.Generator(device=...)``).
"""

from __future__ import annotations

import math

import torch
from torch.quasirandom import SobolEngine

# ---------------------------------------------------------------------------------------------
# random draws through an explicit generator
# ---------------------------------------------------------------------------------------------


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def rand(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, device: torch.device | str,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)


def keep_mask(n: int, p_drop: float, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """(n,) bool, True with probability 1 - p_drop (per-sample condition dropout)."""
    return rand((n,), generator, device) >= p_drop


def gumbel_noise(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None,
                 device: torch.device | str) -> torch.Tensor:
    u = rand(shape, generator, device).clamp(1e-20, 1.0)
    return -torch.log(-torch.log(u))


def sobol_uniform(n: int, generator: torch.Generator | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n,) points of a scrambled 1-D Sobol sequence, the scrambling seeded from ``generator``.

    A fresh engine per call (LaDA-Band keeps one engine for the whole run): the n points of a batch are still
    stratified, and the draw depends only on the generator state, so a resumed run repeats it.
    """
    gen_device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=gen_device).item())
    return SobolEngine(1, scramble=True, seed=seed).draw(n, dtype=torch.float32)[:, 0].to(device)


# ---------------------------------------------------------------------------------------------
# DDPM with a cosine schedule (SAMUeL)
# ---------------------------------------------------------------------------------------------

def cosine_alpha_bar(n_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """alphabar_t for t = 0..n_steps-1 (float64) of the cosine schedule: betas from
    f(t) = cos(((t/T) + s) / (1 + s) * pi/2)^2, beta_t = min(1 - f(t+1)/f(t), max_beta).

    Always computed on the CPU (a model built on the meta device, to count it, still gets real values fast;
    ``module.to(device)`` moves the buffer)."""
    t = torch.arange(n_steps + 1, dtype=torch.float64, device="cpu") / n_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) schedule values -> broadcastable to ``like`` (B, ...) in its dtype."""
    return a.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def q_sample(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps."""
    ab = _bcast(ab, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def v_target(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho; the standard sign, not SAMUeL code's plus)."""
    ab = _bcast(ab, x0)
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """x0 = sqrt(ab) x_t - sqrt(1 - ab) v."""
    ab = _bcast(ab, x_t)
    return ab.sqrt() * x_t - (1 - ab).sqrt() * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(1 - ab) x_t + sqrt(ab) v."""
    ab = _bcast(ab, x_t)
    return (1 - ab).sqrt() * x_t + ab.sqrt() * v


def v_from_x0(x_t: torch.Tensor, x0: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """The v whose x0 estimate is ``x0``: v = (sqrt(ab) x_t - x0) / sqrt(1 - ab)."""
    ab = _bcast(ab, x_t)
    return (ab.sqrt() * x_t - x0) / (1 - ab).sqrt()


def snr_weight(ab: torch.Tensor, scale: float = 2.0, max_weight: float = 10.0) -> torch.Tensor:
    """SAMUeL's loss weight w = min(scale / (SNR + 1e-5), max_weight), SNR = ab / (1 - ab)."""
    snr = ab / (1 - ab)
    return torch.clamp(scale / (snr + 1e-5), max=max_weight)


def ddim_step(x_t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, ab_t: torch.Tensor, ab_prev: torch.Tensor,
              eta: float, noise: torch.Tensor | None) -> torch.Tensor:
    """One DDIM step t -> prev (Song et al. eq. 12); eta = 0 is deterministic, eta = 1 is ancestral."""
    ab_t, ab_prev = _bcast(ab_t, x_t), _bcast(ab_prev, x_t)
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).clamp_min(0).sqrt()
    out = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
    if eta > 0 and noise is not None:
        out = out + sigma * noise
    return out


def ddpm_posterior(x_t: torch.Tensor, x0: torch.Tensor, ab_t: torch.Tensor,
                   ab_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_prev | x_t, x0) for any prev < t (the ancestral DDPM step)."""
    ab_t, ab_prev = _bcast(ab_t, x_t), _bcast(ab_prev, x_t)
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    mean = ab_prev.sqrt() * beta / (1 - ab_t) * x0 + alpha.sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t
    var = beta * (1 - ab_prev) / (1 - ab_t)
    return mean, var


# ---------------------------------------------------------------------------------------------
# flow matching (SongEcho, UniSinger)
# ---------------------------------------------------------------------------------------------

def logit_normal(n: int, generator: torch.Generator | None, device: torch.device | str, mean: float = 0.0,
                 std: float = 1.0) -> torch.Tensor:
    """(n,) draws of sigmoid(N(mean, std^2)) in (0, 1)."""
    return torch.sigmoid(mean + std * randn((n,), generator, device))


def flow_shift(s: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 / ACE-Step timestep shift: sigma = shift s / (1 + (shift - 1) s) (shift 3: 3s / (1 + 2s))."""
    return shift * s / (1 + (shift - 1) * s)


def flow_sigmas(steps: int, shift: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """(steps + 1,) noise levels from 1 (pure noise) down to 0, shifted."""
    return flow_shift(torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64), shift)


# ---------------------------------------------------------------------------------------------
# masked tokens (LaDA-Band)
# ---------------------------------------------------------------------------------------------

def cosine_mask_ratio(r: torch.Tensor) -> torch.Tensor:
    """Mask probability gamma = cos(r pi / 2), clamped to [1e-10, 1] (r = 0: all masked)."""
    return torch.cos(r * math.pi / 2).clamp(1e-10, 1.0)


def remask_count(step: int, steps: int, length: int) -> int:
    """Positions still masked after sampler step ``step`` (0-based) of ``steps``: floor(cos((i+1)/S pi/2) T).

    0 after the last step (cos(pi/2) is 6e-17, floored to 0), so every position is decoded.
    """
    return int(math.floor(math.cos((step + 1) / steps * math.pi / 2) * length))


# ---------------------------------------------------------------------------------------------
# guidance
# ---------------------------------------------------------------------------------------------

def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale (cond - uncond)."""
    return uncond + scale * (cond - uncond)


class MomentumBuffer:
    """APG's running average of the guidance direction: avg <- diff + momentum * avg (momentum -0.75)."""

    def __init__(self, momentum: float = -0.75):
        self.momentum = momentum
        self.average: torch.Tensor | float = 0.0

    def update(self, diff: torch.Tensor) -> torch.Tensor:
        self.average = diff + self.momentum * self.average
        return self.average


def _project(v0: torch.Tensor, v1: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Parallel and orthogonal parts of v0 relative to v1 over ``dims`` (float64, as ACE-Step)."""
    dtype = v0.dtype
    v0, v1 = v0.double(), torch.nn.functional.normalize(v1.double(), dim=dims)
    par = (v0 * v1).sum(dim=dims, keepdim=True) * v1
    return par.to(dtype), (v0 - par).to(dtype)


def _apg_update(diff: torch.Tensor, ref: torch.Tensor, buffer: MomentumBuffer | None, eta: float,
                norm_threshold: float, dims: tuple[int, ...]) -> torch.Tensor:
    if buffer is not None:
        diff = buffer.update(diff)
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(norm), norm_threshold / norm.clamp_min(1e-12))
    par, orth = _project(diff, ref, dims)
    return orth + eta * par


def apg(pred_cond: torch.Tensor, pred_uncond: torch.Tensor, scale: float, buffer: MomentumBuffer | None = None,
        eta: float = 0.0, norm_threshold: float = 2.5, dims: tuple[int, ...] = (-1, -2)) -> torch.Tensor:
    """Adaptive projected guidance (Sadat et al. 2024, ACE-Step's apg_forward): the guidance direction with
    momentum, its norm clipped, only its part orthogonal to the conditional prediction (plus eta of the
    parallel part) applied: pred_cond + (scale - 1) * update."""
    return pred_cond + (scale - 1) * _apg_update(pred_cond - pred_uncond, pred_cond, buffer, eta, norm_threshold, dims)


def apg_dual(pred_text: torch.Tensor, pred_full: torch.Tensor, pred_uncond: torch.Tensor, scale: float,
             w_text: float = 0.5, w_full: float = 0.5, buffer: MomentumBuffer | None = None, eta: float = 0.0,
             norm_threshold: float = 2.5, dims: tuple[int, ...] = (-1, -2)) -> torch.Tensor:
    """SongEcho's two-branch APG (apply_dual_conditions_v2): the text-only and text+lyrics+melody directions
    against the unconditional one, averaged with normalised weights, projected against the weighted composite."""
    total = w_text + w_full
    wt, wf = w_text / total, w_full / total
    diff = wt * (pred_text - pred_uncond) + wf * (pred_full - pred_uncond)
    composite = wt * pred_text + wf * pred_full
    return composite + (scale - 1) * _apg_update(diff, composite, buffer, eta, norm_threshold, dims)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Nucleus then top-k filtering of (..., V) logits (LaDA-Band's order): removed entries become -inf.

    top-p keeps the smallest set of most likely tokens whose probability reaches ``top_p`` (the most likely
    token always survives); top-k keeps the ``top_k`` largest.
    """
    out = logits
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop_sorted = probs.cumsum(dim=-1) - probs > top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    if top_k is not None and top_k < out.shape[-1]:
        kth = out.topk(top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    return out
