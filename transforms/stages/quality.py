"""QualityStage: technical quality scores of the standardised audio, stored for late-binding gates.

Reads: the standardised FLAC written by IngestStage (``results.ingest.audio_file``).
Provides: silence_ratio (10 ms frames whose peak is below ``quality.silence_level_dbfs``),
bandwidth_hz (highest frequency of the long-term Welch spectrum within ``quality.bandwidth_floor_db``
of its peak: catches upsampled and low-bitrate sources), dc_offset (|mean|, worst channel) and snr_db
(WADA-SNR). Bandwidth and SNR are measured on up to four evenly spread excerpts, so cost is bounded.
Fails when: the stored audio cannot be read (failed). Silent audio gives None for bandwidth and SNR.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import signal

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.row import Row, audio_file, audio_sha256
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.dsp.snr import wada_snr

N_EXCERPTS = 4


def excerpts(x: np.ndarray, rate: int, excerpt_s: float, n: int = N_EXCERPTS) -> np.ndarray:
    """Up to ``n`` evenly spread excerpts of ``excerpt_s`` seconds, concatenated (deterministic)."""
    length = int(excerpt_s * rate)
    if x.shape[0] <= n * length:
        return x
    starts = np.linspace(0, x.shape[0] - length, n).astype(np.int64)
    return np.concatenate([x[s : s + length] for s in starts])


def silence_ratio(x: np.ndarray, rate: int, level_dbfs: float) -> float:
    frame = max(1, rate // 100)
    n = x.shape[0] // frame
    if n == 0:
        return 1.0 if np.abs(x).max(initial=0.0) < 10 ** (level_dbfs / 20) else 0.0
    peaks = np.abs(x[: n * frame]).reshape(n, frame, -1).max(axis=(1, 2))
    return float((peaks < 10 ** (level_dbfs / 20)).mean())


def effective_bandwidth(mono: np.ndarray, rate: int, floor_db: float) -> float | None:
    if mono.size < 256 or not np.any(mono):
        return None
    nperseg = min(4096, mono.size)
    freqs, psd = signal.welch(mono, fs=rate, nperseg=nperseg, detrend="constant")
    psd_db = 10.0 * np.log10(np.maximum(psd, 1e-30))
    above = np.nonzero(psd_db >= psd_db.max() + floor_db)[0]
    return float(freqs[above[-1]]) if above.size else None


class QualityStage(Stage):
    name = "quality"
    version = "1"
    requires = ("audio_file",)
    provides = ("silence_ratio", "bandwidth_hz", "dc_offset", "snr_db")
    resources = Resources(num_cpus=1.0, memory_mb=1024)
    batch_size = 4

    def config_digest(self) -> str:
        return self.config.quality.digest() + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        return audio_sha256(row)

    def process_one(self, row: Row) -> dict[str, Any]:
        cfg = self.config.quality
        x, rate = read_standard_audio(self.store.path(audio_file(row)))
        part = excerpts(x, rate, cfg.analysis_excerpt_s).mean(axis=1)
        bw = effective_bandwidth(part, rate, cfg.bandwidth_floor_db)
        snr = wada_snr(part)
        return {
            "silence_ratio": round(silence_ratio(x, rate, cfg.silence_level_dbfs), 6),
            "bandwidth_hz": None if bw is None else round(bw, 3),
            "dc_offset": round(float(np.abs(x.mean(axis=0)).max()) if x.size else 0.0, 8),
            "snr_db": None if snr is None else round(snr, 4),
        }
