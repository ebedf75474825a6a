"""How close a separated source is to its reference: BSS Eval SDR and SI-SDR, in numpy and scipy.

SDR is BSS Eval's with a time-invariant distortion filter (Vincent et al. 2006, as fast_bss_eval and torchmetrics
compute it): the estimate is projected on the span of ``filter_length`` shifts of the reference, and the ratio of
the projection's energy to the rest is the score. The projection's normal equations are a symmetric Toeplitz
system, solved here by Levinson recursion (``scipy.linalg.solve_toeplitz``): sequential code, so the same numbers
on any thread count, where a batched LU solve through MKL is not (torch's, pytorch/pytorch#142815). It replaces
torchmetrics' functions on the pipeline's path, whose import alone took seconds per worker; the tests hold the
two to the same values.

Reads and writes nothing; raises ValueError for arrays of different shapes or of more than one dimension.
"""

from __future__ import annotations

import numpy as np
from scipy import fft
from scipy.linalg import solve_toeplitz

FILTER_LENGTH = 512  # distortion filter taps (BSS Eval's default, the same as torchmetrics')
_NORM_FLOOR = 1e-6  # signals are scaled to unit norm, floored here (as torchmetrics does)


def _pair(estimate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est, ref = np.asarray(estimate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if est.shape != ref.shape or est.ndim != 1:
        raise ValueError(f"separation scores: need two 1-D signals of one length, got {est.shape} and {ref.shape}")
    return est, ref


def signal_distortion_ratio(estimate: np.ndarray, reference: np.ndarray, filter_length: int = FILTER_LENGTH) -> float:
    """SDR in dB of ``estimate`` against ``reference`` (1-D, same length), distortion filter of ``filter_length``
    taps; -inf when the estimate is orthogonal to every shift of the reference."""
    est, ref = _pair(estimate, reference)
    ref = ref / max(float(np.linalg.norm(ref)), _NORM_FLOOR)
    est = est / max(float(np.linalg.norm(est)), _NORM_FLOOR)
    n_fft = 1 << int(np.ceil(np.log2(2 * ref.size - 1)))
    ref_f = fft.rfft(ref, n=n_fft)
    auto = fft.irfft(ref_f.real ** 2 + ref_f.imag ** 2, n=n_fft)[:filter_length]  # reference's autocorrelation
    cross = fft.irfft(np.conj(ref_f) * fft.rfft(est, n=n_fft), n=n_fft)[:filter_length]
    filt = solve_toeplitz(auto, cross)  # the distortion filter: R h = b, R the Toeplitz matrix of ``auto``
    coherence = float(cross @ filt)  # energy of the estimate's projection (the estimate has unit norm)
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(coherence / (1.0 - coherence)))


def scale_invariant_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SI-SDR in dB (Le Roux et al. 2019): the reference scaled to best fit the estimate, against the residual."""
    est, ref = _pair(estimate, reference)
    eps = float(np.finfo(np.float64).eps)
    alpha = (float(est @ ref) + eps) / (float(ref @ ref) + eps)
    target = alpha * ref
    noise = target - est
    return float(10.0 * np.log10((float(target @ target) + eps) / (float(noise @ noise) + eps)))
