"""SileroVadStage: where the vocal stem is active, as time segments, for windowing and to bound f0 cost.

Reads: the vocal stem (``results.stems.vocals_file``), mixed to mono and resampled to 16 kHz (soxr HQ).
Provides: vad_segments (sorted, non-overlapping [start_s, end_s], 3 decimals), vocal_activity (share
of the stem's duration inside a segment), speech_activity (the same for Silero's speech decision
alone: high on speech, low on sustained singing) and vad_method.
Needs: the Silero VAD v6 sequence ONNX shipped in the ``silero-vad`` package (sha256-verified), run by
onnxruntime on one thread. One model per worker: run it as an actor pool.
Fails when: the model is missing or altered (at preflight/setup); the stem is unreadable (failed).
A silent stem, or ``has_vocals`` false from the stems stage, gives no segments and activity 0.0.

Silero is a speech detector; Festival's sung vowels get a median speech probability of 0.015 on the
kal_diphone demo song. So a 32 ms frame that is loud and periodic in the vocal stem also counts as
vocal (``vad.singing_gate``; a cheap YIN aperiodicity test). On a clean stem that is the voice; on a
separated stem, pitched bleed can pass it too (bench/RESULTS.md ("Vocal f0 and VAD") has the measurements).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import soxr

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.config import VadConfig
from songcorpus.schemas.row import Row, has_vocals, vocals_file
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.models.registry import PackageModel, get_model
from songcorpus.transforms.stages.stems import vocal_stem_identity

VAD_RATE = 16000
VAD_HOP = 512  # Silero's frame at 16 kHz (32 ms)
MODEL_NAME = "silero-vad-16k-sequence"
_GATE_CONTEXT = 256  # samples either side of a frame for the periodicity test
_GATE_FMIN, _GATE_FMAX = 50.0, 1100.0


@contextlib.contextmanager
def _keep_torch_threads() -> Iterator[None]:
    """Importing ``silero_vad`` calls ``torch.set_num_threads(1)``; undo that for the caller."""
    import torch

    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


def vad_model_spec() -> PackageModel:
    """The registry entry, with ``silero_vad`` imported under the thread guard (locating its data imports it)."""
    with _keep_torch_threads():
        import silero_vad  # noqa: F401
    return get_model(MODEL_NAME)


def load_vad_model() -> Any:
    """The verified Silero sequence model (onnxruntime, 1 thread). Usable outside a stage."""
    with _keep_torch_threads():
        from silero_vad.sequence_vad import SileroVADSequence

        return SileroVADSequence(str(vad_model_spec().verified()), sampling_rate=VAD_RATE)


def to_vad_rate(x: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (soxr HQ), from (frames,) or (frames, channels)."""
    mono = x.mean(axis=1) if x.ndim == 2 else x
    if rate != VAD_RATE:
        mono = soxr.resample(mono, rate, VAD_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _aperiodicity(frames: np.ndarray, rate: int) -> np.ndarray:
    """YIN aperiodicity of each row: min over 50-1100 Hz lags of the cumulative mean normalised difference."""
    length = frames.shape[1]
    max_lag, min_lag = int(rate / _GATE_FMIN), int(rate / _GATE_FMAX)
    win = length - max_lag
    nfft = 1 << int(np.ceil(np.log2(length + win)))
    corr = np.fft.irfft(np.conj(np.fft.rfft(frames[:, :win], nfft)) * np.fft.rfft(frames, nfft), nfft)[:, :max_lag + 1]
    csum = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    energy0 = csum[:, win] - csum[:, 0]
    energy_lag = csum[:, win:win + max_lag + 1] - csum[:, :max_lag + 1]
    diff = np.maximum(energy0[:, None] + energy_lag - 2.0 * corr, 0.0)
    cmndf = diff[:, 1:] * np.arange(1, max_lag + 1) / np.maximum(np.cumsum(diff[:, 1:], axis=1), 1e-20)
    return cmndf[:, min_lag - 1:].min(axis=1)


def frame_level_and_aperiodicity(audio: np.ndarray, rate: int = VAD_RATE,
                                 chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per 512-sample frame: level (dBFS, mean power) and YIN aperiodicity on the frame plus 256 samples
    either side. Computed ``chunk`` frames at a time, so memory stays bounded on long tracks."""
    n = -(-audio.size // VAD_HOP)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    length = VAD_HOP + 2 * _GATE_CONTEXT
    padded = np.pad(audio, (_GATE_CONTEXT, _GATE_CONTEXT + n * VAD_HOP - audio.size))
    windows = np.lib.stride_tricks.sliding_window_view(padded, length)[::VAD_HOP][:n]
    level, aperiodicity = np.empty(n), np.empty(n)
    for lo in range(0, n, chunk):
        frames = windows[lo:lo + chunk].astype(np.float64)
        level[lo:lo + chunk] = 10.0 * np.log10(np.mean(frames[:, _GATE_CONTEXT:_GATE_CONTEXT + VAD_HOP] ** 2, axis=1) + 1e-20)
        aperiodicity[lo:lo + chunk] = _aperiodicity(frames, rate)
    return level, aperiodicity


def singing_gate(audio: np.ndarray, cfg: VadConfig) -> np.ndarray:
    """Frames (Silero's grid) that are loud relative to the stem and periodic: sung (or pitched) sound."""
    level, aperiodicity = frame_level_and_aperiodicity(audio)
    if level.size == 0:
        return np.zeros(0, dtype=bool)
    floor = max(cfg.gate_floor_dbfs, float(np.percentile(level, 95)) - cfg.gate_range_db)
    return (level >= floor) & (aperiodicity <= cfg.gate_max_aperiodicity)


def segments_from_probs(probs: np.ndarray, n_samples: int, cfg: VadConfig) -> list[tuple[float, float]]:
    """Silero's own segmenter (hysteresis, min speech/silence, padding) on per-frame probabilities."""
    if probs.size == 0 or n_samples == 0:
        return []
    with _keep_torch_threads():
        from silero_vad.utils_vad import get_speech_timestamps_from_probs

        stamps = get_speech_timestamps_from_probs(
            probs.tolist(), sampling_rate=VAD_RATE, threshold=cfg.threshold, min_speech_duration_ms=cfg.min_speech_ms,
            min_silence_duration_ms=cfg.min_silence_ms, speech_pad_ms=cfg.speech_pad_ms, audio_length_samples=n_samples)
    return [(round(s["start"] / VAD_RATE, 3), round(s["end"] / VAD_RATE, 3)) for s in stamps]


def speech_probabilities(audio_16k: np.ndarray, model: Any) -> np.ndarray:
    if audio_16k.size == 0:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(model.audio_forward(audio_16k, sampling_rate=VAD_RATE), dtype=np.float32)


def detect_vocal_activity(audio_16k: np.ndarray, cfg: VadConfig, model: Any,
                          probs: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Vocal segments [(start_s, end_s)] of a 16 kHz mono vocal stem; [] when nothing is active."""
    if probs is None:
        probs = speech_probabilities(audio_16k, model)
    if cfg.singing_gate and probs.size:
        probs = np.maximum(probs, singing_gate(audio_16k, cfg)[:probs.size].astype(np.float32))
    return segments_from_probs(probs, audio_16k.size, cfg)


def covered(segments: list[tuple[float, float]] | list[list[float]], duration_s: float) -> float:
    """Share of ``duration_s`` inside the (non-overlapping) segments."""
    if duration_s <= 0:
        return 0.0
    return round(min(1.0, sum(e - s for s, e in segments) / duration_s), 6)


class SileroVadStage(Stage):
    name = "vad"
    version = "1"
    requires = ("vocals_file", "vocals_sha256", "has_vocals")
    provides = ("vad_segments", "vocal_activity", "speech_activity", "vad_method")
    resources = Resources(num_cpus=1.0, memory_mb=1024)
    batch_size = 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model = None  # no import of silero/torch on the driver until preflight

    def model_name(self) -> str:
        return MODEL_NAME

    def config_digest(self) -> str:
        return self.config.vad.digest() + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        return vocal_stem_identity(row)

    def preflight(self) -> None:
        vad_model_spec().verified()  # the base preflight, with silero imported under the thread guard

    def setup(self) -> None:
        self._model = load_vad_model()

    def process_one(self, row: Row) -> dict[str, Any]:
        cfg = self.config.vad
        method = f"silero{'+singing-gate' if cfg.singing_gate else ''}"
        if not has_vocals(row):
            return {"vad_segments": [], "vocal_activity": 0.0, "speech_activity": 0.0, "vad_method": method}
        if self._model is None:
            self.setup()
        x, rate = read_standard_audio(self.store.path(vocals_file(row)))
        duration = x.shape[0] / rate
        audio = to_vad_rate(x, rate)
        probs = speech_probabilities(audio, self._model)
        segments = detect_vocal_activity(audio, cfg, self._model, probs=probs)
        speech = segments_from_probs(probs, audio.size, cfg) if cfg.singing_gate else segments
        return {"vad_segments": [[s, e] for s, e in segments], "vocal_activity": covered(segments, duration),
                "speech_activity": covered(speech, duration), "vad_method": method}
