"""What both aesthetic scorers (SongEval, Audiobox-Aesthetics) are fed and what they must give back, shared by the
corpus stage (transforms/stages/aesthetics.py) and the evaluator's aesthetic metric so the two score alike.

Pure: arrays in, arrays out; reads and writes nothing. Fails (RuntimeError) on a non-finite score, naming the model.
"""

from __future__ import annotations

import numpy as np
import soxr

MIN_ANALYSIS_S = 1.0


def to_rate(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 at ``target`` Hz (soxr HQ), zero-padded to ``MIN_ANALYSIS_S``."""
    out = soxr.resample(mono, rate, target, quality="HQ") if rate != target else mono
    out = np.asarray(out, dtype=np.float32)
    least = int(MIN_ANALYSIS_S * target)
    return np.pad(out, (0, least - out.size)) if out.size < least else out


def finite_scores(scores: dict[str, float], model: str) -> dict[str, float]:
    bad = sorted(k for k, v in scores.items() if not np.isfinite(v))
    if bad:
        raise RuntimeError(f"{model} gave non-finite scores for {bad}")
    return scores
