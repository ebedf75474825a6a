"""REPET-SIM's soft mask: librosa's ``util.softmask(X, X_ref, power=2)`` in one pass, with the same numbers.

Reads: two non-negative float32 arrays of one shape, ``x`` (what stands above the repeating background) and ``ref``
(the background times the margin). Writes: a float32 array of that shape, ``(x/z)^2 / ((x/z)^2 + (ref/z)^2)`` with
``z = max(x, ref)``, and 0 where ``z`` is below float32's smallest normal number: librosa's arithmetic, operation by
operation in float32, so the mask is bit for bit librosa's (``tests/test_soft_mask.py``, and REPET-SIM's stems on
real songs).
Needs: numba (compiled once per process, cached on disk where the package folder is writable; the driver's JIT
warm-up compiles it before workers start: ``pipelines/engines/jit_cache.py``).
Why not librosa's: it makes six full-size temporaries and indexes them with boolean masks; that was a third of the
separator's time once the neighbour median was fast.
Fails when: the shapes differ or an input is not float32 (ValueError); librosa's own check for negative inputs is
the caller's (REPET-SIM's inputs are a magnitude minus its own lower bound, and a scaled bound).
"""

from __future__ import annotations

import numba
import numpy as np

_TINY = np.finfo(np.float32).tiny


@numba.njit(cache=True, nogil=True)
def _mask(x: np.ndarray, ref: np.ndarray, tiny: np.float32, out: np.ndarray) -> None:  # pragma: no cover - numba
    for i in range(x.size):
        a = x[i]
        b = ref[i]
        z = max(a, b)
        if z < tiny:
            out[i] = 0.0
        else:
            p = a / z
            q = b / z
            p = p * p
            q = q * q
            out[i] = p / (p + q)


def soft_mask(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``librosa.util.softmask(x, ref, power=2)`` for float32 ``x`` and ``ref`` of one shape."""
    if x.shape != ref.shape or x.dtype != np.float32 or ref.dtype != np.float32:
        raise ValueError(f"soft_mask: two float32 arrays of one shape expected, got {x.dtype}{x.shape} and "
                         f"{ref.dtype}{ref.shape}")
    out = np.empty(x.shape, dtype=np.float32)
    _mask(np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(ref).reshape(-1), np.float32(_TINY),
          out.reshape(-1))
    return out
