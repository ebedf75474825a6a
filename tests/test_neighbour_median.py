"""neighbour_median: the same numbers as ``np.median`` over the gathered neighbour frames, for any k and dtype."""

from __future__ import annotations

import numpy as np
import pytest

from songcorpus.transforms.dsp.neighbour_median import neighbour_median

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("k", [1, 2, 5, 20, 21])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_numpy_median(k: int, dtype: type) -> None:
    rng = np.random.default_rng(k)
    mag = np.abs(rng.standard_normal((257, 90))).astype(dtype)
    mag[:, 10:20] = 0.0  # silent frames: many ties
    mag[5] = 1.0  # a constant bin
    neighbours = rng.integers(0, mag.shape[1], size=(mag.shape[1], k))
    expected = np.median(mag[:, neighbours], axis=2)
    got = neighbour_median(mag, neighbours)
    assert got.dtype == mag.dtype and got.shape == mag.shape
    assert np.array_equal(got, expected)


def test_rejects_bad_shapes_and_indices() -> None:
    mag = np.ones((4, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="neighbours"):
        neighbour_median(mag, np.zeros((5, 2), dtype=np.int64))
    with pytest.raises(IndexError, match="outside"):
        neighbour_median(mag, np.full((6, 2), 6))
