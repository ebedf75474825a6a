"""The four generators (train/models): shapes at the default window, loss decrease, determinism through the
generator, and each model's own checks (SAMUeL conversions and DDIM, LaDA-Band's sampler schedule, SongEcho's
stage-B identity and frozen backbone, UniSinger's curriculum and task masks), on synthetic tensors of the
batch contract: T = 256 latent / token frames (10.24 s at 25 Hz), T_f0 = 1024 (100 Hz),
C = LATENT_CHANNELS (the embedded codec's n_mels)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from songcorpus.schemas.train_models import (
    LATENT_CHANNELS,
    MODEL_CONFIGS,
    LadaBandConfig,
    SamuelConfig,
    SongEchoConfig,
    SongEchoMelodyConfig,
    UniSingerConfig,
)
from songcorpus.train.models import build_model, count_parameters, schedules
from songcorpus.train.models.songecho import SongEcho, SongEchoMelody
from songcorpus.train.models.unisinger import MODALITIES, TASK_MODALITIES, task_keeps, task_probabilities

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T, T_F0, C, VOCAB, TEXT = 256, 1024, LATENT_CHANNELS, 1024, 384

TINY = {
    "samuel": SamuelConfig(base_channels=8, time_dim=32, heads=2),
    "lada_band": LadaBandConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, reference_dim=32),
    "songecho": SongEchoConfig(dim=64, n_layers=2, n_heads=2, head_dim=32, proj_hidden=64, lyric_dim=32,
                               lyric_layers=1, lyric_heads=2),
    "unisinger": UniSingerConfig(dim=64, n_layers=2, n_heads=2, speaker_encoder_dim=32, f0_channels=16),
}
TINY["songecho_melody"] = SongEchoMelodyConfig(backbone=TINY["songecho"], melody_dim=32)


def _smooth(g: torch.Generator, b: int) -> torch.Tensor:
    """Latents with the smoothness of real ones (a random field upsampled in time and channels)."""
    z = torch.randn(b, 1, T // 16, C // 8, generator=g)
    return torch.nn.functional.interpolate(z, size=(T, C), mode="bilinear", align_corners=False)[:, 0] * 2


def make_batch(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every key of the batch contract. The vocal latents show the f0 (an energy ridge at the channel of the
    log pitch, silent where unvoiced), so a melody-conditioned model has something to learn from f0."""
    g = torch.Generator().manual_seed(seed)
    tt = torch.arange(T_F0) / 100.0
    f0 = 220 * 2 ** (0.5 * torch.sin(2 * math.pi * (0.3 + torch.rand(b, 1, generator=g)) * tt))
    f0 = f0 * (torch.sin(2 * math.pi * 0.7 * tt) > -0.5)
    f0_frames = f0[:, ::4]
    centre = (torch.log(f0_frames.clamp_min(1)) - math.log(50)) / (math.log(900) - math.log(50)) * C
    voc = 3 * torch.exp(-((torch.arange(C)[None, None] - centre[..., None]) ** 2) / 8) * (f0_frames > 0)[..., None] - 1
    phonemes = torch.randint(1, 256, (b, 48), generator=g)
    phonemes[:, 40:] = 0
    return {
        "vocals_latents": voc, "accompaniment_latents": _smooth(g, b), "reference_vocals_latents": _smooth(g, b),
        "vocals_tokens": torch.randint(0, VOCAB, (b, T), generator=g),
        "accompaniment_tokens": torch.randint(0, VOCAB, (b, T), generator=g),
        "reference_tokens": torch.randint(0, VOCAB, (b, T), generator=g),
        "text_emb": torch.randn(b, TEXT, generator=g), "phonemes": phonemes, "f0": f0,
        "units": torch.randint(0, 500, (b, 2 * T), generator=g), "speaker": torch.randn(b, 192, generator=g),
    }


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY[name])


# ---------------------------------------------------------------------------------------------
# configs and sizes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_config_rejects_unknown_keys_naming_them(name):
    with pytest.raises(ValidationError, match="widht"):
        MODEL_CONFIGS[name](widht=3)
    assert MODEL_CONFIGS[name]().name == name
    assert MODEL_CONFIGS[name].paper().digest() != MODEL_CONFIGS[name]().digest()


def test_configs_import_without_torch():
    code = "import sys, songcorpus.schemas.train_models; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parameter_counts():
    for name, cls in MODEL_CONFIGS.items():
        assert 1e6 <= count_parameters(cls()) <= 60e6, name
    # the paper: 15.57M, counted on 64 latent channels (the compact default follows the embedded codec: 128)
    assert abs(count_parameters(SamuelConfig.paper(latent_channels=64)) - 15.57e6) < 0.01e6
    assert count_parameters(SongEchoMelodyConfig.paper(), trainable_only=True) == 49_101_824  # the paper: 49.1M
    assert 0.95e9 < count_parameters(LadaBandConfig.paper()) < 1.15e9             # the paper: about 1B
    assert count_parameters(SongEchoConfig.paper()) > 2e9                         # ACE-Step-size backbone
    assert count_parameters(SongEchoMelodyConfig(), trainable_only=True) < count_parameters(SongEchoMelodyConfig())
    # the compact defaults the model docstrings state (in millions, 2 decimals): a change of size shows here
    stated = {"samuel": 3.92, "lada_band": 8.56, "songecho": 10.74, "unisinger": 14.14}
    for name, millions in stated.items():
        assert round(count_parameters(MODEL_CONFIGS[name]()) / 1e6, 2) == millions, name
    assert round(count_parameters(SongEchoMelodyConfig(), trainable_only=True) / 1e6, 2) == 2.43


# ---------------------------------------------------------------------------------------------
# every model: shapes at the default compact size, loss decrease, determinism
# ---------------------------------------------------------------------------------------------

def _outputs(name: str, model, batch) -> torch.Tensor:
    b = batch["text_emb"].shape[0]
    t = torch.full((b,), 0.5)
    if name == "samuel":
        return model(batch["accompaniment_latents"], batch["vocals_latents"], torch.full((b,), 400))
    if name == "lada_band":
        ones = torch.ones(b, dtype=torch.bool)
        prefix = model.net.prefix(batch["text_emb"], model.net.reference_embedding(batch["reference_tokens"]), ones, ones)
        return model.net(batch["vocals_tokens"], batch["accompaniment_tokens"], prefix, None)[0]
    x = torch.cat([batch["vocals_latents"], batch["accompaniment_latents"]], dim=-1)
    if name == "songecho":
        ones = torch.ones(b, dtype=torch.bool)
        return model.net(x, t, *model.net.encode(batch, ones, ones, ones))
    if name == "songecho_melody":
        return model(x, t, batch)
    return model.net(x, t, batch, task_keeps(torch.tensor([False, True])))


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_forward_shapes_at_default_size(name):
    model = build_model(MODEL_CONFIGS[name]())
    batch = make_batch(2)
    expected = {"samuel": (2, T, C), "lada_band": (2, T, VOCAB)}.get(name, (2, T, 2 * C))
    with torch.no_grad():
        out = _outputs(name, model, batch)
        loss, terms = model.loss(batch, generator=gen(0), step=0, total_steps=10)
    assert out.shape == expected
    assert torch.isfinite(out).all()
    assert loss.ndim == 0 and torch.isfinite(loss) and terms["loss"] == pytest.approx(float(loss))


# loss on a fixed batch with fixed draws (the same generator seed every step) falls below FRACTION of its
# first value within STEPS Adam steps at LR (measured after 30 steps: samuel 0.49, lada_band 0.03,
# songecho 0.31, songecho_melody 0.89 on a random frozen backbone, unisinger 0.37)
FALLS = {"samuel": (0.65, 30, 5e-3), "lada_band": (0.3, 30, 5e-3), "songecho": (0.5, 30, 5e-3),
         "songecho_melody": (0.95, 30, 2e-2), "unisinger": (0.55, 30, 5e-3)}


@pytest.mark.parametrize("name", sorted(FALLS))
def test_loss_falls(name):
    fraction, steps, lr = FALLS[name]
    model = tiny_model(name)
    opt = torch.optim.Adam(model.trainable_parameters(), lr)
    batch = make_batch(2)
    first = None
    for _ in range(steps):
        loss, _ = model.loss(batch, generator=gen(1), step=900, total_steps=1000)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    final, _ = model.loss(batch, generator=gen(1), step=900, total_steps=1000)
    assert float(final.detach()) < fraction * first, (float(final.detach()), first)


GENERATE = {
    "samuel": ({"vocals_latents"}, {"steps": 3}, (2, T, C)),
    "lada_band": ({"vocals_tokens", "reference_tokens", "text_emb"}, {"steps": 4}, (2, T)),
    "songecho": ({"text_emb", "phonemes"}, {"steps": 3, "length": T}, (2, T, 2 * C)),
    "songecho_melody": ({"text_emb", "phonemes", "f0"}, {"steps": 3}, (2, T, 2 * C)),
    "unisinger": ({"text_emb", "phonemes", "reference_vocals_latents"}, {"steps": 3, "length": T}, (2, T, 2 * C)),
}


@pytest.mark.parametrize("name", sorted(GENERATE))
def test_randomness_comes_only_from_the_generator(name):
    model = tiny_model(name)
    batch = make_batch(2)
    state = torch.get_rng_state()
    a = model.loss(batch, generator=gen(3), step=500, total_steps=1000)
    b = model.loss(batch, generator=gen(3), step=500, total_steps=1000)
    c = model.loss(batch, generator=gen(4), step=500, total_steps=1000)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert not torch.equal(a[0], c[0])
    keys, kwargs, shape = GENERATE[name]
    cond = {k: batch[k] for k in keys}
    x = model.generate(cond, generator=gen(5), **kwargs)
    y = model.generate(cond, generator=gen(5), **kwargs)
    assert x.shape == shape and torch.equal(x, y)
    assert not torch.equal(x, model.generate(cond, generator=gen(6), **kwargs))
    assert torch.equal(torch.get_rng_state(), state), "the global RNG was used"


# ---------------------------------------------------------------------------------------------
# SAMUeL
# ---------------------------------------------------------------------------------------------

def test_samuel_v_and_x0_conversions_invert():
    g = gen(0)
    x0, eps = torch.randn(8, 16, 4, generator=g, dtype=torch.float64), torch.randn(8, 16, 4, generator=g, dtype=torch.float64)
    ab = schedules.cosine_alpha_bar(800)[torch.randint(0, 800, (8,), generator=g)]
    x_t = schedules.q_sample(x0, eps, ab)
    v = schedules.v_target(x0, eps, ab)
    assert torch.allclose(schedules.x0_from_v(x_t, v, ab), x0, atol=1e-10)
    assert torch.allclose(schedules.eps_from_v(x_t, v, ab), eps, atol=1e-10)
    assert torch.allclose(schedules.v_from_x0(x_t, x0, ab), v, atol=1e-8)
    # the standard sign: v = sqrt(ab) eps - sqrt(1 - ab) x0
    assert torch.allclose(v, ab.sqrt()[:, None, None] * eps - (1 - ab).sqrt()[:, None, None] * x0)
    alpha_bar = schedules.cosine_alpha_bar(800)
    assert alpha_bar.shape == (800,) and bool((alpha_bar[1:] < alpha_bar[:-1]).all())
    assert alpha_bar[0] > 0.999 and alpha_bar[-1] < 1e-3


def test_samuel_ddim_eta0_is_deterministic():
    model = tiny_model("samuel")
    cond = {"vocals_latents": make_batch(2)["vocals_latents"]}
    noise = torch.randn(2, T, C, generator=gen(9))
    a = model.generate(cond, steps=4, generator=gen(1), eta=0.0, noise=noise)
    b = model.generate(cond, steps=4, generator=gen(2), eta=0.0, noise=noise)
    assert torch.equal(a, b)  # nothing drawn besides the starting noise
    c = model.generate(cond, steps=4, generator=gen(1), eta=1.0, noise=noise)
    d = model.generate(cond, steps=4, generator=gen(2), eta=1.0, noise=noise)
    assert not torch.equal(c, d)
    e = model.generate(cond, steps=4, generator=gen(1), method="ddpm", noise=noise)
    assert torch.isfinite(e).all() and not torch.equal(e, a)
    assert model.timesteps(None) == list(range(799, -1, -1)) and model.timesteps(4) == [799, 533, 266, 0]


# ---------------------------------------------------------------------------------------------
# LaDA-Band
# ---------------------------------------------------------------------------------------------

def test_lada_band_sampler_unmasks_on_the_cosine_schedule_and_never_touches_the_vocals():
    model = tiny_model("lada_band")
    batch = make_batch(2)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 200:] = False
    cond = {k: batch[k] for k in ("vocals_tokens", "reference_tokens", "text_emb")} | {"mask": mask}
    vocals = cond["vocals_tokens"].clone()
    steps, trace = 8, []
    out = model.generate(cond, steps=steps, generator=gen(0), trace=trace)
    assert len(trace) == steps
    n_valid = mask.sum(dim=1)
    prev_masked, prev_tokens = mask.clone(), None
    for i, record in enumerate(trace):
        expected = [math.floor(math.cos((i + 1) / steps * math.pi / 2) * int(n)) for n in n_valid]
        assert record["masked"].sum(dim=1).tolist() == expected
        assert not (record["masked"] & ~prev_masked).any(), "a decoded position was re-masked later"
        assert (record["tokens"][record["masked"]] == model.acc_mask).all()
        if prev_tokens is not None:
            kept = ~prev_masked & mask
            assert torch.equal(record["tokens"][kept], prev_tokens[kept]), "a decoded token changed"
        voc_seen = torch.where(mask, vocals, torch.full_like(vocals, model.voc_pad))
        assert torch.equal(record["vocals"], voc_seen)
        prev_masked, prev_tokens = record["masked"], record["tokens"]
    assert not trace[-1]["masked"].any()
    assert ((out[mask] >= 0) & (out[mask] < VOCAB)).all() and (out[~mask] == model.acc_pad).all()
    assert torch.equal(cond["vocals_tokens"], vocals)


def test_sobol_mask_ratios_are_stratified_and_seeded():
    r = schedules.sobol_uniform(8, gen(0))
    assert sorted((r * 8).floor().long().tolist()) == list(range(8))  # one point per eighth
    assert torch.equal(r, schedules.sobol_uniform(8, gen(0))) and not torch.equal(r, schedules.sobol_uniform(8, gen(1)))
    assert schedules.remask_count(7, 8, 256) == 0 and schedules.remask_count(0, 8, 256) == 251


# ---------------------------------------------------------------------------------------------
# SongEcho
# ---------------------------------------------------------------------------------------------

def _trained_backbone() -> SongEcho:
    backbone = tiny_model("songecho")
    opt = torch.optim.Adam(backbone.parameters(), 5e-3)
    for i in range(3):  # a few steps, so the backbone is not at its initialisation
        loss, _ = backbone.loss(make_batch(2), generator=gen(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return backbone


@pytest.mark.parametrize("injection", ["ia_eilm", "eilm", "add"])
def test_songecho_stage_b_step0_is_the_backbone_bit_for_bit(injection):
    backbone = _trained_backbone()
    stage_b = SongEchoMelody(TINY["songecho_melody"].model_copy(update={"injection": injection}), backbone=backbone)
    batch = make_batch(2)
    x_t = torch.randn(2, T, 2 * C, generator=gen(0))
    sigma = torch.tensor([0.3, 0.8])
    ones = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        ref = backbone.net(x_t, sigma, *backbone.net.encode(batch, ones, ones, ones))
        assert torch.equal(stage_b(x_t, sigma, batch), ref)
    loss_a, _ = backbone.loss(batch, generator=gen(7))
    loss_b, _ = stage_b.loss(batch, generator=gen(7))
    assert torch.equal(loss_a, loss_b)


def test_songecho_stage_b_trains_only_the_melody_encoder_and_injections():
    backbone = _trained_backbone()
    stage_b = SongEchoMelody(TINY["songecho_melody"], backbone=backbone)
    trainable = stage_b.trainable_parameters()
    expected = {id(p) for p in [*stage_b.melody.parameters(), *stage_b.injections.parameters()]}
    assert {id(p) for p in trainable} == expected
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    loss, _ = stage_b.loss(make_batch(2), generator=gen(0))
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in trainable)
    torch.optim.Adam(trainable, 1e-2).step()
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())
    assert set(stage_b.trainable_state_dict()) == {k for k in stage_b.state_dict() if k.startswith(("melody.", "injections."))}
    stage_b.train()
    assert not backbone.training
    with pytest.raises(ValueError, match="backbone"):
        SongEchoMelody(SongEchoMelodyConfig(), backbone=backbone)


def test_songecho_melody_follows_the_latent_length():
    stage_b = SongEchoMelody(TINY["songecho_melody"])
    for t_f0, t in ((1024, 256), (1000, 250), (1024, 221)):
        assert stage_b.melody(torch.full((1, t_f0), 220.0), t).shape == (1, t, 32)


# ---------------------------------------------------------------------------------------------
# UniSinger
# ---------------------------------------------------------------------------------------------

def test_unisinger_task_mix_follows_the_curriculum():
    total = 1000
    shares = [task_probabilities(s, total)["svc"] for s in range(total + 1)]
    assert all(s == 0.0 for s in shares[:300])                        # song only for the first 30%
    assert shares[450] == pytest.approx(0.25) and shares[600] == pytest.approx(0.5) and shares[1000] == 0.5
    assert all(b >= a for a, b in zip(shares, shares[1:], strict=False))
    model = tiny_model("unisinger")
    assert not model.sample_tasks(4000, 100, total, gen(0)).any()
    assert model.sample_tasks(4000, 900, total, gen(0)).float().mean() == pytest.approx(0.5, abs=0.03)
    assert model.sample_tasks(4000, 450, total, gen(0)).float().mean() == pytest.approx(0.25, abs=0.03)
    _, terms = model.loss(make_batch(2), generator=gen(0), step=10, total_steps=total)
    assert terms["svc_share"] == 0.0 and "loss_svc" not in terms
    with pytest.raises(ValueError, match="curriculum"):
        model.loss(make_batch(2), generator=gen(0))


def test_unisinger_task_masks_null_the_stated_modalities():
    keeps = task_keeps(torch.tensor([False, True]))  # sample 0 song generation, sample 1 SVC
    assert {m for m in MODALITIES if keeps[m][0]} == TASK_MODALITIES["song"] == {"phonemes", "text", "speaker"}
    assert {m for m in MODALITIES if keeps[m][1]} == TASK_MODALITIES["svc"] == {"content", "f0", "text", "speaker"}
    model = tiny_model("unisinger")
    with torch.no_grad():  # leave the zero initialisation, so the output depends on every input
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(1)))
    batch = make_batch(2)
    x_t = torch.randn(2, T, 2 * C, generator=gen(2))
    t = torch.tensor([0.4, 0.7])

    def out(**changes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.net(x_t, t, batch | changes, keeps)

    base = out()
    other = make_batch(2, seed=5)
    changed = {k: out(**{k: other[k]}) for k in ("phonemes", "f0", "vocals_latents", "reference_vocals_latents")}
    # song (sample 0) ignores the content (vocal latents in lite) and f0; SVC (sample 1) ignores the lyrics
    assert torch.equal(changed["f0"][0], base[0]) and torch.equal(changed["vocals_latents"][0], base[0])
    assert torch.equal(changed["phonemes"][1], base[1])
    assert not torch.equal(changed["phonemes"][0], base[0])
    assert not torch.equal(changed["f0"][1], base[1]) and not torch.equal(changed["vocals_latents"][1], base[1])
    assert not torch.equal(changed["reference_vocals_latents"][0], base[0])  # the speaker acts in both tasks
    assert not torch.equal(changed["reference_vocals_latents"][1], base[1])


def test_unisinger_full_profile_config_reads_units_and_speaker():
    cfg = TINY["unisinger"].model_copy(update={"content_source": "units", "speaker_source": "embedding"})
    model = build_model(cfg)
    assert {"units", "speaker"} <= set(model.batch_keys) and "reference_vocals_latents" not in model.batch_keys
    batch = {k: v for k, v in make_batch(2).items() if k != "reference_vocals_latents"}
    loss, _ = model.loss(batch, generator=gen(0), step=900, total_steps=1000)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    svc = model.generate({k: batch[k] for k in ("text_emb", "f0", "units", "speaker")}, task="svc", steps=2,
                         generator=gen(0))
    assert svc.shape == (2, T, 2 * C)


PADDED_KEYS = {"samuel": ("accompaniment_latents", "vocals_latents"),
               "lada_band": ("accompaniment_tokens", "vocals_tokens"),
               "songecho": ("accompaniment_latents", "vocals_latents"),
               "songecho_melody": ("accompaniment_latents", "vocals_latents"),
               "unisinger": ("accompaniment_latents", "vocals_latents")}


@pytest.mark.parametrize("name", sorted(PADDED_KEYS))
def test_padded_frames_do_not_reach_the_loss(name):
    """A window padded to the model length (mask False on its tail): whatever the padding holds, the loss is
    the same, bit for bit, and finite."""
    model = tiny_model(name)
    batch = make_batch(2)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 180:] = False
    batch["mask"] = mask
    other = make_batch(2, seed=3)
    junk = dict(batch)
    for k in PADDED_KEYS[name]:
        junk[k] = torch.where(mask.view(2, T, *([1] * (batch[k].dim() - 2))), batch[k], other[k])
    a, _ = model.loss(batch, generator=gen(0), step=900, total_steps=1000)
    b, _ = model.loss(junk, generator=gen(0), step=900, total_steps=1000)
    assert torch.isfinite(a) and torch.equal(a, b)


def test_f0_bin_features_move_a_semitone_to_other_channels():
    """The "bins" f0 input: a soft one-hot over 128 log-f0 bins + voiced; a semitone moves the peak by
    127 / 50 = 2.54 bins (the "log" input moves its one pitch channel by 0.02); unvoiced frames are all zero
    but the flag; both models build, and run, with it."""
    from songcorpus.train.models.blocks import F0_BINS, f0_bin_features, melody_channels

    f0 = torch.tensor([[220.0, 220.0 * 2 ** (1 / 12), 0.0]])
    x = f0_bin_features(f0)
    assert x.shape == (1, F0_BINS + 1, 3) == (1, melody_channels("bins"), 3)
    peak = x[0, :F0_BINS].argmax(dim=0)
    assert int(peak[1] - peak[0]) in (2, 3)
    assert x[0, :F0_BINS, 2].abs().sum() == 0 and x[0, F0_BINS].tolist() == [1.0, 1.0, 0.0]
    for name in ("songecho_melody", "unisinger"):
        cfg = TINY[name].model_copy(update={"f0_encoding": "bins"})
        model = build_model(cfg)
        loss, _ = model.loss(make_batch(), generator=torch.Generator().manual_seed(0), step=0, total_steps=10)
        assert torch.isfinite(loss)


def test_unisinger_content_lifter_drops_the_harmonic_ripple_and_keeps_the_envelope():
    """The lite SVC content (``content_frames``) with the default lifter: frames made of a smooth envelope plus a
    cross-channel ripple whose phase follows the pitch (harmonics moving over the mel bands) give the same
    content whatever the pitch, and different content when the envelope changes; unliftered, the pitch changes
    the content. ``dct_basis`` is scipy's orthonormal DCT-II, truncated."""
    import scipy.fft

    from songcorpus.train.models.blocks import dct_basis
    from songcorpus.train.models.unisinger import content_frames

    keep = UniSingerConfig().content_lifter
    x = torch.randn(3, C, generator=gen(0)).double()
    assert torch.allclose(x @ dct_basis(C, keep).double(),
                          torch.as_tensor(scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=-1)[:, :keep]))
    g = gen(4)
    n = torch.arange(C, dtype=torch.float32)
    frames = 64

    def latents(envelope_seed: int, pitch: torch.Tensor) -> torch.Tensor:
        e = torch.randn(frames, keep, generator=torch.Generator().manual_seed(envelope_seed))
        envelope = e @ torch.stack([torch.cos(math.pi * (n + 0.5) * q / C) for q in range(keep)])  # below the lifter
        ripple = torch.cos(2 * math.pi * 40 * (n[None] + 0.5) / C + pitch[:, None])  # quefrency 80 of 128
        return (envelope + 0.8 * ripple)[None]

    melody_a, melody_b = torch.rand(frames, generator=g) * 6, torch.rand(frames, generator=g) * 6
    lifter = dct_basis(C, keep)
    same, other_pitch, other_envelope = latents(1, melody_a), latents(1, melody_b), latents(2, melody_a)
    lifted = [content_frames(x, None, lifter) for x in (same, other_pitch, other_envelope)]
    change = float((lifted[0] - lifted[1]).norm() / lifted[0].norm())
    assert change < 0.02  # a sine-phase ripple leaks a little into the low coefficients
    assert (lifted[0] - lifted[2]).norm() > 0.5 * lifted[0].norm()
    whole = [content_frames(x, None, None) for x in (same, other_pitch)]
    assert float((whole[0] - whole[1]).norm() / whole[0].norm()) > 10 * change  # measured 0.22 against 0.0096
    with pytest.raises(ValueError, match="content_lifter"):
        UniSingerConfig(latent_channels=16)


def test_unisinger_checkpoints_from_before_the_lifter_still_load():
    """A checkpoint's stored config written before ``content_lifter`` (or ``content_alignment_bias``) existed
    describes the model it was trained as: unliftered, with no alignment bias."""
    from songcorpus.schemas.training import TrainConfig, saved_train_config

    old = TrainConfig(model=UniSingerConfig()).model_dump(mode="json")
    del old["model"]["content_lifter"], old["model"]["content_alignment_bias"]
    assert saved_train_config(old).model.content_lifter == 0
    assert saved_train_config(old).model.content_alignment_bias == 0.0
    lifted = TrainConfig(model=UniSingerConfig()).model_dump(mode="json")
    del lifted["model"]["content_alignment_bias"]  # written between the lifter and the alignment bias
    assert saved_train_config(lifted).model.content_lifter == 20
    assert saved_train_config(lifted).model.content_alignment_bias == 0.0
    now = saved_train_config(TrainConfig(model=UniSingerConfig()).model_dump(mode="json")).model
    assert now.content_lifter == 20 and now.content_alignment_bias == 4.0
    # the model an old dump describes builds with the state-dict keys its checkpoint has
    keys = set(build_model(saved_train_config(lifted).model).state_dict())
    assert not any("alignment_bias" in k for k in keys)
    with pytest.raises(ValueError, match="content_lifter"):
        TrainConfig.model_validate({"model": {"name": "unisinger"}, "data": {"codec": "sao_vae"}})


def test_unisinger_loss_can_null_a_modality_for_probes():
    """``loss(null=...)``: the same draws, with the named modalities nulled in every sample, so the loss no
    longer depends on their inputs (the probe of train/eval/probes/f0_use.py modality_use)."""
    model = tiny_model("unisinger")
    with torch.no_grad():  # leave the zero initialisation, so the output depends on every input
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(1)))
    model.config = model.config.model_copy(update={"curriculum_song_only": 0.0, "curriculum_ramp_end": 0.0,
                                                   "svc_max_share": 1.0})  # every sample in SVC, which reads f0
    batch, other = make_batch(2), make_batch(2, seed=5)
    moved = batch | {"f0": other["f0"]}

    def loss(b, null=()):
        return model.loss(b, generator=gen(0), step=999, total_steps=1000, null=null)[0]

    assert not torch.equal(loss(batch), loss(moved))
    assert torch.equal(loss(batch, ("f0",)), loss(moved, ("f0",)))
    assert not torch.equal(loss(batch, ("f0",)), loss(batch))
    with pytest.raises(ValueError, match="unknown modalities"):
        loss(batch, ("melody",))
