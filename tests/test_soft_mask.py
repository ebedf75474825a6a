"""REPET-SIM's soft mask (transforms/dsp/soft_mask.py) gives librosa's ``softmask(power=2)`` bit for bit."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from songcorpus.transforms.dsp.soft_mask import soft_mask


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (513, 200)])
def test_bit_for_bit_librosa_with_zeros_subnormals_and_ties(shape):
    rng = np.random.default_rng(sum(shape))
    scale = rng.choice(np.array([0.0, 1e-39, 1e-30, 1.0, 1e4], dtype=np.float32), size=shape)
    mag = (np.abs(rng.normal(size=shape)) * scale).astype(np.float32)
    background = np.minimum(mag, np.abs(rng.normal(size=shape)).astype(np.float32))
    background[::2] = mag[::2]  # x = 0 where the background is the magnitude itself
    x, ref = mag - background, 2.0 * background
    ref[..., 0] = x[..., 0]  # ties
    expected = librosa.util.softmask(x, ref, power=2)
    assert soft_mask(x, ref).tobytes() == expected.tobytes()


def test_non_float32_or_mismatched_inputs_are_refused():
    a = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="float32"):
        soft_mask(a, np.ones((3, 4)))
    with pytest.raises(ValueError, match="shape"):
        soft_mask(a, np.ones((4, 3), dtype=np.float32))
