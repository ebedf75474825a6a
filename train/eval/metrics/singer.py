"""Singer metric: speaker similarity of generated vocals to the reference singer (UniSinger).

Reads: two vocal clips as numpy arrays with their sample rates.
Needs: a store model of kind ``ecapa`` (``ecapa-voxceleb``, the default: speechbrain's spkrec-ecapa-voxceleb,
loaded by transforms/models/speaker.py without HyperPyYAML) or of kind ``ge2e`` (``ge2e-resemblyzer``: Resemblyzer's
GE2E voice encoder, train/eval/metrics/ge2e.py, whose real weights ship in a PyPI wheel); weights through
torch.load(weights_only=True). Scores from the two encoders are not comparable: eval.json names the one used.
Fails: ModelError for a missing, altered or wrong-kind model; ValueError for an empty clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.train.eval.metrics.common import cosine, store_model_folder

SPEAKER_DEFAULT = "ecapa-voxceleb"


def load_speaker_encoder(name: str | None = None, store_dir: str | Path | None = None, device: str = "cpu") -> Any:
    """Store model ``name`` (default :data:`SPEAKER_DEFAULT`) from a verified folder: an ECAPA model as the full
    profile loads it (transforms/models/speaker.py; the published global mean is not subtracted: speechbrain's
    verification score), or a GE2E one (train/eval/metrics/ge2e.py)."""
    from songcorpus.train.eval.metrics import ge2e
    from songcorpus.transforms.models import speaker

    spec, folder = store_model_folder(name or SPEAKER_DEFAULT, (speaker.KIND, ge2e.KIND), store_dir)
    if spec.kind == ge2e.KIND:
        return ge2e.load_ge2e_encoder(spec, folder, device)
    return speaker.load_speaker_encoder(spec, folder, device)


def speaker_similarity(encoder: Any, reference: np.ndarray, reference_rate: int, generated: np.ndarray,
                       generated_rate: int) -> float:
    """Speaker similarity (SIM, as in UniSinger / VALL-E / NaturalSpeech evaluations): the cosine of the
    speaker embeddings of the generated vocals and of the reference singer's vocals (ECAPA-TDNN, Desplanques et
    al. 2020, speechbrain's ``verify_batch`` score; or GE2E, Wan et al. 2018); 1 for the same clip, in [-1, 1]."""
    a, b = encoder.embed_many([(reference, reference_rate), (generated, generated_rate)])
    return cosine(a, b, 1e-12)
