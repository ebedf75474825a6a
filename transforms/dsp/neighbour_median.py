"""The median over each frame's neighbour frames of a spectrogram: REPET-SIM's repeating-background estimate.

Reads: a (bins, frames) float32 or float64 magnitude spectrogram and a (frames, k) table of neighbour frames.
Writes: a (bins, frames) array of the same dtype whose column t is, bin by bin, the median of the columns
``neighbours[t]`` (for even k the mean of the two middle values, in the input's dtype, exactly as ``np.median``).
Needs: numba (compiled once per process, cached on disk where the package folder is writable).
Why not ``np.median(mag[:, idx], axis=2)``: it gathers a (bins, frames, k) copy and partitions millions of 20-value
rows one at a time; 85 % of REPET-SIM's time went there. Sorting every bin's k values at once with an odd-even
transposition network (min/max over whole rows, which the compiler vectorises) gives the same numbers about 20x
faster (bench/results/lite-throughput.md).
Fails when: an index is outside [0, frames) (IndexError from the caller's check); NaN magnitudes have no defined
median here (a spectrogram magnitude is never NaN).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _median_rows(mag_t: np.ndarray, neighbours: np.ndarray, out_t: np.ndarray) -> None:  # pragma: no cover - numba
    n, bins = mag_t.shape
    k = neighbours.shape[1]
    buf = np.empty((k, bins), dtype=mag_t.dtype)
    half = k // 2
    two = mag_t.dtype.type(2.0)
    for t in range(n):
        for j in range(k):
            buf[j] = mag_t[neighbours[t, j]]
        for r in range(k):  # odd-even transposition: k rounds sort every bin's column
            for a in range(r % 2, k - 1, 2):
                for f in range(bins):
                    x = buf[a, f]
                    y = buf[a + 1, f]
                    buf[a, f] = min(x, y)
                    buf[a + 1, f] = max(x, y)
        if k % 2:
            out_t[t] = buf[half]
        else:
            for f in range(bins):
                out_t[t, f] = (buf[half - 1, f] + buf[half, f]) / two


def neighbour_median(mag: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(bins, frames) median of ``mag`` (bins, frames) over the frames ``neighbours[t]`` (frames, k), per bin."""
    if mag.ndim != 2 or neighbours.ndim != 2 or neighbours.shape[0] != mag.shape[1] or neighbours.shape[1] < 1:
        raise ValueError(f"neighbour_median: mag (bins, frames) and neighbours (frames, k >= 1) expected, got "
                         f"{mag.shape} and {neighbours.shape}")
    if neighbours.size and (neighbours.min() < 0 or neighbours.max() >= mag.shape[1]):
        raise IndexError("neighbour_median: a neighbour index is outside the spectrogram's frames")
    mag_t = np.ascontiguousarray(mag.T)
    out_t = np.empty_like(mag_t)
    _median_rows(mag_t, np.ascontiguousarray(neighbours, dtype=np.int64), out_t)
    return out_t.T
