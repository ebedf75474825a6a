"""numba's kernel cache is filled by the driver before workers start, so workers only ever read it
(concurrent writers corrupt it: CI's structure actors segfaulted in a loop on a fresh install)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEMO_DIR

WORKER = f"""
import numpy as np, soundfile as sf
from songcorpus.schemas.config import load_config
from songcorpus.transforms.dsp.augment import pitch_shift, time_stretch
from songcorpus.transforms.stages.stems import repet_sim
from songcorpus.transforms.stages.structure import analyse
cfg = load_config()
x, rate = sf.read({str(DEMO_DIR / "song_00" / "mix.flac")!r}, dtype="float32")
x = (x.mean(axis=1) if x.ndim == 2 else x)[: 15 * rate]
analyse(x, rate, cfg.structure)
st = cfg.stems
repet_sim(x, rate, st.n_fft, st.hop_length, st.similarity_width_s, st.n_neighbours, st.margin)
time_stretch(x[:rate], rate, 0.8, "librosa")
pitch_shift(x[:rate], rate, -2.0, "librosa")
"""


@pytest.mark.slow  # compiles every kernel into an empty cache (about a minute); every curate runs the warm-up
def test_workers_find_a_complete_cache_after_the_warm_up(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    warm = "from songcorpus.pipelines.engines.jit_cache import warm_jit_cache; warm_jit_cache()"
    subprocess.run([sys.executable, "-c", warm], env=env, check=True, timeout=600)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "numba").rglob("*") if p.is_file()}
    assert any(p.suffix == ".nbi" for p in files)
    subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, timeout=600)  # what a worker runs
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "numba").rglob("*") if p.is_file()}
    assert after == files, sorted(str(p.name) for p in after if after.get(p) != files.get(p))
