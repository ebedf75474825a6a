"""Rubber Band's R3 engine (``--fine``, the augmentation's default) against its R2 engine (no ``--fine``): how often
the f0 a tracker reads from the augmented vocals agrees with the moved f0 label, and what the stretch costs.

The same label-truth procedure as ``compare_stretchers.py`` (the demo songs' clean vocal stems; each of the eight
ops; per 10.24 s window, raw pitch accuracy of CREPE tiny on every frame of the output against
``SongAugmentation.f0`` of the stored f0), run once with the augmentation's own arguments and once with ``--fine``
taken out of them; CPU counts the ``rubberband`` child processes. Reads nothing but the demo corpus; writes nothing.

Usage: ``.venv/bin/python bench/compare_rubberband_engines.py`` (about 2 minutes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pyrubberband  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from compare_stretchers import DEMO, OPS, SONGS, cpu_now, window_rpa  # noqa: E402

from songcorpus.schemas.config import load_config  # noqa: E402
from songcorpus.transforms.dsp.augment import SongAugmentation  # noqa: E402
from songcorpus.transforms.stages.f0 import estimate_f0  # noqa: E402

ENGINE = {"name": "R3"}  # which engine the wrapped pyrubberband calls below run


def _without_fine_for_r2(real: Callable[..., Any]) -> Callable[..., Any]:
    """pyrubberband's ``time_stretch`` / ``pitch_shift``, with ``--fine`` dropped while :data:`ENGINE` says R2."""

    def call(y: Any, sr: int, arg: float, rbargs: dict[str, str] | None = None) -> Any:
        rbargs = dict(rbargs or {})
        if ENGINE["name"] == "R2":
            rbargs.pop("--fine", None)
        return real(y, sr, arg, rbargs=rbargs)

    return call


def main() -> None:
    torch.set_num_threads(1)
    pyrubberband.time_stretch = _without_fine_for_r2(pyrubberband.time_stretch)
    pyrubberband.pitch_shift = _without_fine_for_r2(pyrubberband.pitch_shift)
    cfg = load_config().f0
    every_frame = cfg.model_copy(update={"only_vocal_activity": False, "voicing_threshold": 0.0})
    windows: dict[str, list[float]] = {"R3": [], "R2": []}
    cpu = {"R3": 0.0, "R2": 0.0}
    audio_s = 0.0
    for song in SONGS:
        x, sr = sf.read(DEMO / song / "vocals.flac", dtype="float32")
        f0, _ = estimate_f0(x, sr, cfg)
        for kind, value in OPS:
            audio_s += x.shape[0] / sr
            for name in windows:
                ENGINE["name"] = name
                aug = SongAugmentation(kind, value, "rubberband")
                start = cpu_now()
                y = aug.audio(x, sr)
                cpu[name] += cpu_now() - start
                fresh, _ = estimate_f0(y, sr, every_frame)
                windows[name].extend(window_rpa(aug.f0(f0, y.shape[0], sr), fresh))
    print("| engine | windows | min window RPA | mean window RPA | below 0.8 | stretch x real time per core |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, w in windows.items():
        print(f"| {name} | {len(w)} | {min(w):.3f} | {np.mean(w):.3f} | {sum(v < 0.8 for v in w)} "
              f"| {audio_s / cpu[name]:.1f} |")


if __name__ == "__main__":
    main()
