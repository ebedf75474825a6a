"""The embedded codec: the project's own audio representation, so trainers need no external weights.

It is *not* MuCodec, EnCodec or a VAE: latents are plain log-mel frames and tokens are k-means ids
over them. Everything here is DSP plus a codebook fit on the corpus itself.

Reads: mono float audio at the codec's sample rate (any rate whose Nyquist is above ``fmin_hz``;
44.1 and 48 kHz are the tested ones) and a :class:`CodecConfig`.
Provides:
- latents: ``(n_frames, n_mels)`` float32, natural log of mel magnitudes (clamped at ``log_floor``)
  at ``latent_rate_hz``. Frame ``i`` describes time ``i / rate``: its ``n_fft`` Hann window is centred
  on sample ``round(i * sample_rate / rate)``, so non-integer hops (21.53 Hz at 44.1 kHz) are exact to
  half a sample, with no interpolation. The frame count is the contract
  ``n_frames = ceil(duration_s * rate - 1e-9)``, ``duration_s = len(x) / sample_rate``.
- tokens: int32 ids at ``token_rate_hz`` (latents computed at that rate), nearest centroid of a
  codebook fit by k-means on corpus frames; the codebook is a ``.npy`` file whose sha256 goes in
  the lineage.
- audio back, for listening only: latents -> mel magnitudes resampled in time to a hop of
  ``n_fft // 4`` -> least-squares mel inversion (torchaudio InverseMelScale) -> Griffin-Lim with a
  fixed zero-phase init and ``griffin_lim_iters`` iterations, so decoding is deterministic.
Needs: numpy, scipy, torch/torchaudio (filterbank, inversion, Griffin-Lim), scikit-learn (k-means).
Encoding runs in float64 with no multi-threaded reductions, so latents and tokens are bit-identical
whatever the thread count; k-means runs single-threaded for the same reason.
Fails: ValueError for non-mono input, a mel band that does not fit below Nyquist, more mel bands than the
FFT resolves (the decoder could not invert them), latents with the wrong number of channels, an empty frame
set to fit, ids outside the codebook, or a codebook file whose sha256 does not match the one expected.
"""

from __future__ import annotations

import hashlib
import io
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import torch
import torchaudio
from scipy.signal import get_window

from songcorpus.io.atomic import npy_bytes
from songcorpus.schemas.config import CodecConfig
from songcorpus.transforms.dsp.kmeans import fit_kmeans, nearest_centroid

CODEC_NAME = "embedded-mel"
CODEC_VERSION = "1"
_FRAME_EPS = 1e-9
_CHUNK = 1024  # frames per block while encoding / assigning tokens (bounds memory on long songs)


# ---------------------------------------------------------------------------------------------
# frame grid
# ---------------------------------------------------------------------------------------------

def n_frames(duration_s: float, rate: float) -> int:
    """Frames covering ``duration_s`` at ``rate`` Hz: the alignment contract every writer checks."""
    return max(0, math.ceil(duration_s * rate - _FRAME_EPS))


def frame_count(n_samples: int, sample_rate: int, rate: float) -> int:
    """:func:`n_frames` for a signal of ``n_samples`` samples."""
    return n_frames(n_samples / sample_rate, rate)


def frame_centres(count: int, sample_rate: int, rate: float) -> np.ndarray:
    """Sample index each frame's window is centred on: ``round(i * sample_rate / rate)``."""
    return np.rint(np.arange(count, dtype=np.float64) * (sample_rate / rate)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# mel filterbank (torchaudio, slaney scale and norm: the same bank for encode and decode)
# ---------------------------------------------------------------------------------------------

def mel_band(sample_rate: int, cfg: CodecConfig) -> tuple[float, float]:
    """(fmin, fmax) of the mel bank at this rate: ``fmax_hz`` capped at Nyquist."""
    fmax = min(cfg.fmax_hz, sample_rate / 2)
    if cfg.fmin_hz >= fmax:
        raise ValueError(f"embedded codec: fmin_hz {cfg.fmin_hz} is not below the band top {fmax} Hz at {sample_rate} Hz")
    return cfg.fmin_hz, fmax


@lru_cache(maxsize=16)
def _fbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    fb = torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, fmin, fmax, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
    )
    return fb.numpy().astype(np.float64)  # (n_freqs, n_mels)


@lru_cache(maxsize=16)
def check_mel_bank(n_fft: int, n_mels: int, sample_rate: int, fmin: float, fmax: float) -> None:
    """ValueError when the mel bank cannot be inverted: with more mel bands than the FFT resolves in the low,
    linear part of the scale, neighbouring filters cover the same FFT bins, the bank loses rank, and the
    decoder's least-squares inversion returns amplitudes of 1e7 and more (measured: 160 mels over 0-11 kHz
    at n_fft 2048)."""
    fb = _fbank(n_fft, n_mels, sample_rate, fmin, fmax)
    singular = np.linalg.svd(fb, compute_uv=False)
    if singular[-1] <= singular[0] * 1e-6:
        raise ValueError(f"embedded codec: {n_mels} mel bands over {fmin:g}-{fmax:g} Hz are narrower than the FFT's "
                         f"{sample_rate / n_fft:.1f} Hz bins at n_fft {n_fft} (the filterbank loses rank), so latents "
                         f"cannot be decoded; use fewer codec.n_mels, a higher codec.fmax_hz or a larger codec.n_fft")


@lru_cache(maxsize=4)
def _window(n_fft: int) -> np.ndarray:
    return get_window("hann", n_fft, fftbins=True).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# latents
# ---------------------------------------------------------------------------------------------

def _mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"embedded codec: expected mono audio (1-D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"embedded codec: expected float audio, got {x.dtype}")
    return x


def encode_latents(x: np.ndarray, sample_rate: int, cfg: CodecConfig, rate: float | None = None) -> np.ndarray:
    """Log-mel frames ``(n_frames, n_mels)`` float32 of mono ``x`` at ``rate`` (default the latent rate)."""
    rate = cfg.latent_rate_hz if rate is None else rate
    x = _mono(x)
    count = frame_count(x.shape[0], sample_rate, rate)
    out = np.empty((count, cfg.n_mels), dtype=np.float32)
    if count == 0:
        return out
    half = cfg.n_fft // 2
    padded = np.zeros(x.shape[0] + 2 * half + 1, dtype=x.dtype)  # float32 input stays float32 here
    padded[half : half + x.shape[0]] = x
    fb = _fbank(cfg.n_fft, cfg.n_mels, sample_rate, *mel_band(sample_rate, cfg))
    window = _window(cfg.n_fft)
    offsets = np.arange(cfg.n_fft, dtype=np.int64)
    centres = frame_centres(count, sample_rate, rate)  # padded index of a window start = centre
    for start in range(0, count, _CHUNK):
        frames = padded[centres[start : start + _CHUNK, None] + offsets].astype(np.float64) * window
        mag = np.abs(scipy.fft.rfft(frames, axis=1, workers=1))
        mel = mag @ fb
        out[start : start + _CHUNK] = np.log(np.maximum(mel, cfg.log_floor))
    return out


def _resample_frames(latents: np.ndarray, rate: float, n_out: int, hop_s: float) -> np.ndarray:
    """Linear interpolation in time of frames at ``i / rate`` onto ``j * hop_s`` (ends held)."""
    pos = np.clip(np.arange(n_out, dtype=np.float64) * hop_s * rate, 0.0, latents.shape[0] - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, latents.shape[0] - 1)
    w = (pos - i0)[:, None]
    lat = latents.astype(np.float64)
    return (1.0 - w) * lat[i0] + w * lat[i1]


def decode_latents(latents: np.ndarray, n_samples: int, sample_rate: int, cfg: CodecConfig,
                   rate: float | None = None, out_rate: int | None = None) -> np.ndarray:
    """Audio (float32, exactly ``n_samples`` at ``out_rate``) from latents made at ``sample_rate``.

    For listening and sanity checks: phase is rebuilt by Griffin-Lim, so expect a phasey sound.
    ``out_rate`` (default ``sample_rate``) may differ as long as the mel band fits below its Nyquist.
    """
    rate = cfg.latent_rate_hz if rate is None else rate
    out_rate = sample_rate if out_rate is None else out_rate
    latents = np.asarray(latents)
    if latents.ndim != 2 or latents.shape[1] != cfg.n_mels:
        raise ValueError(f"embedded codec: latents must be (n_frames, {cfg.n_mels}), got {latents.shape}")
    if n_samples <= 0 or latents.shape[0] == 0:
        return np.zeros(max(n_samples, 0), dtype=np.float32)
    fmin, fmax = mel_band(sample_rate, cfg)
    if fmax > out_rate / 2:
        raise ValueError(f"embedded codec: mel band up to {fmax} Hz does not fit below Nyquist at {out_rate} Hz")
    check_mel_bank(cfg.n_fft, cfg.n_mels, out_rate, fmin, fmax)
    hop = cfg.n_fft // 4
    n_stft = 1 + n_samples // hop  # torch.stft(center=True) frame count
    mel = np.exp(_resample_frames(latents, rate, n_stft, hop / out_rate)).T  # (n_mels, n_stft)
    inverse = torchaudio.transforms.InverseMelScale(
        n_stft=cfg.n_fft // 2 + 1, n_mels=cfg.n_mels, sample_rate=out_rate, f_min=fmin, f_max=fmax,
        norm="slaney", mel_scale="slaney",
    )
    griffin_lim = torchaudio.transforms.GriffinLim(
        n_fft=cfg.n_fft, n_iter=cfg.griffin_lim_iters, hop_length=hop, power=1.0, length=n_samples, rand_init=False,
    )
    with torch.no_grad():
        spec = inverse(torch.from_numpy(mel.astype(np.float32)))
        audio = griffin_lim(spec)
    return audio.numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------

def fit_codebook(frames: np.ndarray, cfg: CodecConfig, threads: int = 1) -> np.ndarray:
    """k-means centroids ``(K, n_mels)`` float32 of corpus frames; same frames and seed, same bytes, on any
    number of ``threads`` (``transforms/dsp/kmeans.py`` says how).

    Frames beyond ``fit_max_frames`` are subsampled with a generator seeded by ``cfg.seed``. With
    fewer distinct frames than ``codebook_size``, the codebook is those frames (K shrinks), so no
    centroid is a duplicate.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 2 or frames.shape[0] == 0:
        raise ValueError(f"embedded codec: need a non-empty (n_frames, n_mels) array to fit, got {frames.shape}")
    if frames.shape[1] != cfg.n_mels:
        raise ValueError(f"embedded codec: frames have {frames.shape[1]} channels, config says n_mels={cfg.n_mels}")
    if not np.isfinite(frames).all():
        raise ValueError("embedded codec: frames to fit contain NaN or inf")
    return fit_kmeans(frames, cfg.codebook_size, cfg.seed, cfg.fit_max_frames, cfg.kmeans_max_iter, threads)


def encode_tokens(latents: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest-centroid ids (int32); exact squared distances, ties go to the lowest id."""
    latents = np.asarray(latents, dtype=np.float64)
    codebook = np.asarray(codebook, dtype=np.float64)
    if latents.ndim != 2 or codebook.ndim != 2 or latents.shape[1] != codebook.shape[1]:
        raise ValueError(f"embedded codec: latents {latents.shape} and codebook {codebook.shape} do not match")
    return nearest_centroid(latents, codebook, np.int32)


def decode_tokens(ids: np.ndarray, codebook: np.ndarray, n_samples: int, rate: float, sample_rate: int,
                  cfg: CodecConfig, out_rate: int | None = None) -> np.ndarray:
    """Audio from token ids: centroid frames through :func:`decode_latents`."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= codebook.shape[0]):
        raise ValueError(f"embedded codec: token ids outside [0, {codebook.shape[0]})")
    return decode_latents(np.asarray(codebook)[ids.astype(np.int64)], n_samples, sample_rate, cfg, rate, out_rate)


def codebook_bytes(codebook: np.ndarray) -> bytes:
    """The exact ``.npy`` bytes :func:`save_codebook` writes (float32, C order)."""
    return npy_bytes(np.asarray(codebook, dtype=np.float32))


def codebook_sha256(codebook: np.ndarray) -> str:
    """sha256 of the codebook's ``.npy`` file: ``sha256sum codebook.npy`` gives the same."""
    return hashlib.sha256(codebook_bytes(codebook)).hexdigest()


def save_codebook(codebook: np.ndarray, path: str | Path) -> str:
    """Write the codebook atomically (temp name, then rename); returns its sha256."""
    path = Path(path)
    data = codebook_bytes(codebook)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def load_codebook(path: str | Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read a codebook ``.npy``; with ``expected_sha256``, refuse a file that differs."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ValueError(f"embedded codec: codebook {path} has sha256 {digest}, expected {expected_sha256}")
    codebook = np.load(io.BytesIO(data), allow_pickle=False)
    if codebook.ndim != 2 or codebook.dtype != np.float32:
        raise ValueError(f"embedded codec: {path} is not a (K, n_mels) float32 codebook ({codebook.dtype}, {codebook.shape})")
    return codebook


# ---------------------------------------------------------------------------------------------
# the codec object stages and trainers hold
# ---------------------------------------------------------------------------------------------

class EmbeddedCodec:
    """The embedded codec at one sample rate, with an optional codebook for tokens."""

    def __init__(self, cfg: CodecConfig, sample_rate: int, codebook: np.ndarray | None = None) -> None:
        # fail early, before any latent is written: a band above Nyquist, or a bank the decoder cannot invert
        check_mel_bank(cfg.n_fft, cfg.n_mels, int(sample_rate), *mel_band(sample_rate, cfg))
        self.cfg = cfg
        self.sample_rate = int(sample_rate)
        self.codebook: np.ndarray | None = None
        self.codebook_sha256: str | None = None
        if codebook is not None:
            self.set_codebook(codebook)

    @property
    def latent_rate(self) -> float:
        return self.cfg.latent_rate_hz

    @property
    def token_rate(self) -> float:
        return self.cfg.token_rate_hz

    def n_frames(self, duration_s: float, rate: float | None = None) -> int:
        """Frames for ``duration_s`` at ``rate`` (default the latent rate)."""
        return n_frames(duration_s, self.latent_rate if rate is None else rate)

    def encode_latents(self, x: np.ndarray, rate: float | None = None) -> np.ndarray:
        return encode_latents(x, self.sample_rate, self.cfg, rate)

    def decode_latents(self, latents: np.ndarray, n_samples: int, rate: float | None = None,
                       out_rate: int | None = None) -> np.ndarray:
        return decode_latents(latents, n_samples, self.sample_rate, self.cfg, rate, out_rate)

    def set_codebook(self, codebook: np.ndarray) -> None:
        codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        if codebook.ndim != 2 or codebook.shape[1] != self.cfg.n_mels or codebook.shape[0] == 0:
            raise ValueError(f"embedded codec: codebook must be (K, {self.cfg.n_mels}), got {codebook.shape}")
        self.codebook = codebook
        self.codebook_sha256 = codebook_sha256(codebook)

    def fit_codebook(self, frames: np.ndarray) -> np.ndarray:
        """Fit on frames at the token rate (see :meth:`encode_latents` with ``rate=token_rate``)."""
        self.set_codebook(fit_codebook(frames, self.cfg))
        assert self.codebook is not None
        return self.codebook

    def save_codebook(self, path: str | Path) -> str:
        return save_codebook(self._need_codebook(), path)

    def load_codebook(self, path: str | Path, expected_sha256: str | None = None) -> None:
        self.set_codebook(load_codebook(path, expected_sha256))

    def _need_codebook(self) -> np.ndarray:
        if self.codebook is None:
            raise ValueError("embedded codec: no codebook; fit one (fit_codebook) or load one (load_codebook)")
        return self.codebook

    def encode_tokens(self, x: np.ndarray) -> np.ndarray:
        """Token ids of audio ``x``: latents at the token rate, nearest centroid."""
        return encode_tokens(self.encode_latents(x, rate=self.token_rate), self._need_codebook())

    def decode_tokens(self, ids: np.ndarray, n_samples: int, out_rate: int | None = None) -> np.ndarray:
        return decode_tokens(ids, self._need_codebook(), n_samples, self.token_rate, self.sample_rate, self.cfg, out_rate)

    def lineage(self) -> dict[str, Any]:
        """What made a latent or token: the embedded codec's settings and its codebook's checksum."""
        fmin, fmax = mel_band(self.sample_rate, self.cfg)
        out: dict[str, Any] = {
            "codec": CODEC_NAME,
            "version": CODEC_VERSION,
            "kind": "log-mel latents + k-means tokens (embedded, no external weights)",
            "sample_rate": self.sample_rate,
            "n_mels": self.cfg.n_mels,
            "n_fft": self.cfg.n_fft,
            "fmin_hz": fmin,
            "fmax_hz": fmax,
            "log_floor": self.cfg.log_floor,
            "latent_rate_hz": self.latent_rate,
            "token_rate_hz": self.token_rate,
            "config_hash": self.cfg.digest(),
        }
        if self.codebook is not None:
            out["codebook_size"] = int(self.codebook.shape[0])
            out["codebook_sha256"] = self.codebook_sha256
        return out
