"""The most likely state path under a banded transition matrix: the f0 stage's Viterbi decoding on a mix.

Reads: per-frame state probabilities (states, frames), each column a distribution, and a transition matrix whose
nonzero entries lie within ``width`` states of the diagonal (the triangular pitch prior: a voice moves a few bins
per frame).
Writes: the state index per frame.
Needs: numba (compiled once per process, cached on disk; the curate driver's JIT warm-up fills the cache).
Why not ``librosa.sequence.viterbi``: it scores every state against every state at every frame (220 x 220 on the
vocal band), although all but 23 transitions per state are zero; this scores only the band and returns the same
path. The same path, not just a close one, for emissions floored as the f0 stage floors them: librosa takes logs of
``p + tiny`` (an out-of-band transition costs -708), while one frame's emission and in-band transition cost at most
25 (emissions floored at 1e-6 before normalising over at most ~300 states; the band's smallest transition is
1/width^2), so within the 20 band-steps that cross the 220 vocal-band states the best paths to any two states differ
by less than 510, and a path through an out-of-band transition is always more than 190 below the best in-band one;
ties go to the lowest state index in both. ``tests/test_banded_viterbi.py`` compares the two on random and real
emissions.
Fails when: shapes disagree or ``width`` < 1 (ValueError).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _path(log_prob: np.ndarray, log_trans: np.ndarray, log_init: np.ndarray,
          width: int) -> np.ndarray:  # pragma: no cover - numba
    n_frames, n_states = log_prob.shape
    value = np.empty((n_frames, n_states))
    ptr = np.zeros((n_frames, n_states), dtype=np.int64)
    value[0] = log_prob[0] + log_init
    for t in range(1, n_frames):
        for j in range(n_states):
            lo = max(0, j - width + 1)
            hi = min(n_states, j + width)
            best_k = lo
            best = value[t - 1, lo] + log_trans[lo, j]
            for k in range(lo + 1, hi):
                v = value[t - 1, k] + log_trans[k, j]
                if v > best:
                    best = v
                    best_k = k
            ptr[t, j] = best_k
            value[t, j] = log_prob[t, j] + best
    state = np.empty(n_frames, dtype=np.int64)
    state[n_frames - 1] = np.argmax(value[n_frames - 1])
    for t in range(n_frames - 2, -1, -1):
        state[t] = ptr[t + 1, state[t + 1]]
    return state


def banded_viterbi(prob: np.ndarray, transition: np.ndarray, width: int) -> np.ndarray:
    """State per frame of ``prob`` (states, frames) under ``transition`` (states, states, zero beyond ``width - 1``
    states off the diagonal), uniform start: ``librosa.sequence.viterbi(prob, transition)``'s answer."""
    if prob.ndim != 2 or transition.shape != (prob.shape[0], prob.shape[0]) or width < 1:
        raise ValueError(f"banded_viterbi: prob (states, frames), transition (states, states) and width >= 1 expected, "
                         f"got {prob.shape}, {transition.shape}, {width}")
    if prob.shape[1] == 0:
        return np.zeros(0, dtype=np.int64)
    prob = prob.astype(np.float64, copy=False)
    tiny = np.finfo(np.float64).tiny  # what librosa adds before its logs
    n_states = prob.shape[0]
    log_init = np.log(np.full(n_states, 1.0 / n_states) + tiny)
    return _path(np.ascontiguousarray(np.log(prob + tiny).T), np.log(transition.astype(np.float64) + tiny),
                 log_init, int(width))
