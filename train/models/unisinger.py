"""UniSinger: one MM-DiT for speaker-cloning song generation and accompaniment co-generating singing voice
conversion (SVC), trained by rectified flow under task-specific modality masks and a curriculum.

UniSinger has no public code and its text gives no sizes: this is the proposed design of generators.md,
every choice below ours. Reads (batch keys, default config): ``vocals_latents``, ``accompaniment_latents``
(B, T, C), ``text_emb`` (B, D_text), ``phonemes`` (B, L) (0 = pad), ``f0`` (B, T_f0) Hz at 100 Hz,
``reference_vocals_latents`` (B, T_ref, C) the vocal latents of the sample's reference window (another,
non-overlapping window of the same song, the one whose accompaniment tokens LaDA-Band reads); optional
``mask``. With ``content_source="units"`` also ``units`` (B, T_u) at 50 Hz; with
``speaker_source="embedding"`` ``speaker`` (B, D_spk) instead of the reference latents (read
``model.batch_keys``). Generates (B, T, 2C) [vocals; accompaniment] latents (``base.split_stems``).

Network: the audio stream is Linear([vocal; accompaniment latents]) (T tokens); the condition stream is
[phoneme embeddings (L); content tokens (T) = content embedding + f0 embedding, both resampled to the latent
length by linear interpolation; one caption token]. Each double-stream block has per stream its own
adaLN-Zero (shift/scale/gate for attention and MLP from the condition vector), QKV with QK-RMSNorm, output
projection and SwiGLU MLP; attention is one softmax over both streams' tokens (MM-DiT, SD3). RoPE on every
token by its time: audio and content frames by frame index (so a content frame and the audio frame it
describes share a position), phonemes spread evenly over the window (position i * T / L_valid: a monotonic
alignment prior, the lyrics of a window span it), the caption token unrotated. The condition vector is
timestep embedding + speaker projection; the last block's condition stream stops after attention (SD3's
context_pre_only, so no parameter is left without gradient under DDP). Final adaLN + zero-init Linear.
Ours, on by default (``content_alignment_bias`` 4.0; 0 = the plain MM-DiT): a learned per-head bias on the score
from audio frame i to content token i, so a frame can read its own content and f0 from the first SVC step. Measured
on the synthetic corpus (bench/RESULTS.md; 3,000 steps, lr 1e-3, pitch bins): without it the best head per block
puts at most 30% of its attention on its frame's content token (+-1) and RPA is 0.42; with it up to 46%, RPA 0.69.

Objective: rectified flow, x_t = (1 - t) x0 + t eps, target eps - x0, t logit-normal(0, 1); MSE over valid
frames. Tasks: song generation nulls the content and f0 (keeps phonemes, caption, speaker); SVC nulls the
phonemes (keeps content, f0, caption, speaker); both generate vocals *and* accompaniment. A nulled modality's
tokens are masked out of attention (speaker: its projection is dropped from the condition vector), and each
modality is also nulled per sample with p = 0.1 (CFG). Curriculum (``task_probabilities``): song only for the
first 30% of steps, then the SVC share ramps linearly to 50% at 60% and stays there. Sampler: Euler over 32
uniform steps from t = 1 to 0 with CFG (2.5) against the all-nulled condition.

The lite profile has no content units and no speaker embedding, so the default config uses, deliberately:
- SVC content = the vocal latents, liftered, instance-normalised over the window per channel, through a
  learned 8-wide per-frame bottleneck (``content_bottleneck``). The lifter (``content_lifter``: the first 20
  DCT coefficients of each log-mel frame across its channels, an MFCC) keeps the spectral envelope, where the
  phonetic content is, and drops the harmonics' fine structure, where the pitch is: measured on the synthetic
  corpus, a linear read of the pitch bins from the unliftered content explains 0.45 of their held-out
  variance and 0.000 after the lifter, with voicing unchanged (0.585); unliftered, the content would give SVC
  the source's pitch and make the f0 modality redundant. Instance norm removes the window's mean envelope and
  level, the strongest timbre cue of a log-mel (AdaIN-VC), and the narrow bottleneck leaves room for little
  more than phonetic and dynamic content (AutoVC): the model must take timbre from the speaker pathway, which
  is what conversion swaps, and pitch from f0, which is its own modality. Raw vocal latents would let SVC
  copy the target, and the embedded tokens are nearest log-mel centroids, as timbre-laden as the latents.
- Speaker = a small learned encoder (two convolutions, mean + std pooling) over the *reference window's*
  vocal latents, not the target window's, so the embedding carries the singer's timbre but not the
  target's content (UniSinger's speaker embedding also comes from another window of the same singer). The
  same pathway serves both tasks (the paper's unified speaker space). ``window_latents`` reads the target
  window instead when the loader has no reference latents (more leakage; a fallback, not a method).
The full profile (``paper()``) reads HuBERT k-means units and the ECAPA speaker embedding instead.

Parameter counts (``count_parameters``, tested): compact default 14.14M (128 latent channels, D 256, 6 blocks, 4 heads);
proposed paper scale 0.597B (D 1024, 16 blocks, 16 heads, units + ECAPA).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from songcorpus.schemas.train_models import UniSingerConfig
from songcorpus.train.models import schedules as S
from songcorpus.train.models.base import GeneratorModel, stems_latents
from songcorpus.train.models.blocks import (
    AdaLNZero,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    TimestepEmbedding,
    apply_rope,
    attend,
    dct_basis,
    masked_mean,
    melody_channels,
    melody_input,
    merge_heads,
    modulate,
    resample_time,
    split_heads,
    swiglu_hidden,
)

MODALITIES = ("phonemes", "content", "f0", "text", "speaker")
TASKS = ("song", "svc")
TASK_MODALITIES: dict[str, frozenset[str]] = {
    "song": frozenset({"phonemes", "text", "speaker"}),   # nulls content (units) and f0
    "svc": frozenset({"content", "f0", "text", "speaker"}),  # nulls lyrics (phonemes)
}


def task_probabilities(step: int, total_steps: int, cfg: UniSingerConfig | None = None) -> dict[str, float]:
    """The curriculum's task mix at ``step`` of ``total_steps``: song only for the first
    ``curriculum_song_only`` of training, then the SVC share ramps linearly to ``svc_max_share`` at
    ``curriculum_ramp_end`` and holds."""
    cfg = cfg or UniSingerConfig()
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    frac = step / total_steps
    lo, hi = cfg.curriculum_song_only, cfg.curriculum_ramp_end
    if frac < lo:
        svc = 0.0
    elif frac >= hi:
        svc = cfg.svc_max_share
    else:
        svc = cfg.svc_max_share * (frac - lo) / (hi - lo)
    return {"song": 1.0 - svc, "svc": svc}


def task_keeps(is_svc: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample modality flags (True = present) that a task's mask leaves: (B,) bool each."""
    is_svc = is_svc.bool()
    return {m: (is_svc & (m in TASK_MODALITIES["svc"])) | (~is_svc & (m in TASK_MODALITIES["song"])) for m in MODALITIES}


class SpeakerEncoder(nn.Module):
    """(B, T, C) vocal latents -> (B, D): two convolutions, mean + std pooling over time, a projection."""

    def __init__(self, channels: int, hidden: int, dim: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv1d(hidden, hidden, 3, padding=1)
        self.proj = nn.Linear(2 * hidden, dim)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv2(F.silu(self.conv1(latents.transpose(1, 2)))))
        return self.proj(torch.cat([h.mean(dim=-1), h.std(dim=-1, unbiased=False)], dim=-1))


class F0Encoder(nn.Module):
    """f0 (B, T_f0) Hz -> (B, T, D) at the latent length (SongEcho's features, two convs, interpolation).

    The first convolution is initialised as an embedding table, weights N(0, 1/kernel), not PyTorch's
    1/fan-in: its input is one-hot-like (with ``f0_encoding: bins`` a few of 129 channels are non-zero per
    frame), so the fan-in init scaled the pitch signal down by about sqrt(129). Measured with it: after 3,000
    steps the f0 tokens varied over time 30x less than the content tokens they are added to (std 0.011 against
    0.327), and the trained model ignored f0 entirely (its held-out loss did not move when f0 was nulled)."""

    def __init__(self, channels: int, dim: int, encoding: str = "log"):
        super().__init__()
        self.encoding = encoding
        self.conv1 = nn.Conv1d(melody_channels(encoding), channels, 5, padding=2)
        nn.init.normal_(self.conv1.weight, std=1.0 / math.sqrt(self.conv1.kernel_size[0]))
        self.conv2 = nn.Conv1d(channels, channels, 5, padding=2)
        self.proj = nn.Linear(channels, dim)

    def forward(self, f0: torch.Tensor, length: int) -> torch.Tensor:
        h = F.silu(self.conv2(F.silu(self.conv1(melody_input(f0.float(), self.encoding)))))
        return self.proj(resample_time(h, length).transpose(1, 2))


def instance_norm(x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """(B, T, C) normalised per sample and channel over the valid frames."""
    m = torch.ones_like(x[..., :1]) if mask is None else mask[..., None].to(x.dtype)
    n = m.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (x * m).sum(dim=1, keepdim=True) / n
    var = (((x - mean) * m) ** 2).sum(dim=1, keepdim=True) / n
    return (x - mean) / (var + eps).sqrt() * m


def content_frames(latents: torch.Tensor, mask: torch.Tensor | None, lifter: torch.Tensor | None) -> torch.Tensor:
    """The lite SVC content before its learned bottleneck: (B, T, C) vocal latents -> liftered (``lifter``, a
    (C, K) :func:`dct_basis`; None = every channel) and instance-normalised (B, T, K) frames."""
    if lifter is not None:
        latents = latents @ lifter.to(latents.dtype)
    return instance_norm(latents, mask)


class StreamLayer(nn.Module):
    """One stream's half of an MM-DiT block: adaLN-Zero, QKV + QK-RMSNorm, out projection, SwiGLU."""

    def __init__(self, dim: int, n_heads: int, ffn: int, pre_only: bool = False):
        super().__init__()
        self.n_heads, self.pre_only = n_heads, pre_only
        self.ada = AdaLNZero(dim, dim, 2 if pre_only else 6)
        self.norm1 = RMSNorm(dim, affine=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm = RMSNorm(dim // n_heads), RMSNorm(dim // n_heads)
        if not pre_only:
            self.out = nn.Linear(dim, dim)
            self.norm2 = RMSNorm(dim, affine=False)
            self.mlp = SwiGLU(dim, ffn)

    def pre(self, x: torch.Tensor, vec: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        mods = self.ada(vec)
        h = modulate(self.norm1(x), mods[0], mods[1])
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(h).chunk(3, dim=-1))
        q, k = apply_rope(self.q_norm(q), *rope), apply_rope(self.k_norm(k), *rope)
        return q, k, v, mods

    def post(self, x: torch.Tensor, attn: torch.Tensor, mods: tuple[torch.Tensor, ...]) -> torch.Tensor:
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa * self.out(merge_heads(attn))
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class MMDiTBlock(nn.Module):
    """One double-stream block. With ``content_alignment_bias`` > 0 each head has a learned bias, initialised to
    that value, on the score from audio frame i to content token i (the condition stream is [phonemes (L);
    content (T); caption (1)])."""

    def __init__(self, cfg: UniSingerConfig, last: bool):
        super().__init__()
        ffn = swiglu_hidden(cfg.dim, cfg.ffn_mult)
        self.audio = StreamLayer(cfg.dim, cfg.n_heads, ffn)
        self.cond = StreamLayer(cfg.dim, cfg.n_heads, ffn, pre_only=last)
        self.alignment_bias = (nn.Parameter(torch.full((cfg.n_heads,), float(cfg.content_alignment_bias)))
                               if cfg.content_alignment_bias else None)

    def score_bias(self, t_audio: int, t_cond: int, dtype: torch.dtype) -> torch.Tensor | None:
        """(1, H, T, T) attention-score bias over the joint sequence (T = T_audio + T_cond), or None: the head's
        bias from audio query i to content key i, zero for every other pair (the condition stream's queries
        get none)."""
        if self.alignment_bias is None:
            return None
        b, dev = self.alignment_bias.to(dtype), self.alignment_bias.device
        total, start = t_audio + t_cond, t_audio + (t_cond - t_audio - 1)  # content keys follow audio, phonemes
        out = torch.zeros(b.shape[0], total, total, device=dev, dtype=dtype)
        frames = torch.arange(t_audio, device=dev)
        out[:, frames, start + frames] = b[:, None]
        return out[None]

    def forward(self, x: torch.Tensor, c: torch.Tensor, vec: torch.Tensor, rope_x, rope_c,
                key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qx, kx, vx, mx = self.audio.pre(x, vec, rope_x)
        qc, kc, vc, mc = self.cond.pre(c, vec, rope_c)
        out = attend(torch.cat([qx, qc], dim=2), torch.cat([kx, kc], dim=2), torch.cat([vx, vc], dim=2), key_mask,
                     bias=self.score_bias(x.shape[1], c.shape[1], qx.dtype))
        ox, oc = out.split([x.shape[1], c.shape[1]], dim=2)
        x = self.audio.post(x, ox, mx)
        if not self.cond.pre_only:
            c = self.cond.post(c, oc, mc)
        return x, c


class UniSingerNet(nn.Module):
    """(x_t (B, T, 2C), t (B,), condition batch, modality flags) -> velocity (B, T, 2C)."""

    def __init__(self, cfg: UniSingerConfig):
        super().__init__()
        self.cfg = cfg
        d, c = cfg.dim, cfg.latent_channels
        self.audio_in = nn.Linear(2 * c, d)
        self.time_embed = TimestepEmbedding(cfg.timestep_channels, d)
        self.text_proj = nn.Linear(cfg.text_dim, d)
        self.phoneme_embed = nn.Embedding(cfg.phoneme_vocab_size, d, padding_idx=0)
        if cfg.content_source == "units":
            self.unit_embed = nn.Embedding(cfg.n_units, d)
        else:
            width = cfg.content_lifter or c
            if cfg.content_lifter:  # not saved: a function of the config
                self.register_buffer("lifter", dct_basis(c, cfg.content_lifter), persistent=False)
            self.content_down = nn.Linear(width, cfg.content_bottleneck)
            self.content_up = nn.Linear(cfg.content_bottleneck, d)
        self.f0_enc = F0Encoder(cfg.f0_channels, d, cfg.f0_encoding)
        if cfg.speaker_source == "embedding":
            self.speaker_proj = nn.Linear(cfg.speaker_dim, d)
        else:
            self.speaker_enc = SpeakerEncoder(c, cfg.speaker_encoder_dim, d)
        self.blocks = nn.ModuleList(MMDiTBlock(cfg, last=i == cfg.n_layers - 1) for i in range(cfg.n_layers))
        self.final_ada = AdaLNZero(d, d, 2)
        self.final_norm = RMSNorm(d, affine=False)
        self.final = nn.Linear(d, 2 * c)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        self.rope = RotaryEmbedding(d // cfg.n_heads, cfg.rope_theta)

    def speaker(self, cond: Mapping[str, torch.Tensor], training: bool) -> torch.Tensor:
        src = self.cfg.speaker_source
        if src == "embedding":
            return self.speaker_proj(cond["speaker"])
        key = "vocals_latents" if (src == "window_latents" and training) else "reference_vocals_latents"
        return self.speaker_enc(cond[key])

    def content(self, cond: Mapping[str, torch.Tensor], length: int, mask: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.content_source == "units":
            e = self.unit_embed(cond["units"].long()).transpose(1, 2)
            return resample_time(e, length).transpose(1, 2)
        lifter = self.lifter if self.cfg.content_lifter else None
        h = self.content_down(content_frames(cond["vocals_latents"], mask, lifter))
        return self.content_up(resample_time(h.transpose(1, 2), length).transpose(1, 2))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor], keeps: dict[str, torch.Tensor],
                mask: torch.Tensor | None = None, training: bool = True) -> torch.Tensor:
        b, length, dev = x_t.shape[0], x_t.shape[1], x_t.device
        dt = x_t.dtype
        frames = torch.ones(b, length, dtype=torch.bool, device=dev) if mask is None else mask.bool()
        # condition stream: [phonemes (L); content + f0 (T); caption (1)]
        ph = cond["phonemes"].long()
        ph_tok = self.phoneme_embed(ph)
        ph_valid = (ph != 0) & keeps["phonemes"][:, None]
        k_c, k_f = keeps["content"][:, None, None].to(dt), keeps["f0"][:, None, None].to(dt)
        # computed even when every sample nulls them, so every parameter is in the graph (DDP)
        content_tok = self.content(cond, length, mask) * k_c + self.f0_enc(cond["f0"], length) * k_f
        content_valid = frames & (keeps["content"] | keeps["f0"])[:, None]
        text = cond["text_emb"]
        text_tok = self.text_proj(text * keeps["text"][:, None].to(text.dtype))[:, None]
        c = torch.cat([ph_tok, content_tok, text_tok], dim=1)
        c_valid = torch.cat([ph_valid, content_valid, torch.ones(b, 1, dtype=torch.bool, device=dev)], dim=1)
        # RoPE: audio/content by frame, phonemes spread over the window, caption unrotated
        cos_t, sin_t = self.rope(length, dev, dt)
        n_ph = (ph != 0).sum(dim=1, keepdim=True).clamp_min(1)
        ph_pos = torch.arange(ph.shape[1], device=dev)[None].float() * (length / n_ph)
        cos_p, sin_p = self.rope.angles(ph_pos, dt)
        rope_x = (cos_t, sin_t)
        hd = cos_t.shape[-1]
        rope_c = (torch.cat([cos_p, cos_t.expand(b, -1, -1), torch.ones(b, 1, hd, device=dev, dtype=dt)], dim=1)[:, None],
                  torch.cat([sin_p, sin_t.expand(b, -1, -1), torch.zeros(b, 1, hd, device=dev, dtype=dt)], dim=1)[:, None])
        vec = self.time_embed(t * 1000.0)
        vec = vec + self.speaker(cond, training) * keeps["speaker"][:, None].to(dt)
        x = self.audio_in(x_t if mask is None else x_t * mask[..., None].to(dt))
        key_mask = torch.cat([frames, c_valid], dim=1)
        for block in self.blocks:
            x, c = block(x, c, vec, rope_x, rope_c, key_mask)
        shift, scale = self.final_ada(vec)
        return self.final(modulate(self.final_norm(x), shift, scale))


class UniSinger(GeneratorModel):
    """UniSinger generator: curriculum of task masks, rectified-flow loss, Euler sampler with CFG."""

    batch_keys = ("vocals_latents", "accompaniment_latents", "text_emb", "phonemes", "f0", "reference_vocals_latents")
    optional_keys = ("mask",)

    def __init__(self, config: UniSingerConfig | None = None):
        super().__init__()
        self.config = config or UniSingerConfig()
        self.net = UniSingerNet(self.config)
        cfg = self.config
        extra = ("units",) if cfg.content_source == "units" else ()
        extra += {"embedding": ("speaker",), "reference_latents": ("reference_vocals_latents",),
                  "window_latents": ()}[cfg.speaker_source]
        self.batch_keys = ("vocals_latents", "accompaniment_latents", "text_emb", "phonemes", "f0") + extra

    def task_probabilities(self, step: int, total_steps: int) -> dict[str, float]:
        return task_probabilities(step, total_steps, self.config)

    def sample_tasks(self, b: int, step: int, total_steps: int, generator: torch.Generator | None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """(b,) bool, True = SVC, drawn with the curriculum's share at ``step``."""
        return S.rand((b,), generator, device) < self.task_probabilities(step, total_steps)["svc"]

    def loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
             step: int | None = None, total_steps: int | None = None,
             null: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict[str, float]]:
        """Rectified-flow MSE under the task masks. Needs ``step`` and ``total_steps`` (the curriculum).
        Draws, in order: the tasks, t, eps, one CFG keep flag per modality (MODALITIES order). ``null``: modalities
        nulled in every sample after the draws (the same draws otherwise), for probes of what a model uses."""
        if step is None or total_steps is None:
            raise ValueError("UniSinger.loss needs step and total_steps: its task mix follows the curriculum")
        unknown = sorted(set(null) - set(MODALITIES))
        if unknown:
            raise ValueError(f"null names unknown modalities {unknown}; choose from {MODALITIES}")
        self.check_batch(batch)
        cfg = self.config
        x0 = stems_latents(batch)
        mask = batch.get("mask")
        b, dev = x0.shape[0], x0.device
        is_svc = self.sample_tasks(b, step, total_steps, generator, dev)
        t = S.logit_normal(b, generator, dev, cfg.logit_mean, cfg.logit_std).to(x0.dtype)
        eps = S.randn(x0.shape, generator, dev, x0.dtype)
        task = task_keeps(is_svc)
        keeps = {m: task[m] & S.keep_mask(b, cfg.modality_dropout, generator, dev) for m in MODALITIES}
        keeps = {m: torch.zeros_like(k) if m in null else k for m, k in keeps.items()}
        tt = t[:, None, None]
        x_t = (1 - tt) * x0 + tt * eps
        v = self.net(x_t, t, batch, keeps, mask)
        err = (v - (eps - x0)) ** 2
        loss = masked_mean(err, mask)
        with torch.no_grad():
            m = torch.ones(x0.shape[:2], device=dev) if mask is None else mask.float()
            per = (err.mean(dim=-1) * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
            terms = {"loss": float(loss.detach()), "svc_share": float(is_svc.float().mean())}
            for name, sel in (("loss_song", ~is_svc), ("loss_svc", is_svc)):
                if bool(sel.any()):
                    terms[name] = float(per[sel].mean())
        return loss, terms

    def condition_keys(self, task: str) -> tuple[str, ...]:
        """The condition tensors ``generate`` needs for ``task``."""
        cfg = self.config
        spk = ("speaker",) if cfg.speaker_source == "embedding" else ("reference_vocals_latents",)
        if task == "song":
            return ("text_emb", "phonemes") + spk
        content = ("units",) if cfg.content_source == "units" else ("vocals_latents",)
        return ("text_emb", "f0") + content + spk

    @torch.no_grad()
    def generate(self, cond_batch: Mapping[str, torch.Tensor], steps: int = 32, guidance: float = 2.5,
                 generator: torch.Generator | None = None, task: str = "song", length: int | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """[vocals; accompaniment] latents (B, T, 2C). ``task`` "song": from lyrics, caption and a speaker
        reference; "svc": the source vocals' content and f0 in the reference speaker's voice, with a new
        accompaniment. T from ``length``, ``mask``, the source vocal latents, or f0 at ``latent_rate_hz``."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.check_batch(cond_batch, self.condition_keys(task))
        cfg = self.config
        text = cond_batch["text_emb"]
        b, dev = text.shape[0], text.device
        if length is None:
            if "mask" in cond_batch:
                length = cond_batch["mask"].shape[1]
            elif "vocals_latents" in cond_batch:
                length = cond_batch["vocals_latents"].shape[1]
            elif "f0" in cond_batch:
                length = int(round(cond_batch["f0"].shape[1] * cfg.latent_rate_hz / 100.0))
            else:
                raise ValueError("generation needs a length: pass length=..., or a 'mask' (B, T)")
        mask = cond_batch.get("mask")
        cond = dict(cond_batch)
        if "phonemes" not in cond:  # SVC reads no lyrics: an all-pad phoneme row
            cond["phonemes"] = torch.zeros(b, 1, dtype=torch.long, device=dev)
        if "f0" not in cond:  # song generation reads no f0
            cond["f0"] = torch.zeros(b, max(1, length * 4), device=dev)
        if cfg.content_source == "latents" and "vocals_latents" not in cond:
            cond["vocals_latents"] = torch.zeros(b, length, cfg.latent_channels, device=dev)
        if cfg.content_source == "units" and "units" not in cond:
            cond["units"] = torch.zeros(b, 2 * length, dtype=torch.long, device=dev)
        is_svc = torch.full((b,), task == "svc", dtype=torch.bool, device=dev)
        on = task_keeps(is_svc)
        guided = guidance != 1.0
        n = 2 if guided else 1
        keeps = {m: torch.cat([on[m], torch.zeros_like(on[m])]) if guided else on[m] for m in MODALITIES}
        cond_n = {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in cond.items() if torch.is_tensor(v)}
        mm = None if mask is None else mask.repeat(n, 1)
        x = S.randn((b, length, 2 * cfg.latent_channels), generator, dev) if noise is None else noise.to(dev)
        ts = torch.linspace(1.0, 0.0, steps + 1, device=dev, dtype=torch.float64)
        for i in range(steps):
            t = torch.full((n * b,), float(ts[i]), device=dev, dtype=x.dtype)
            v = self.net(x.repeat(n, 1, 1), t, cond_n, keeps, mm, training=False)
            if guided:
                v_c, v_u = v.chunk(2)
                v = S.cfg(v_c, v_u, guidance)
            x = x + float(ts[i + 1] - ts[i]) * v
        return x if mask is None else x * mask[..., None].to(x.dtype)
