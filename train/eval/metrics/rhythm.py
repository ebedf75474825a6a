"""Rhythm metric: onset F1 of generated against reference accompaniment (LaDA-Band, SongEcho).

Reads: onset times in seconds (:func:`onset_f1`), or two waveforms as numpy arrays with their sample rates
(:func:`onset_f1_audio`, which detects onsets with :func:`detect_onsets`).
Needs: librosa (the onset detector), mir_eval (the matching).
Unavailable (MetricUnavailable): a reference with no onset (precision and recall have no ground truth).
"""

from __future__ import annotations

import numpy as np

from songcorpus.train.eval.metrics.common import MetricUnavailable, resample

ONSET_RATE = 22050  # librosa's default analysis rate: the detector's parameters below are stated at it
ONSET_HOP = 256  # 11.6 ms frames at 22.05 kHz
ONSET_WINDOW_S = 0.05


def detect_onsets(audio: np.ndarray, rate: int) -> np.ndarray:
    """Onset times (s, float64, ascending) by librosa's spectral-flux detector
    (``librosa.onset.onset_detect``, librosa 0.11 defaults except the hop): audio mixed to mono and resampled to
    22.05 kHz (soxr HQ); onset strength = mean over 128 mel bands of the positive first difference (lag
    1) of the log-power mel spectrogram (n_fft 2048, hop 256 = 11.6 ms, centred frames); peaks picked
    with librosa's defaults (pre/post max 30/0 ms, pre/post avg 100/100 ms, delta 0.07, wait 30 ms); no
    backtracking. Silence gives no onset."""
    import librosa

    y = resample(audio, rate, ONSET_RATE)
    if y.size == 0 or not np.any(y):
        return np.zeros(0)
    times = librosa.onset.onset_detect(y=y, sr=ONSET_RATE, hop_length=ONSET_HOP, backtrack=False, units="time")
    return np.asarray(times, dtype=np.float64)


def onset_f1(reference_onsets: np.ndarray, generated_onsets: np.ndarray, window_s: float = ONSET_WINDOW_S) -> float:
    """Onset F-measure (``mir_eval.onset.f_measure``, Raffel et al. 2014): each reference onset matches at
    most one generated onset within +-``window_s`` (50 ms) by maximum bipartite matching; F1 = harmonic
    mean of precision and recall. No generated onset against a non-empty reference scores 0."""
    import mir_eval.onset

    ref = np.sort(np.asarray(reference_onsets, dtype=np.float64).ravel())
    est = np.sort(np.asarray(generated_onsets, dtype=np.float64).ravel())
    if ref.size == 0:
        raise MetricUnavailable("onset_f1", "the reference has no onset")
    if est.size == 0:
        return 0.0
    f, _, _ = mir_eval.onset.f_measure(ref, est, window=window_s)
    return float(f)


def onset_f1_audio(reference: np.ndarray, reference_rate: int, generated: np.ndarray, generated_rate: int,
                   window_s: float = ONSET_WINDOW_S) -> float:
    """:func:`onset_f1` of the onsets :func:`detect_onsets` finds in the generated and the reference
    accompaniment (the same detector on both sides)."""
    return onset_f1(detect_onsets(reference, reference_rate), detect_onsets(generated, generated_rate), window_s)
