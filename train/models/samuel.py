"""SAMUeL: vocal-conditioned accompaniment by latent diffusion over a 1D U-Net with soft-alignment attention.

Reads (batch keys): ``vocals_latents`` (B, T, C) the condition, ``accompaniment_latents`` (B, T, C) the
target, optional ``mask`` (B, T) valid frames. Generates accompaniment latents (B, T, C) from vocal latents.

Network (follows the code, HaysonC/SAMUeL-GEN ``src/model.py`` + ``src/modules.py``, 15.57M parameters at
paper size): x and the condition each through Conv1d(C -> base, k3); a soft-alignment attention of x
(queries) over the condition (keys/values) gives the context: sqrt(a_g) * global + sqrt(1 - a_g) * local,
global = full softmax attention with RoPE, local = a 16-frame window without RoPE; FiLM of the encoded x
(gamma, beta = time_proj(t_emb) + time-mean of context_proj(context)); a U-Net whose ResNet blocks are
GroupNorm(1) -> SiLU -> conv k3 -> FiLM -> GroupNorm -> SiLU -> conv k3 + residual; down path
base -> 2base -> 4base -> 8base by conv k4 s2, the *same* down-convs applied to the context stream; a
bottleneck soft-alignment attention of h over the downsampled context (8 heads, 64-d at paper size); up path
by transposed convs with skips, the context upsampled in parallel; final 1x1 conv zero-initialised.

Where this follows the paper or the standard instead of the code (each a config switch where it matters):
- v target and x0 with the standard signs: v = sqrt(ab) eps - sqrt(1-ab) x0, x0 = sqrt(ab) x_t - sqrt(1-ab) v
  (the code's target has a plus sign that its own sampler does not assume).
- ``bottleneck_residual`` (default on): the bottleneck attention is added to h (the code replaces h).
- ``mix_weight``: "linear" a_g = 1 - t/(T-1) as the code (default), "alphabar" a_g = sqrt(alphabar_t) as the paper.
- Every FiLM takes the MLP'd timestep embedding and scales by (1 + gamma) (the code's U-Net reuses a raw
  sinusoid and scales by gamma: with zero-mean init that starts every block near zero output).
- CFG dropout per sample (10%) to a zero condition (the code drops per batch); all padding-aware.
Diffusion (follows generators.md): cosine betas (s = 0.008), 800 steps, t uniform, loss
mean(w (v_hat - v)^2) with w = min(2 / (SNR + 1e-5), 10). Samplers: DDIM (eta; 50 steps by default) and
ancestral DDPM (every step by default, or respaced), both with CFG (3.0).

Parameter counts (``count_parameters`` in train/models/__init__.py, tested): compact default 3.92M
(base 32, time 256, 128 latent channels: the embedded codec's 128 mel bands; a CPU training step at B=4,
T=256 is ~0.3 s on one core); paper 15.60M (base 64, time 512; 15.58M at the paper's 64 latent channels,
where the paper states 15.57M).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from songcorpus.schemas.train_models import SamuelConfig
from songcorpus.train.models import schedules as S
from songcorpus.train.models.base import GeneratorModel
from songcorpus.train.models.blocks import Attention, RotaryEmbedding, TimestepEmbedding, masked_mean


def _masked_time_mean(x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """(B, C, T) -> (B, C) mean over valid frames (m: (B, 1, T) float or None)."""
    if m is None:
        return x.mean(dim=-1)
    return (x * m).sum(dim=-1) / m.sum(dim=-1).clamp_min(1.0)


class FiLM(nn.Module):
    """gamma, beta = time_proj(t_emb) + time-mean(context_proj(context)); x * (1 + gamma) + beta."""

    def __init__(self, channels: int, time_dim: int):
        super().__init__()
        self.time_proj = nn.Linear(time_dim, 2 * channels)
        self.context_proj = nn.Conv1d(channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, t_emb: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        gb = self.time_proj(t_emb) + _masked_time_mean(self.context_proj(context), m)
        gamma, beta = gb[..., None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class ResBlock(nn.Module):
    def __init__(self, channels: int, time_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(1, channels), nn.GroupNorm(1, channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.film = FiLM(channels, time_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, t_emb: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.film(h, context, t_emb, m)
        return x + self.conv2(F.silu(self.norm2(h)))


class Down(nn.Module):
    """Conv k4 s2 -> GroupNorm(1) -> SiLU: halves time, changes width (shared by the x and context streams)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 4, stride=2, padding=1)
        self.norm = nn.GroupNorm(1, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.conv(x)))


class SoftAlign(nn.Module):
    """context = sqrt(a_g) * global(x -> cond, RoPE) + sqrt(1 - a_g) * local(x -> cond, window, no RoPE).

    Inputs (B, C, T); x and cond share the time axis (same length).
    """

    def __init__(self, dim: int, heads: int, window: int, rope_theta: float):
        super().__init__()
        self.global_ = Attention(dim, heads, bias=True)
        self.local = Attention(dim, heads, bias=True, window=window)
        self.rope = RotaryEmbedding(dim // heads, rope_theta)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, a_g: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        xs, cs = x.transpose(1, 2), cond.transpose(1, 2)
        rope = self.rope(xs.shape[1], xs.device, xs.dtype)
        g = self.global_(xs, cs, rope_q=rope, rope_k=rope, key_mask=key_mask)
        loc = self.local(xs, cs, key_mask=key_mask)
        a = a_g.to(x.dtype)[:, None, None]
        return (a.sqrt() * g + (1 - a).clamp_min(0).sqrt() * loc).transpose(1, 2)


class SamuelNet(nn.Module):
    """v-prediction network: (x_t, vocal condition, t) -> v, tensors (B, T, C)."""

    LEVELS = 3

    def __init__(self, cfg: SamuelConfig):
        super().__init__()
        self.cfg = cfg
        b, c, td = cfg.base_channels, cfg.latent_channels, cfg.time_dim
        widths = [b * 2**i for i in range(self.LEVELS + 1)]  # b, 2b, 4b, 8b
        self.time = TimestepEmbedding(td, td * cfg.time_mlp_mult, td)
        self.x_in = nn.Conv1d(c, b, 3, padding=1)
        self.cond_in = nn.Conv1d(c, b, 3, padding=1)
        self.align = SoftAlign(b, cfg.heads, cfg.window, cfg.rope_theta)
        self.film_in = FiLM(b, td)
        self.down_res = nn.ModuleList(ResBlock(w, td) for w in widths[:-1])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(self.LEVELS))
        self.mid_proj_x = nn.Conv1d(widths[-1], widths[-1], 1)
        self.mid_proj_c = nn.Conv1d(widths[-1], widths[-1], 1)
        self.mid_attn = SoftAlign(widths[-1], cfg.heads, cfg.window, cfg.rope_theta)
        self.mid_res = ResBlock(widths[-1], td)
        # up: 8b -> 4b (+4b skip) = 8b; 8b -> 2b (+2b) = 4b; 4b -> b (+b) = 2b
        up_in = [widths[3], widths[3], widths[2]]
        up_out = [widths[2], widths[1], widths[0]]
        self.ups = nn.ModuleList(nn.ConvTranspose1d(i, o, 4, stride=2, padding=1) for i, o in zip(up_in, up_out, strict=True))
        ctx_w = [widths[3], widths[3], widths[2], widths[1]]  # context width entering each up stage
        self.context_ups = nn.ModuleList(nn.ConvTranspose1d(ctx_w[i], ctx_w[i + 1], 4, stride=2, padding=1) for i in range(3))
        self.up_res = nn.ModuleList(ResBlock(2 * o, td) for o in up_out)
        self.final = nn.Conv1d(2 * b, b, 1)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        self.out = nn.Conv1d(b, c, 1)
        ab = S.cosine_alpha_bar(cfg.n_timesteps, cfg.cosine_s)
        self.register_buffer("alpha_bar", ab, persistent=False)

    def mix_weight(self, t: torch.Tensor) -> torch.Tensor:
        if self.cfg.mix_weight == "linear":
            return 1.0 - t.double() / (self.cfg.n_timesteps - 1)
        return self.alpha_bar[t].sqrt()

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        length = x_t.shape[1]
        mult = 2**self.LEVELS
        pad = (-length) % mult
        x, c = x_t.transpose(1, 2), cond.transpose(1, 2)
        if pad:
            x, c = F.pad(x, (0, pad)), F.pad(c, (0, pad))
            base = torch.ones(x.shape[0], length, dtype=torch.bool, device=x.device) if mask is None else mask.bool()
            mask = F.pad(base, (0, pad), value=False)
        # valid-frame masks per level, (B, 1, T_l) float for the FiLM means, (B, T_l) bool for attention keys
        m = None if mask is None else mask[:, None].to(x.dtype)
        if m is not None:  # padded frames carry nothing: no value there reaches a valid frame
            x, c = x * m, c * m
        masks = [m]
        for _ in range(self.LEVELS):
            masks.append(None if masks[-1] is None else F.max_pool1d(masks[-1], 2))
        t_emb = self.time(t)
        a_g = self.mix_weight(t)

        h, hc = self.x_in(x), self.cond_in(c)
        context = self.align(h, hc, a_g, None if m is None else m[:, 0] > 0)
        h = self.film_in(h, context, t_emb, m)
        hc = context
        skips = []
        for i in range(self.LEVELS):
            h = self.down_res[i](h, hc, t_emb, masks[i])
            skips.append(h)
            h, hc = self.downs[i](h), self.downs[i](hc)
        mb = masks[-1]
        attn = self.mid_attn(self.mid_proj_x(h), self.mid_proj_c(hc), a_g, None if mb is None else mb[:, 0] > 0)
        h = h + attn if self.cfg.bottleneck_residual else attn
        h = self.mid_res(h, hc, t_emb, mb)
        for i in range(self.LEVELS):
            h = torch.cat([self.ups[i](h), skips[-1 - i]], dim=1)
            hc = self.context_ups[i](hc)
            h = self.up_res[i](h, hc, t_emb, masks[-2 - i])
        v = self.out(self.final(h))
        return v[..., :length].transpose(1, 2)


class SAMUeL(GeneratorModel):
    """SAMUeL generator: loss (v-objective, min-SNR-style weight, CFG dropout) and DDIM / DDPM samplers."""

    batch_keys = ("vocals_latents", "accompaniment_latents")
    optional_keys = ("mask",)

    def __init__(self, config: SamuelConfig | None = None):
        super().__init__()
        self.config = config or SamuelConfig()
        self.net = SamuelNet(self.config)

    @property
    def alpha_bar(self) -> torch.Tensor:
        return self.net.alpha_bar

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x_t, cond, t, mask)

    def loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
             step: int | None = None, total_steps: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted v-MSE over valid frames. Draws, in order: t (uniform ints), eps, the CFG keep flags."""
        self.check_batch(batch)
        x0, cond = batch["accompaniment_latents"], batch["vocals_latents"]
        mask = batch.get("mask")
        b, dev = x0.shape[0], x0.device
        t = torch.randint(0, self.config.n_timesteps, (b,), generator=generator, device=dev)
        eps = S.randn(x0.shape, generator, dev, x0.dtype)
        keep = S.keep_mask(b, self.config.cfg_dropout, generator, dev)
        cond = cond * keep[:, None, None].to(cond.dtype)
        ab = self.alpha_bar[t]
        x_t = S.q_sample(x0, eps, ab)
        v = S.v_target(x0, eps, ab)
        v_hat = self.net(x_t, cond, t, mask)
        w = S.snr_weight(ab, self.config.snr_weight_scale, self.config.snr_weight_max).to(x0.dtype)
        err = (v_hat - v) ** 2
        loss = masked_mean(err * w[:, None, None], mask)
        with torch.no_grad():
            x0_err = masked_mean((S.x0_from_v(x_t, v_hat, ab) - x0) ** 2, mask)
        return loss, {"loss": float(loss.detach()), "v_mse": float(masked_mean(err.detach(), mask)),
                      "x0_mse": float(x0_err), "cond_kept": float(keep.float().mean())}

    def _guided_v(self, x: torch.Tensor, cond: torch.Tensor, t: int, mask: torch.Tensor | None, guidance: float) -> torch.Tensor:
        b = x.shape[0]
        if guidance == 1.0:
            return self.net(x, cond, torch.full((b,), t, device=x.device, dtype=torch.long), mask)
        tt = torch.full((2 * b,), t, device=x.device, dtype=torch.long)
        mm = None if mask is None else torch.cat([mask, mask])
        v_c, v_u = self.net(torch.cat([x, x]), torch.cat([cond, torch.zeros_like(cond)]), tt, mm).chunk(2)
        return S.cfg(v_c, v_u, guidance)

    def timesteps(self, steps: int | None) -> list[int]:
        """Descending timesteps of a sampling run: all n_timesteps, or ``steps`` evenly spaced from T-1 to 0."""
        n = self.config.n_timesteps
        if steps is None or steps >= n:
            return list(range(n - 1, -1, -1))
        return sorted({int(round(x)) for x in torch.linspace(n - 1, 0, steps, dtype=torch.float64).tolist()}, reverse=True)

    @torch.no_grad()
    def generate(self, cond_batch: Mapping[str, torch.Tensor], steps: int | None = 50, guidance: float = 3.0,
                 generator: torch.Generator | None = None, method: str = "ddim", eta: float = 0.0,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """Accompaniment latents (B, T, C) for ``cond_batch["vocals_latents"]``.

        ``method``: "ddim" (``eta`` 0 = deterministic given the starting noise) or "ddpm" (ancestral; ``steps``
        None = all 800). ``noise``: the starting x_T (else drawn from ``generator``).
        """
        self.check_batch(cond_batch, ("vocals_latents",))
        if method not in ("ddim", "ddpm"):
            raise ValueError(f"method must be 'ddim' or 'ddpm', got {method!r}")
        cond = cond_batch["vocals_latents"]
        mask = cond_batch.get("mask")
        dev = cond.device
        x = S.randn(cond.shape, generator, dev, cond.dtype) if noise is None else noise.to(dev, cond.dtype)
        ts = self.timesteps(steps)
        ab_all = self.alpha_bar
        clip = self.config.clip_x0
        for i, t in enumerate(ts):
            ab_t = ab_all[t].expand(x.shape[0])
            one = torch.ones((), dtype=ab_all.dtype, device=dev)
            ab_prev = (ab_all[ts[i + 1]] if i + 1 < len(ts) else one).expand(x.shape[0])
            v = self._guided_v(x, cond, t, mask, guidance)
            x0 = S.x0_from_v(x, v, ab_t)
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
            eps = (x - S._bcast(ab_t, x).sqrt() * x0) / S._bcast(1 - ab_t, x).sqrt()
            last = i + 1 == len(ts)
            if method == "ddim":
                z = S.randn(x.shape, generator, dev, x.dtype) if (eta > 0 and not last) else None
                x = S.ddim_step(x, x0, eps, ab_t, ab_prev, eta, z)
            elif last:
                x = x0
            else:
                mean, var = S.ddpm_posterior(x, x0, ab_t, ab_prev)
                x = mean + var.sqrt() * S.randn(x.shape, generator, dev, x.dtype)
        return x if mask is None else x * mask[..., None].to(x.dtype)
