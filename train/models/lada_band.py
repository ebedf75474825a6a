"""LaDA-Band: vocal-to-accompaniment by discrete masked diffusion over codec tokens (bidirectional LLaMA).

Reads (batch keys): ``vocals_tokens`` (B, T) and ``accompaniment_tokens`` (B, T) int64 codebook ids of the
same window, ``reference_tokens`` (B, T_ref) the accompaniment tokens of another window of the same song,
``text_emb`` (B, D_text) the caption embedding; optional ``mask`` (B, T) valid frames. Generates
accompaniment tokens (B, T) from vocal tokens (+ caption and reference).

Follows the code (Duoluoluos/TME-LaDA-Band, ``model/semantic_mlm_clamp.py``, ``module/llada.py``,
``utils/mask.py``):
- input = [voc_embed(vocal ids) (D/2); acc_embed(masked accompaniment ids) (D/2)] on features; ids
  ``vocab`` = vocal pad and accompaniment mask, ``vocab + 1`` = accompaniment pad; a prefix of P = 2 slots
  [Linear(text_emb), Linear(reference embedding)] before the frames; LLaMA blocks (RMSNorm, RoPE over
  prefix + frames, GQA, SwiGLU) with bidirectional attention, a final RMSNorm; heads Linear(D -> vocab, no
  bias) and the replaced-token-detection Linear(D -> 1).
- loss: r from a scrambled Sobol sequence, mask ratio gamma = cos(r pi/2), each valid token masked with
  probability gamma; cross-entropy over the masked tokens (mean over masked tokens of the batch) +
  0.2 * BCE of the RTD head over every valid position of a second pass whose input is the argmax-filled
  sequence (labels: filled != original); the second pass runs without gradient to the backbone
  (``rtd_backbone_grad`` false, as the code), so only the RTD head learns from it. Prefix dropout 0.5 per
  sample and slot (a nulled slot is a zero vector before its projection, as CLaMP3 dropout in the code).
- sampler (VampNet style): S steps; each samples every masked position from top-p 0.9 then top-k 100
  filtered logits at temperature 1, keeps decoded positions, and re-masks the
  n = floor(cos((i+1)/S pi/2) T) lowest-confidence of the positions that were masked at the step's start,
  confidence = log p + 10.5 (1 - (i+1)/S) Gumbel; the vocal ids are read, never written.
Where it departs from the code, and why:
- The reference embedding: the paper embeds the reference audio with frozen CLaMP3 (768-d); models here
  read no audio, so the reference window's accompaniment tokens go through a learned embedding table, are
  mean-pooled, and projected (Linear(reference_dim -> D)).
- The caption embedding is the corpus' MiniLM sentence embedding (384-d), not CLaMP3 text (768-d).
- Batched generation (the code decodes one sequence) and an optional logit CFG (``guidance`` != 1 mixes a
  pass with both prefix slots nulled; 1 = the code's sampler, one pass per step).
- No attention dropout (the code: 0.1): dropout would draw from torch's global RNG, outside the generator.
- A fresh Sobol engine per call, scrambled by a seed drawn from the generator (the code keeps one engine
  for the run, which a resume cannot restore).

Parameter counts (``count_parameters``, tested): compact default 8.56M (D 256, 8 layers, 8/2 heads, SwiGLU
1024, 1024 codes); paper 1.06B (D 2048, 16 layers, 32/8 heads, SwiGLU 8192, 16384 codes, 768-d prefixes).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from songcorpus.schemas.train_models import LadaBandConfig
from songcorpus.train.models import schedules as S
from songcorpus.train.models.base import GeneratorModel
from songcorpus.train.models.blocks import RMSNorm, RotaryEmbedding, TransformerBlock, time_pool

PREFIX_SLOTS = 2  # [text, reference]


class LadaBandNet(nn.Module):
    """(vocal ids, accompaniment ids with masks, text, reference, keep flags) -> (logits, final hidden)."""

    def __init__(self, cfg: LadaBandConfig):
        super().__init__()
        self.cfg = cfg
        v, d = cfg.vocab_size, cfg.dim
        self.voc_embed = nn.Embedding(v + 1, d // 2)
        self.acc_embed = nn.Embedding(v + 2, d // 2)
        self.ref_embed = nn.Embedding(v, cfg.reference_dim)
        self.text_proj = nn.Linear(cfg.text_dim, d)
        self.ref_proj = nn.Linear(cfg.reference_dim, d)
        self.layers = nn.ModuleList(TransformerBlock(d, cfg.n_heads, cfg.ffn_dim, cfg.n_kv_heads, cfg.norm_eps)
                                    for _ in range(cfg.n_layers))
        self.norm = RMSNorm(d, cfg.norm_eps)
        self.to_logits = nn.Linear(d, v, bias=False)
        self.rtd_head = nn.Linear(d, 1)
        self.rope = RotaryEmbedding(d // cfg.n_heads, cfg.rope_theta)

    def reference_embedding(self, reference_tokens: torch.Tensor) -> torch.Tensor:
        """Mean-pooled learned embedding of the reference window's tokens, (B, reference_dim)."""
        return time_pool(self.ref_embed(reference_tokens), None)

    def prefix(self, text_emb: torch.Tensor, ref: torch.Tensor, keep_text: torch.Tensor,
               keep_ref: torch.Tensor) -> torch.Tensor:
        """(B, 2, D): nulled slots are zero vectors before their projection."""
        t = text_emb * keep_text[:, None].to(text_emb.dtype)
        r = ref * keep_ref[:, None].to(ref.dtype)
        return torch.stack([self.text_proj(t), self.ref_proj(r)], dim=1)

    def forward(self, voc: torch.Tensor, acc: torch.Tensor, prefix: torch.Tensor,
                valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.voc_embed(voc), self.acc_embed(acc)], dim=-1)
        x = torch.cat([prefix.to(x.dtype), x], dim=1)
        key_mask = None
        if valid is not None:
            key_mask = F.pad(valid.bool(), (PREFIX_SLOTS, 0), value=True)
        rope = self.rope(x.shape[1], x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, rope, key_mask)
        h = self.norm(x)[:, PREFIX_SLOTS:]
        return self.to_logits(h), h


class LadaBand(GeneratorModel):
    """LaDA-Band generator: masked CE + RTD loss and the VampNet-style remasking sampler."""

    batch_keys = ("vocals_tokens", "accompaniment_tokens", "reference_tokens", "text_emb")
    optional_keys = ("mask",)

    def __init__(self, config: LadaBandConfig | None = None):
        super().__init__()
        self.config = config or LadaBandConfig()
        self.net = LadaBandNet(self.config)
        v = self.config.vocab_size
        self.voc_pad, self.acc_mask, self.acc_pad = v, v, v + 1

    def _inputs(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        voc = batch["vocals_tokens"].long()
        mask = batch.get("mask")
        valid = None if mask is None else mask.bool()
        if valid is not None:
            voc = torch.where(valid, voc, torch.full_like(voc, self.voc_pad))
        ref = self.net.reference_embedding(batch["reference_tokens"].long())
        return voc, valid, ref

    def loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
             step: int | None = None, total_steps: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked CE + rtd_weight * RTD BCE. Draws, in order: the Sobol seed, the token masks, the two prefix
        keep flags."""
        self.check_batch(batch)
        voc, valid, ref = self._inputs(batch)
        acc = batch["accompaniment_tokens"].long()
        b, t = acc.shape
        dev = acc.device
        valid_b = torch.ones_like(acc, dtype=torch.bool) if valid is None else valid
        gamma = S.cosine_mask_ratio(S.sobol_uniform(b, generator, dev))
        masked = (S.rand((b, t), generator, dev) < gamma[:, None]) & valid_b
        keep_text = S.keep_mask(b, self.config.prefix_dropout, generator, dev)
        keep_ref = S.keep_mask(b, self.config.prefix_dropout, generator, dev)
        prefix = self.net.prefix(batch["text_emb"], ref, keep_text, keep_ref)
        acc_in = torch.where(masked, torch.full_like(acc, self.acc_mask), acc)
        acc_in = torch.where(valid_b, acc_in, torch.full_like(acc, self.acc_pad))
        logits, _ = self.net(voc, acc_in, prefix, valid)
        n_masked = int(masked.sum())
        if n_masked:
            ce = F.cross_entropy(logits[masked].float(), acc[masked])
        else:  # nothing masked in the whole batch: no MLM signal, keep the graph
            ce = logits.sum() * 0.0
        with torch.no_grad():
            filled = torch.where(masked, logits.argmax(dim=-1), acc)
            filled_in = torch.where(valid_b, filled, torch.full_like(acc, self.acc_pad))
            rtd_labels = (filled != acc).float()
        if self.config.rtd_backbone_grad:
            _, hidden = self.net(voc, filled_in, prefix, valid)
        else:
            with torch.no_grad():
                _, hidden = self.net(voc, filled_in, prefix, valid)
            hidden = hidden.detach()
        rtd_logits = self.net.rtd_head(hidden).squeeze(-1)
        rtd = F.binary_cross_entropy_with_logits(rtd_logits[valid_b].float(), rtd_labels[valid_b])
        loss = ce + self.config.rtd_weight * rtd
        with torch.no_grad():
            terms = {"loss": float(loss), "mlm": float(ce), "rtd": float(rtd),
                     "mask_ratio": float(masked.sum() / valid_b.sum().clamp_min(1)),
                     "rtd_acc": float(((rtd_logits[valid_b] > 0).float() == rtd_labels[valid_b]).float().mean())}
            if n_masked:
                lm = logits[masked]
                terms["top1"] = float((lm.argmax(-1) == acc[masked]).float().mean())
                k = min(10, lm.shape[-1])
                terms["top10"] = float((lm.topk(k, dim=-1).indices == acc[masked][:, None]).any(-1).float().mean())
        return loss, terms

    @torch.no_grad()
    def generate(self, cond_batch: Mapping[str, torch.Tensor], steps: int = 36, guidance: float = 1.0,
                 generator: torch.Generator | None = None, top_p: float | None = None, top_k: int | None = None,
                 temperature: float | None = None, mask_temperature: float | None = None,
                 trace: list[dict[str, torch.Tensor]] | None = None, keep_reference: bool = True) -> torch.Tensor:
        """Accompaniment tokens (B, T) for ``vocals_tokens`` (+ ``text_emb``, ``reference_tokens``).

        Invalid frames (``mask`` False) come back as the accompaniment pad id (vocab + 1). ``trace``, when a
        list, receives one dict per step: the vocal ids the network read, the tokens and the mask after it.
        Sampling settings default to the config's (top-p 0.9, top-k 100, temperature 1, Gumbel 10.5).
        ``keep_reference`` False nulls the reference slot (no reference audio; prefix dropout trains it).
        """
        self.check_batch(cond_batch, ("vocals_tokens", "reference_tokens", "text_emb"))
        cfg = self.config
        top_p = cfg.top_p if top_p is None else top_p
        top_k = cfg.top_k if top_k is None else top_k
        temperature = cfg.temperature if temperature is None else temperature
        mask_temperature = cfg.mask_temperature if mask_temperature is None else mask_temperature
        voc, valid, ref = self._inputs(cond_batch)
        b, t = voc.shape
        dev = voc.device
        valid_b = torch.ones_like(voc, dtype=torch.bool) if valid is None else valid
        n_valid = valid_b.sum(dim=-1)
        ones = torch.ones(b, dtype=torch.bool, device=dev)
        prefix = self.net.prefix(cond_batch["text_emb"], ref, ones, ones if keep_reference else ~ones)
        null_prefix = self.net.prefix(cond_batch["text_emb"], ref, ~ones, ~ones) if guidance != 1.0 else None
        x = torch.where(valid_b, torch.full_like(voc, self.acc_mask), torch.full_like(voc, self.acc_pad))
        masked = valid_b.clone()
        for i in range(steps):
            logits, _ = self.net(voc, x, prefix, valid)
            if null_prefix is not None:
                logits_u, _ = self.net(voc, x, null_prefix, valid)
                logits = S.cfg(logits, logits_u, guidance)
            logits = S.filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
            probs = logits.softmax(dim=-1)
            sampled = torch.multinomial(probs.view(b * t, -1), 1, generator=generator).view(b, t)
            sel = probs.gather(-1, sampled[..., None])[..., 0]
            x = torch.where(masked, sampled, x)
            n_keep = torch.tensor([S.remask_count(i, steps, int(n)) for n in n_valid], device=dev)
            noise_scale = mask_temperature * (1 - (i + 1) / steps)
            conf = torch.log(sel.clamp_min(1e-20)) + noise_scale * S.gumbel_noise((b, t), generator, dev)
            conf = conf.masked_fill(~masked, float("inf"))  # only positions masked at this step's start
            rank = torch.empty_like(voc).scatter_(-1, conf.argsort(dim=-1, stable=True),
                                                   torch.arange(t, device=dev).expand(b, t).contiguous())
            masked = (rank < n_keep[:, None]) & masked
            x = torch.where(masked, torch.full_like(x, self.acc_mask), x)
            if trace is not None:
                trace.append({"vocals": voc.clone(), "tokens": x.clone(), "masked": masked.clone()})
        return x
