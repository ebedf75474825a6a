"""banded_viterbi: librosa's Viterbi path, scoring only the transitions inside the band."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from songcorpus.transforms.dsp.banded_viterbi import banded_viterbi
from songcorpus.transforms.stages.f0 import _transition

pytestmark = pytest.mark.fast


def floored(emission: np.ndarray) -> np.ndarray:
    """Per-frame distributions floored as the f0 stage's Viterbi floors them."""
    prob = emission.T + 1e-6
    return prob / prob.sum(axis=0, keepdims=True)


@pytest.mark.parametrize("states,width", [(219, 12), (40, 3), (12, 12), (5, 1)])
def test_the_same_path_as_librosa(states: int, width: int) -> None:
    rng = np.random.default_rng(states)
    for frames in (1, 2, 57, 400):
        emission = rng.random((frames, states)) ** 8  # peaky, like activations
        emission[frames // 3: frames // 2] = 0.0  # a stretch with nothing above the floor
        prob, trans = floored(emission), _transition(states, width)
        assert np.array_equal(banded_viterbi(prob, trans, width), librosa.sequence.viterbi(prob, trans))


def test_a_melody_that_jumps_far_and_returns() -> None:
    """Emissions that jump across the whole band (an octave slip and back): the band must carry the path as librosa's
    full search does."""
    states, width, frames = 219, 12, 300
    centre = np.where((np.arange(frames) // 50) % 2 == 0, 30, 190)
    emission = np.exp(-0.5 * ((np.arange(states)[None, :] - centre[:, None]) / 2.0) ** 2)
    prob, trans = floored(emission), _transition(states, width)
    assert np.array_equal(banded_viterbi(prob, trans, width), librosa.sequence.viterbi(prob, trans))


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="banded_viterbi"):
        banded_viterbi(np.ones((5, 3)), np.eye(4), 2)
    with pytest.raises(ValueError, match="width"):
        banded_viterbi(np.ones((4, 3)), np.eye(4), 0)
