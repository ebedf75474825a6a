"""Singer metric: speaker similarity of generated vocals to the reference singer (UniSinger).

Reads: two vocal clips as numpy arrays with their sample rates.
Needs: a store model of kind ``ecapa`` (``ecapa-voxceleb``: speechbrain's spkrec-ecapa-voxceleb, loaded by
transforms/speaker.py without HyperPyYAML, weights through torch.load(weights_only=True)).
Fails: ModelError for a missing, altered or wrong-kind model; ValueError for an empty clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.train.eval.common import store_model_folder

SPEAKER_DEFAULT = "ecapa-voxceleb"


def load_speaker_encoder(name: str = SPEAKER_DEFAULT, store_dir: str | Path | None = None, device: str = "cpu") -> Any:
    """The speaker encoder the full profile uses (transforms/speaker.py ``load_speaker_encoder``), from a
    verified store folder; the published global mean is not subtracted (speechbrain's verification score)."""
    from songcorpus.transforms.speaker import KIND
    from songcorpus.transforms.speaker import load_speaker_encoder as load

    spec, folder = store_model_folder(name, (KIND,), store_dir)
    return load(spec, folder, device)


def speaker_similarity(encoder: Any, reference: np.ndarray, reference_rate: int, generated: np.ndarray,
                       generated_rate: int) -> float:
    """Speaker similarity (SIM, as in UniSinger / VALL-E / NaturalSpeech evaluations): the cosine of the
    ECAPA-TDNN embeddings (Desplanques et al. 2020; speechbrain's ``verify_batch`` score) of the
    generated vocals and of the reference singer's vocals; 1 for the same clip, in [-1, 1]."""
    a, b = encoder.embed_many([(reference, reference_rate), (generated, generated_rate)])
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
