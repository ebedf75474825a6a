"""Aesthetic scores of generated songs: SongEval and Audiobox-Aesthetics through the full profile's adapters.

Reads: one clip as a numpy array with its sample rate.
Needs: store models of kind ``songeval`` and ``audiobox-aesthetics`` (transforms/models/songeval.py and
audiobox_aesthetics.py build and load them; this module only scores with them). Either may be switched off by passing None.
Provides: the aesthetics stage's fields with the same names and meaning: songeval_coherence,
songeval_musicality, songeval_memorability, songeval_clarity, songeval_naturalness, songeval_mean,
audiobox_pq, audiobox_pc, audiobox_ce, audiobox_cu (the stage scores at most ``max_analysis_s`` from the
middle of a track; here the whole clip, as the evaluator's windows are already short).
Fails: ModelError for a missing, altered or wrong-kind model; RuntimeError for a non-finite score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.train.eval.metrics.common import mono, store_model_folder


def load_aesthetic_scorers(songeval: str | None = "songeval", audiobox: str | None = "audiobox-aesthetics",
                           store_dir: str | Path | None = None, device: str = "cpu",
                           mixed_precision: bool = False) -> dict[str, Any]:
    """Kind -> scorer (transforms/models/songeval.py ``SongEvalScorer``, audiobox_aesthetics.py
    ``AudioboxAestheticsScorer``) for each
    model that is not None, from verified store folders."""
    import torch

    from songcorpus.transforms.models.audiobox_aesthetics import AUDIOBOX_KIND, AudioboxAestheticsScorer
    from songcorpus.transforms.models.songeval import SONGEVAL_KIND, SongEvalScorer

    scorers: dict[str, Any] = {}
    if songeval is not None:
        _, folder = store_model_folder(songeval, (SONGEVAL_KIND,), store_dir)
        scorers[SONGEVAL_KIND] = SongEvalScorer.from_folder(folder, torch.device(device), mixed_precision)
    if audiobox is not None:
        _, folder = store_model_folder(audiobox, (AUDIOBOX_KIND,), store_dir)
        scorers[AUDIOBOX_KIND] = AudioboxAestheticsScorer.from_folder(folder, torch.device(device), mixed_precision)
    return scorers


def aesthetic_scores(scorers: dict[str, Any], audio: np.ndarray, rate: int) -> dict[str, float]:
    """SongEval's five dimensions and their mean (Yao et al. 2025, ASLP-lab/SongEval; 1-5) and Audiobox
    Aesthetics' PQ/PC/CE/CU (Tjandra et al. 2025; nominally 1-10) of one clip, each model at its own rate
    (``to_rate``, as the corpus stage feeds them: soxr HQ, padded to 1 s)."""
    from songcorpus.transforms.models.aesthetic_inputs import finite_scores, to_rate
    from songcorpus.transforms.models.audiobox_aesthetics import AUDIOBOX_KIND
    from songcorpus.transforms.models.songeval import SONGEVAL_KIND

    x = mono(audio)
    out: dict[str, float] = {}
    songeval = scorers.get(SONGEVAL_KIND)
    if songeval is not None:
        dims = finite_scores(songeval.score(to_rate(x, rate, songeval.rate)), "SongEval")
        out.update({f"songeval_{d}": float(v) for d, v in dims.items()})
        out["songeval_mean"] = float(np.mean(list(dims.values())))
    audiobox = scorers.get(AUDIOBOX_KIND)
    if audiobox is not None:
        axes = finite_scores(audiobox.score(to_rate(x, rate, audiobox.rate)), "Audiobox-Aesthetics")
        out.update({f"audiobox_{a.lower()}": float(v) for a, v in axes.items()})
    return out
