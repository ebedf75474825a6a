"""train/eval/probes/content_alignment.py: the attention mass UniSinger's audio frames put on their own content token.
Known answers on a tiny model: the recomputed weights reproduce each block's attention output; queries of zero
give exactly the uniform expectation; queries and keys made equal and large put about half of every frame's
attention on its own content token (RoPE's relative position 0, shared with the audio key of the same frame)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from songcorpus.schemas.train_models import LATENT_CHANNELS, UniSingerConfig
from songcorpus.train.eval.probes.content_alignment import alignment_of, attention_weights
from songcorpus.train.models import build_model
from songcorpus.train.models.blocks import attend, merge_heads

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T, C = 64, LATENT_CHANNELS


def tiny(bias: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(UniSingerConfig(dim=64, n_layers=2, n_heads=2, speaker_encoder_dim=32, f0_channels=16,
                                       content_alignment_bias=bias))


def batch(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f0 = 220.0 * 2 ** torch.rand(b, 4 * T, generator=g)
    mask = torch.ones(b, T)
    mask[1, 48:] = 0  # a padded tail: its frames are not queries and its content keys are masked
    return {"vocals_latents": torch.randn(b, T, C, generator=g), "accompaniment_latents": torch.randn(b, T, C, generator=g),
            "reference_vocals_latents": torch.randn(b, T, C, generator=g), "text_emb": torch.randn(b, 384, generator=g),
            "phonemes": torch.randint(1, 200, (b, 12), generator=g), "f0": f0, "mask": mask}


@pytest.mark.parametrize("bias", [0.0, 3.0])
def test_recomputed_weights_reproduce_each_block_s_attention(bias):
    model = tiny(bias)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    seen = []

    def hook(block, args):
        x, c, vec, rope_x, rope_c, key_mask = args
        w = attention_weights(block, x, c, vec, rope_x, rope_c, key_mask)
        qx, kx, vx, _ = block.audio.pre(x, vec, rope_x)
        qc, kc, vc, _ = block.cond.pre(c, vec, rope_c)
        ref = attend(torch.cat([qx, qc], 2), torch.cat([kx, kc], 2), torch.cat([vx, vc], 2), key_mask,
                     bias=block.score_bias(x.shape[1], c.shape[1], qx.dtype))[:, :, :x.shape[1]]
        mine = w @ torch.cat([vx, vc], 2)
        seen.append(float((merge_heads(mine) - merge_heads(ref)).abs().max()))
        assert torch.allclose(w.sum(-1), torch.ones(()), atol=1e-5)

    handles = [b.register_forward_pre_hook(hook) for b in model.net.blocks]
    with torch.no_grad():
        model.loss(batch(), generator=torch.Generator().manual_seed(0), step=0, total_steps=10)
    for h in handles:
        h.remove()
    assert len(seen) == 2 and max(seen) < 1e-5, seen


def test_zero_queries_give_the_uniform_expectation_exactly():
    model = tiny()
    d = model.config.dim
    with torch.no_grad():
        for block in model.net.blocks:
            block.audio.qkv.weight[:d].zero_()
            block.audio.qkv.bias[:d].zero_()
    aligned, content, uniform = alignment_of(model, [batch()], total_steps=10)
    assert aligned.shape == content.shape == (2, 2)
    # every query scores every key 0: the aligned mass is the share of valid keys that are aligned content
    assert np.allclose(aligned, uniform, rtol=1e-5), (aligned, uniform)
    n_keys = np.array([T + T + 1, 48 + 48 + 1])  # SVC: audio + content + caption (phonemes nulled); sample 1 padded
    band = np.array([3 * T - 2, 3 * 48 - 2])
    frames = np.array([T, 48])
    assert uniform == pytest.approx(float((band / n_keys).sum() / frames.sum()), rel=1e-6)
    assert np.allclose(content, ((frames / n_keys) * frames).sum() / frames.sum(), rtol=1e-5)


def test_equal_large_queries_and_keys_attend_to_their_own_frame():
    model = tiny()
    d = model.config.dim
    direction = torch.randn(d, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for block in model.net.blocks:
            for stream in (block.audio, block.cond):
                stream.qkv.weight[:2 * d].zero_()
                stream.qkv.bias[:d].copy_(direction)
                stream.qkv.bias[d:2 * d].copy_(direction)
                stream.q_norm.weight.mul_(12.0)
                stream.k_norm.weight.mul_(12.0)
    aligned, content, uniform = alignment_of(model, [batch()], total_steps=10, radius=0)
    # the audio key and the content key of frame i tie at relative position 0: about half each
    assert aligned.min() > 0.4 and aligned.max() < 0.55, aligned
    assert aligned.min() / uniform > 20


def test_alignment_bias_starts_at_its_stated_mass_and_is_learned():
    """With zero queries every score is the bias alone: frame i's own content token gets e^b / (e^b + n - 1) of
    the attention, n the valid keys. The bias is a parameter the SVC loss trains; at 0 there is none (old
    checkpoints keep their state-dict keys)."""
    assert not any("alignment_bias" in k for k in tiny(0.0).state_dict())
    b = 3.0
    model = tiny(b)
    assert sum("alignment_bias" in k for k in model.state_dict()) == 2
    d = model.config.dim
    with torch.no_grad():
        for block in model.net.blocks:
            block.audio.qkv.weight[:d].zero_()
            block.audio.qkv.bias[:d].zero_()
    aligned, _, _ = alignment_of(model, [batch()], total_steps=10, radius=0)
    n_keys = np.array([T + T + 1, 48 + 48 + 1])
    frames = np.array([T, 48])
    expected = float((np.exp(b) / (np.exp(b) + n_keys - 1) * frames).sum() / frames.sum())
    assert np.allclose(aligned, expected, rtol=1e-5), (aligned, expected)

    model = tiny(b)
    with torch.no_grad():  # past adaLN-Zero's and the output's zero init, so gradients reach the attention
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    loss, _ = model.loss(batch(), generator=torch.Generator().manual_seed(0), step=9, total_steps=10)
    loss.backward()
    assert all(float(blk.alignment_bias.grad.abs().sum()) > 0 for blk in model.net.blocks)
