"""Fill numba's on-disk cache for the librosa kernels the lite stages use, and songcorpus's own (REPET-SIM's
neighbour median and soft mask, the f0 stage's banded Viterbi: ``transforms/dsp/``), in one process at a time.

librosa compiles its numba kernels with ``cache=True``: on a fresh install, the first processes to
import it compile and write the cache files. numba's cache is not safe for concurrent writers: two
workers compiling the same kernel can each pick the same file name for different signatures, and
every later process loading that index segfaults (seen in CI: Ray restarted the structure actor
65 times). So the driver calls :func:`warm_jit_cache` before any worker starts: under an
inter-process lock it imports librosa and runs each kernel family once on a little noise,
which compiles and saves everything on the first run and only loads (reads) ever after. Workers
then find a complete cache and never write. The lock is a ``flock`` on librosa's own package folder, where
numba writes the cache: no lock file is left anywhere.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
from pathlib import Path

import numpy as np

_warm = False


def cache_owner() -> Path:
    """librosa's package folder (found without importing it): what every process that compiles its kernels
    locks."""
    spec = importlib.util.find_spec("librosa")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("librosa is not installed (run setup.sh)")
    return Path(spec.origin).parent


def warm_jit_cache() -> None:
    """Compile (first run) or load (later runs) every librosa kernel the stages reach; once per process."""
    global _warm
    if _warm:
        return
    fd = os.open(cache_owner(), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            from songcorpus.schemas.config import load_config
            from songcorpus.transforms.dsp.augment import pitch_shift, time_stretch
            from songcorpus.transforms.stages.f0 import viterbi_path
            from songcorpus.transforms.stages.stems import repet_sim
            from songcorpus.transforms.stages.structure import analyse

            cfg = load_config()
            noise = np.random.default_rng(0).normal(0, 0.1, 5 * 22050).astype(np.float32)
            analyse(noise, 22050, cfg.structure)  # onsets, beats, sync, recurrence, peaks
            st = cfg.stems
            # stft, softmask, istft, and the neighbour median (numba compiles per dtype, not per neighbour count)
            repet_sim(np.tile(noise, 2), 44100, st.n_fft, st.hop_length, 0.5, 2, st.margin)
            time_stretch(noise[:22050], 22050, 1.1, "librosa")  # phase vocoder (augment.stretcher: librosa)
            pitch_shift(noise[:22050], 22050, 1.0, "librosa")
            viterbi_path(np.abs(noise[:3600]).reshape(10, 360), 10, 40, 12)  # f0 on a mix: the banded Viterbi
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    _warm = True
