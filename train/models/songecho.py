"""SongEcho: cover-song generation. Stage A (:class:`SongEcho`) trains a text-to-song backbone of ACE-Step's
block design on the corpus; stage B (:class:`SongEchoMelody`) freezes it and trains a melody encoder plus one
melody injection per block (IA-EiLM), zero-initialised so that step 0 is the backbone bit for bit.

Reads (batch keys): stage A ``vocals_latents``, ``accompaniment_latents`` (B, T, C), ``text_emb``
(B, D_text), ``phonemes`` (B, L) (0 = pad; when ``use_lyrics``), ``speaker`` (B, D_spk) (when
``use_speaker``); optional ``mask`` (B, T). Stage B adds ``f0`` (B, T_f0) Hz at 100 Hz, 0 = unvoiced.
Generates (B, T, 2C) latents: [vocals; accompaniment] (``base.split_stems`` splits them).

What the model generates, and why [vocals; accompaniment] concatenated: SongEcho/ACE-Step generate the mix
in a VAE's latent space, but the corpus stores latents per stem only (transforms/stages/samples_lite.py writes
``<stem>.embedded_latents.npy`` for vocals and accompaniment, none for the mix). The embedded latents are
log-mel frames (z-scored by the loader), so their sum is not the mix's latent (log(a + b) != log a + log b);
concatenating on channels keeps both exactly, lets the mix be rebuilt in the audio domain (decode each stem,
add), and puts the vocal channels where the vocal-f0 melody applies. It costs only a 2C-wide input and
output projection.

Backbone, following the code (ACE-Step v1 ``models/attention.py``, ``ace_step_transformer.py``, as
SongEcho_ICLR2026 ships it): per block RMSNorm (no affine) -> adaLN-single (one shared SiLU+Linear(D -> 6D)
of the timestep embedding plus a learned per-block (6, D) table) -> ReLU-kernel linear self-attention with
RoPE -> gated residual; softmax cross-attention from the (un-normalised) hidden state to
[speaker; text; lyrics], RoPE on both sides -> residual; RMSNorm -> adaLN -> [melody injection] -> GLU conv
FFN (1x1 D -> 2 * 2.5D + SiLU, depthwise k3, SiLU-GLU, 1x1 back) -> gated residual; final RMSNorm +
(2, D) table + timestep embedding modulation -> Linear(D -> 2C). Timesteps enter as sigma * 1000.
Departures: the input projection is per frame (Linear -> GroupNorm(32) -> Linear; ACE-Step patches 16 mel
rows of its DCAE latent), the caption is one sentence-embedding token (ACE-Step: a UMT5 token sequence), the
lyric encoder is a small RoPE transformer over phoneme ids (ACE-Step: a 6-block Conformer over its own
lyric tokens), and the speaker slot exists only with ``use_speaker`` (lite has no speaker embedding).

Objective (follows the code): s = sigmoid(N(0, 1)), sigma = 3s / (1 + 2s) (shift 3), x_t = sigma eps +
(1 - sigma) x0, the net predicts v, loss = MSE(x_t - sigma v, x0) over valid frames; text, lyrics and speaker
each nulled per sample with p = 0.1 (stage B: the melody too) so guidance has unconditional branches.
Sampler: Euler over 60 shifted steps; APG guidance (scale 15, momentum -0.75, norm clip 2.5): stage A
conditional (text + lyrics) vs unconditional; stage B the paper's two branches (text only; text + lyrics +
melody) vs unconditional, weights 0.5 / 0.5 (``apply_dual_conditions_v2``).

Stage B (follows the code and the paper): melody features [(ln f0 - ln 50)/(ln 900 - ln 50) (0 unvoiced),
voiced] -> Conv1d(2 -> 256, k5) + ReLU -> Conv1d(256 -> 256, k5) + ReLU -> linear interpolation to the latent
length -> m; per block, on the adaLN-modulated normed state x before the FFN (the code applies IACR there,
not to raw h): c = tanh(L_x(x)) * tanh(L_m(m)), [gamma, beta] = Linear(256 -> 2D, zero, no bias)(SiLU(c)),
x <- x (1 + gamma) + beta. ``injection`` selects the injection ablations: "eilm" = the same FiLM from m
alone (no IACR), "add" = x + Linear(256 -> D, zero)(SiLU(m)). A nulled melody makes the injection the
identity for that sample.

Parameter counts (``count_parameters``, tested): stage A compact 10.74M (128 latent channels, D 256, 8 blocks, 4 x 64 heads,
2-layer lyric encoder); paper 2.58B (D 2560, 24 blocks, 20 x 128 heads, a 6-layer 1024-wide lyric encoder;
ACE-Step v1 states 3.5B with its own Conformer lyric encoder). Stage B trainable: compact 2.43M; paper
49,101,824 (the paper's 49.1M: 24 x (L_x 2560->256, L_m 256->256, 256->5120) + the two convolutions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from songcorpus.schemas.train_models import F0_RATE_HZ, SongEchoConfig, SongEchoMelodyConfig
from songcorpus.train.models import schedules as S
from songcorpus.train.models.base import GeneratorModel, stems_latents
from songcorpus.train.models.blocks import (
    AdaLNSingleTable,
    Attention,
    GLUConvFFN,
    LinearAttention,
    RMSNorm,
    RotaryEmbedding,
    TimestepEmbedding,
    TransformerBlock,
    masked_mean,
    melody_channels,
    melody_input,
    modulate,
    resample_time,
    swiglu_hidden,
)

Injection = Callable[[torch.Tensor], torch.Tensor]


class LyricEncoder(nn.Module):
    """Phoneme ids (B, L), 0 = pad -> (B, L, D) context tokens through a small RoPE transformer."""

    def __init__(self, cfg: SongEchoConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.phoneme_vocab_size, cfg.lyric_dim, padding_idx=0)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.lyric_dim, cfg.lyric_heads, swiglu_hidden(cfg.lyric_dim, 4.0), eps=1e-6)
            for _ in range(cfg.lyric_layers))
        self.rope = RotaryEmbedding(cfg.lyric_dim // cfg.lyric_heads, 10000.0)
        self.proj = nn.Linear(cfg.lyric_dim, cfg.dim)

    def forward(self, phonemes: torch.Tensor) -> torch.Tensor:
        x = self.embed(phonemes)
        rope = self.rope(x.shape[1], x.device, x.dtype)
        key_mask = phonemes != 0
        for layer in self.layers:
            x = layer(x, rope, key_mask)
        return self.proj(x)


class AceBlock(nn.Module):
    """ACE-Step's LinearTransformerBlock (see the module docstring); ``inject`` acts before the FFN."""

    def __init__(self, cfg: SongEchoConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = RMSNorm(d, affine=False)
        self.attn = LinearAttention(d, cfg.n_heads, cfg.head_dim, bias=True)
        self.cross = Attention(d, cfg.n_heads, head_dim=cfg.head_dim, bias=True)
        self.norm2 = RMSNorm(d, affine=False)
        self.ff = GLUConvFFN(d, int(d * cfg.mlp_ratio))
        self.ada = AdaLNSingleTable(d, 6)

    def forward(self, h: torch.Tensor, t6: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                ctx: torch.Tensor, ctx_rope: tuple[torch.Tensor, torch.Tensor], ctx_mask: torch.Tensor,
                mask: torch.Tensor | None, inject: Injection | None = None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.ada(t6)
        n = modulate(self.norm1(h), shift_msa, scale_msa)
        h = h + gate_msa * self.attn(n, rope=rope, key_mask=mask)
        h = h + self.cross(h, ctx, rope_q=rope, rope_k=ctx_rope, key_mask=ctx_mask)
        n = modulate(self.norm2(h), shift_mlp, scale_mlp)
        if inject is not None:
            n = inject(n)
        if mask is not None:
            n = n * mask[..., None].to(n.dtype)
        return h + gate_mlp * self.ff(n)


class SongEchoNet(nn.Module):
    """The stage-A backbone: (x_t (B, T, 2C), sigma (B,), context) -> v (B, T, 2C)."""

    def __init__(self, cfg: SongEchoConfig):
        super().__init__()
        self.cfg = cfg
        d, c2 = cfg.dim, 2 * cfg.latent_channels
        self.proj_in = nn.Linear(c2, cfg.proj_hidden)
        self.proj_norm = nn.GroupNorm(32, cfg.proj_hidden, eps=1e-6)
        self.proj_out = nn.Linear(cfg.proj_hidden, d)
        self.time_embed = TimestepEmbedding(cfg.timestep_channels, d)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.text_proj = nn.Linear(cfg.text_dim, d)
        self.lyrics = LyricEncoder(cfg) if cfg.use_lyrics else None
        self.speaker_proj = nn.Linear(cfg.speaker_dim, d) if cfg.use_speaker else None
        self.blocks = nn.ModuleList(AceBlock(cfg) for _ in range(cfg.n_layers))
        self.norm_final = RMSNorm(d, affine=False)
        self.final_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.final = nn.Linear(d, c2)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)

    def encode(self, cond: Mapping[str, torch.Tensor], keep_text: torch.Tensor, keep_lyrics: torch.Tensor,
               keep_speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens [speaker; text; lyrics] (B, N, D) and their key mask (B, N)."""
        text = cond["text_emb"]
        b, dev = text.shape[0], text.device
        tokens = [self.text_proj(text * keep_text[:, None].to(text.dtype))[:, None]]
        masks = [torch.ones(b, 1, dtype=torch.bool, device=dev)]
        if self.speaker_proj is not None:
            spk = cond["speaker"]
            tokens.insert(0, self.speaker_proj(spk * keep_speaker[:, None].to(spk.dtype))[:, None])
            masks.insert(0, torch.ones(b, 1, dtype=torch.bool, device=dev))
        if self.lyrics is not None:
            ph = cond["phonemes"].long()
            tokens.append(self.lyrics(ph))
            masks.append((ph != 0) & keep_lyrics[:, None])
        return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor,
                mask: torch.Tensor | None = None, inject: list[Injection] | None = None) -> torch.Tensor:
        if mask is not None:  # padded frames carry nothing: no value there reaches a valid frame
            x_t = x_t * mask[..., None].to(x_t.dtype)
        h = self.proj_in(x_t)
        h = self.proj_norm(h.transpose(1, 2)).transpose(1, 2)
        h = self.proj_out(h)
        emb = self.time_embed(sigma * 1000.0)
        t6 = self.t_block(emb)
        rope = self.rope(h.shape[1], h.device, h.dtype)
        ctx_rope = self.rope(ctx.shape[1], h.device, h.dtype)
        for i, block in enumerate(self.blocks):
            h = block(h, t6, rope, ctx, ctx_rope, ctx_mask, mask, None if inject is None else inject[i])
        shift, scale = (self.final_table[None] + emb[:, None]).chunk(2, dim=1)
        return self.final(modulate(self.norm_final(h), shift, scale))


def _length(cond: Mapping[str, torch.Tensor], length: int | None, latent_rate_hz: float | None = None) -> int:
    if length is not None:
        return int(length)
    if "mask" in cond:
        return int(cond["mask"].shape[1])
    if latent_rate_hz is not None and "f0" in cond:
        return math.ceil(cond["f0"].shape[1] * latent_rate_hz / F0_RATE_HZ - 1e-9)
    raise ValueError("generation needs a length: pass length=..., or a 'mask' (B, T) in the condition batch")


def _euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, steps: int,
           shift: float) -> torch.Tensor:
    """Euler integration of dx/dsigma = v from sigma = 1 to 0 over shifted steps."""
    sigmas = S.flow_sigmas(steps, shift, x.device)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        v = velocity(x, torch.full((x.shape[0],), float(s), device=x.device, dtype=x.dtype))
        x = x + (s_next - s).to(x.dtype) * v
    return x


class SongEcho(GeneratorModel):
    """Stage A: the text-to-song backbone with its flow-matching loss and APG-guided Euler sampler."""

    batch_keys = ("vocals_latents", "accompaniment_latents", "text_emb", "phonemes")
    optional_keys = ("mask",)

    def __init__(self, config: SongEchoConfig | None = None):
        super().__init__()
        self.config = config or SongEchoConfig()
        self.net = SongEchoNet(self.config)
        self.cond_keys = ("text_emb",) + (("phonemes",) if self.config.use_lyrics else ()) + (
            ("speaker",) if self.config.use_speaker else ())
        self.batch_keys = ("vocals_latents", "accompaniment_latents") + self.cond_keys

    def draw_keeps(self, b: int, generator: torch.Generator | None, dev: torch.device) -> tuple[torch.Tensor, ...]:
        """Per-sample keep flags (text, lyrics, speaker), always drawn in this order."""
        p = self.config.cond_dropout
        return tuple(S.keep_mask(b, p, generator, dev) for _ in range(3))

    def flow_loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None,
                  inject_for: Callable[[torch.Tensor], list[Injection] | None] | None = None
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        """The shared objective. Draws, in order: s (logit-normal), eps, the keep flags (text, lyrics,
        speaker), then whatever ``inject_for`` draws (stage B: the melody keep flags)."""
        cfg = self.config
        x0 = stems_latents(batch)
        mask = batch.get("mask")
        b, dev = x0.shape[0], x0.device
        sigma = S.flow_shift(S.logit_normal(b, generator, dev, cfg.logit_mean, cfg.logit_std), cfg.shift).to(x0.dtype)
        eps = S.randn(x0.shape, generator, dev, x0.dtype)
        keep_text, keep_lyrics, keep_speaker = self.draw_keeps(b, generator, dev)
        inject = None if inject_for is None else inject_for(x0)
        sig = sigma[:, None, None]
        x_t = sig * eps + (1 - sig) * x0
        ctx, ctx_mask = self.net.encode(batch, keep_text, keep_lyrics, keep_speaker)
        v = self.net(x_t, sigma, ctx, ctx_mask, mask, inject)
        loss = masked_mean((x_t - sig * v - x0) ** 2, mask)
        with torch.no_grad():
            v_mse = masked_mean((v - (eps - x0)) ** 2, mask)
        return loss, {"loss": float(loss.detach()), "v_mse": float(v_mse), "sigma_mean": float(sigma.mean())}

    def loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
             step: int | None = None, total_steps: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        self.check_batch(batch)
        return self.flow_loss(batch, generator)

    def _branches(self, cond: Mapping[str, torch.Tensor], b: int, dev: torch.device,
                  branches: list[tuple[bool, bool, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Context for several guidance branches stacked on the batch: each (text, lyrics, speaker) on/off."""
        ctxs, masks = [], []
        for kt, kl, ks in branches:
            flags = [torch.full((b,), f, dtype=torch.bool, device=dev) for f in (kt, kl, ks)]
            c, m = self.net.encode(cond, *flags)
            ctxs.append(c)
            masks.append(m)
        return torch.cat(ctxs), torch.cat(masks)

    @torch.no_grad()
    def generate(self, cond_batch: Mapping[str, torch.Tensor], steps: int = 60, guidance: float = 15.0,
                 generator: torch.Generator | None = None, length: int | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """[vocals; accompaniment] latents (B, T, 2C) from the caption (+ lyrics, speaker); APG guidance
        (``guidance`` 1 = conditional only). T from ``length``, else ``cond_batch["mask"]``."""
        self.check_batch(cond_batch, self.cond_keys)
        cfg = self.config
        b, dev = cond_batch["text_emb"].shape[0], cond_batch["text_emb"].device
        t = _length(cond_batch, length)
        mask = cond_batch.get("mask")
        shape = (b, t, 2 * cfg.latent_channels)
        x = S.randn(shape, generator, dev) if noise is None else noise.to(dev)
        branches = [(True, True, True)] + ([(False, False, False)] if guidance != 1.0 else [])
        ctx, ctx_mask = self._branches(cond_batch, b, dev, branches)
        n = len(branches)
        mm = None if mask is None else mask.repeat(n, 1)
        buffer = S.MomentumBuffer(cfg.apg_momentum)

        def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            v = self.net(x.repeat(n, 1, 1), sigma.repeat(n), ctx, ctx_mask, mm)
            if n == 1:
                return v
            v_c, v_u = v.chunk(2)
            return S.apg(v_c, v_u, guidance, buffer, cfg.apg_eta, cfg.apg_norm_threshold)

        x = _euler(velocity, x, steps, cfg.shift)
        return x if mask is None else x * mask[..., None].to(x.dtype)


class MelodyEncoder(nn.Module):
    """f0 (B, T_f0) Hz -> melody features m (B, T, M) at the latent length T."""

    def __init__(self, cfg: SongEchoMelodyConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.melody_kernel
        self.conv1 = nn.Conv1d(melody_channels(cfg.f0_encoding), cfg.melody_dim, k, padding=k // 2)
        self.conv2 = nn.Conv1d(cfg.melody_dim, cfg.melody_dim, k, padding=k // 2)

    def forward(self, f0: torch.Tensor, length: int) -> torch.Tensor:
        h = melody_input(f0.float(), self.cfg.f0_encoding, self.cfg.f0_min_hz, self.cfg.f0_max_hz)
        h = F.relu(self.conv2(F.relu(self.conv1(h))))
        return resample_time(h, length).transpose(1, 2)


class MelodyInjection(nn.Module):
    """One block's melody injection (IA-EiLM, EiLM or addition); zero-initialised output = identity."""

    def __init__(self, kind: str, dim: int, melody_dim: int):
        super().__init__()
        self.kind = kind
        if kind == "ia_eilm":
            self.proj_x = nn.Linear(dim, melody_dim)
            self.proj_m = nn.Linear(melody_dim, melody_dim)
        self.out = nn.Linear(melody_dim, dim if kind == "add" else 2 * dim, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, x: torch.Tensor, m: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) modulated normed state, m (B, T, M), keep (B, 1, 1) 1 = melody on, 0 = identity."""
        c = torch.tanh(self.proj_x(x)) * torch.tanh(self.proj_m(m)) if self.kind == "ia_eilm" else m
        out = self.out(F.silu(c)) * keep
        if self.kind == "add":
            return x + out
        gamma, beta = out.chunk(2, dim=-1)
        return x * (1 + gamma) + beta


class SongEchoMelody(GeneratorModel):
    """Stage B: a frozen :class:`SongEcho` + melody encoder + per-block injections (the only trainables)."""

    batch_keys = SongEcho.batch_keys + ("f0",)
    optional_keys = ("mask",)

    def __init__(self, config: SongEchoMelodyConfig | None = None, backbone: SongEcho | None = None):
        super().__init__()
        self.config = config or SongEchoMelodyConfig()
        if backbone is not None and backbone.config != self.config.backbone:
            raise ValueError("the backbone's config differs from SongEchoMelodyConfig.backbone: "
                             f"{backbone.config.model_dump()} vs {self.config.backbone.model_dump()}")
        self.backbone = backbone if backbone is not None else SongEcho(self.config.backbone)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        bcfg = self.config.backbone
        self.melody = MelodyEncoder(self.config)
        self.injections = nn.ModuleList(MelodyInjection(self.config.injection, bcfg.dim, self.config.melody_dim)
                                        for _ in range(bcfg.n_layers))
        self.cond_keys = self.backbone.cond_keys + ("f0",)
        self.batch_keys = self.backbone.batch_keys + ("f0",)

    def train(self, mode: bool = True) -> SongEchoMelody:
        """Train the melody parts; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly the melody encoder's and the injections' parameters."""
        return [*self.melody.parameters(), *self.injections.parameters()]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained parts (what SongEcho's code checkpoints), keyed as in ``state_dict``."""
        own = {id(p) for p in self.trainable_parameters()}
        return {k: v for k, v in self.state_dict(keep_vars=True).items() if id(v) in own}

    def injections_for(self, m: torch.Tensor, keep: torch.Tensor) -> list[Injection]:
        k = keep[:, None, None].to(m.dtype)
        return [lambda x, inj=inj: inj(x, m, k) for inj in self.injections]

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Mapping[str, torch.Tensor],
                melody_keep: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """v with every condition on (``melody_keep`` None = melody on for all)."""
        b, dev = x_t.shape[0], x_t.device
        ones = torch.ones(b, dtype=torch.bool, device=dev)
        ctx, ctx_mask = self.backbone.net.encode(cond, ones, ones, ones)
        m = self.melody(cond["f0"], x_t.shape[1])
        keep = ones if melody_keep is None else melody_keep
        return self.backbone.net(x_t, sigma, ctx, ctx_mask, mask, self.injections_for(m, keep))

    def loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
             step: int | None = None, total_steps: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Stage A's objective through the frozen backbone with the melody injected; the draws are stage A's
        followed by the melody keep flags, so step 0 reproduces stage A's loss exactly."""
        self.check_batch(batch)

        def inject_for(x0: torch.Tensor) -> list[Injection]:
            keep = S.keep_mask(x0.shape[0], self.config.melody_dropout, generator, x0.device)
            return self.injections_for(self.melody(batch["f0"], x0.shape[1]), keep)

        return self.backbone.flow_loss(batch, generator, inject_for)

    @torch.no_grad()
    def generate(self, cond_batch: Mapping[str, torch.Tensor], steps: int = 60, guidance: float = 15.0,
                 generator: torch.Generator | None = None, length: int | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """[vocals; accompaniment] latents (B, T, 2C) following the f0 melody, with SongEcho's dual APG:
        text-only and text + lyrics + melody branches against the unconditional one. T from ``length``, the
        ``mask``, or the f0 length at ``latent_rate_hz``."""
        self.check_batch(cond_batch, self.cond_keys)
        cfg, bcfg = self.config, self.config.backbone
        b, dev = cond_batch["text_emb"].shape[0], cond_batch["text_emb"].device
        t = _length(cond_batch, length, cfg.latent_rate_hz)
        mask = cond_batch.get("mask")
        x = S.randn((b, t, 2 * bcfg.latent_channels), generator, dev) if noise is None else noise.to(dev)
        m = self.melody(cond_batch["f0"], t)
        guided = guidance != 1.0
        # branch order: full (text + lyrics + speaker + melody), text only, unconditional
        branches = [(True, True, True)] + ([(True, False, True), (False, False, False)] if guided else [])
        n = len(branches)
        ctx, ctx_mask = self.backbone._branches(cond_batch, b, dev, branches)
        keep = torch.zeros(n * b, dtype=torch.bool, device=dev)
        keep[:b] = True
        inject = self.injections_for(m.repeat(n, 1, 1), keep)
        mm = None if mask is None else mask.repeat(n, 1)
        buffer = S.MomentumBuffer(bcfg.apg_momentum)

        def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            v = self.backbone.net(x.repeat(n, 1, 1), sigma.repeat(n), ctx, ctx_mask, mm, inject)
            if n == 1:
                return v
            v_full, v_text, v_u = v.chunk(3)
            return S.apg_dual(v_text, v_full, v_u, guidance, cfg.w_text, cfg.w_melody, buffer, bcfg.apg_eta,
                              bcfg.apg_norm_threshold)

        x = _euler(velocity, x, steps, bcfg.shift)
        return x if mask is None else x * mask[..., None].to(x.dtype)
