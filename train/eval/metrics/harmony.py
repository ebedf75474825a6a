"""Harmony metrics: chroma cosine similarity (audiocraft's definition) and HPCP similarity (essentia).

Reads: two waveforms (reference, generated) as numpy arrays with their sample rates; or 12-bin pitch-class
profiles, (frames, 12), for :func:`profile_cosine`.
Needs: librosa (the chroma filter bank audiocraft uses), essentia (HPCP). essentia installs only as a
pre-release wheel for Python < 3.12 (the lock's ``train`` extra); without it :func:`hpcp_similarity`
raises MetricUnavailable saying so.
Unavailable (MetricUnavailable): empty audio; HPCP with no frame where both profiles are non-zero.
"""

from __future__ import annotations

import numpy as np

from songcorpus.train.eval.metrics.common import MetricUnavailable, resample

# audiocraft config/solver/musicgen/default.yaml, metrics.chroma_cosine.chroma_base
CHROMA_RATE = 32000  # MusicGen's sample rate (the metric runs at the model's rate)
CHROMA_RADIX2_EXP = 14  # window = n_fft = 16384, hop = 4096
CHROMA_ARGMAX = True
HPCP_RATE = 44100
HPCP_FRAME = 4096
HPCP_HOP = 2048


def profile_cosine(reference: np.ndarray, generated: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Frame-wise cosine similarity of two (frames, bins) profile sequences, truncated to the shorter:
    ``<a, b> / max(|a| |b|, eps)`` per frame (torch.nn.functional.cosine_similarity's form)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(generated, dtype=np.float64)
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n], b[:n]
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norm, eps)


def audiocraft_chroma(audio: np.ndarray, rate: int, sample_rate: int = CHROMA_RATE,
                      radix2_exp: int = CHROMA_RADIX2_EXP, argmax: bool = CHROMA_ARGMAX) -> np.ndarray:
    """(frames, 12) chromagram as audiocraft's ``ChromaExtractor`` computes it (audiocraft/modules/chroma.py):
    mono at ``sample_rate`` (soxr HQ here; audiocraft uses julius), zero-padded to n_fft when shorter;
    power spectrogram with a periodic Hann window of n_fft = win = 2**radix2_exp, hop n_fft / 4, centred
    with reflect padding, scaled by 1 / sum(window^2) (torchaudio ``normalized=True``); librosa's chroma
    filter bank (``filters.chroma(sr, n_fft, tuning=0, n_chroma=12)``); each frame divided by its maximum
    (inf-norm, eps 1e-6); with ``argmax`` each frame becomes the one-hot of its strongest pitch class."""
    import librosa

    n_fft = 2 ** radix2_exp
    hop = n_fft // 4
    y = resample(audio, rate, sample_rate).astype(np.float64)
    if y.size < n_fft:
        pad = n_fft - y.size
        y = np.pad(y, (pad // 2, pad // 2 + pad % 2))
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann (torch.hann_window's default)
    spec = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                               pad_mode="reflect")) ** 2 / np.sum(window ** 2)
    fbank = librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0, n_chroma=12)
    chroma = (fbank @ spec).T  # (frames, 12)
    chroma = chroma / np.maximum(np.abs(chroma).max(axis=1, keepdims=True), 1e-6)
    if argmax:
        onehot = np.zeros_like(chroma)
        onehot[np.arange(chroma.shape[0]), chroma.argmax(axis=1)] = 1.0
        chroma = onehot
    return chroma


def chroma_cosine_similarity(reference: np.ndarray, reference_rate: int, generated: np.ndarray, generated_rate: int,
                             sample_rate: int = CHROMA_RATE, radix2_exp: int = CHROMA_RADIX2_EXP,
                             argmax: bool = CHROMA_ARGMAX) -> float:
    """audiocraft's ``ChromaCosineSimilarityMetric`` (MusicGen, Copet et al. 2023) for one pair: the
    frame-wise cosine of the two :func:`audiocraft_chroma` chromagrams (12 bins, window 16384, hop 4096
    at 32 kHz, argmax one-hot), averaged over the valid frames, ``ceil(samples / hop)`` of the shorter
    clip. With argmax this is the share of frames whose strongest pitch class agrees: a tone transposed
    by a semitone scores 0, by an octave 1."""
    ref = resample(reference, reference_rate, sample_rate)
    gen = resample(generated, generated_rate, sample_rate)
    n = min(ref.size, gen.size)
    if n == 0:
        raise MetricUnavailable("chroma_cosine", "empty audio")
    valid = -(-n // (2 ** radix2_exp // 4))
    a = audiocraft_chroma(ref[:n], sample_rate, sample_rate, radix2_exp, argmax)[:valid]
    b = audiocraft_chroma(gen[:n], sample_rate, sample_rate, radix2_exp, argmax)[:valid]
    return float(profile_cosine(a, b).mean())


def hpcp(audio: np.ndarray, rate: int, magnitude_threshold: float = 1e-4) -> np.ndarray:
    """(frames, 12) Harmonic Pitch Class Profile (Gomez 2006) by essentia: mono at 44.1 kHz, frames of
    4096 with hop 2048 (Blackman-Harris 62 dB window), ``SpectralPeaks`` (up to 100 peaks by magnitude,
    40-5000 Hz, peaks below ``magnitude_threshold`` dropped so noise floor and leakage stay out), then
    ``HPCP`` (12 bins, reference 440 Hz: bin 0 = A, cosine weighting over one semitone, no harmonics,
    band preset, normalised to a unit maximum; silent frames stay all zero)."""
    try:
        import essentia

        essentia.log.infoActive = False  # its import otherwise prints an INFO line about unconfigured SVM models
        import essentia.standard as es
    except ImportError as exc:
        raise MetricUnavailable("hpcp_similarity", f"essentia is not installed ({exc}); it ships wheels for "
                                f"Python < 3.12 only (a base dependency there)") from None
    y = resample(audio, rate, HPCP_RATE)
    if y.size < HPCP_FRAME:
        y = np.pad(y, (0, HPCP_FRAME - y.size))
    window = es.Windowing(type="blackmanharris62", size=HPCP_FRAME)
    spectrum = es.Spectrum(size=HPCP_FRAME)
    peaks = es.SpectralPeaks(orderBy="magnitude", magnitudeThreshold=magnitude_threshold, minFrequency=40,
                             maxFrequency=5000, maxPeaks=100, sampleRate=HPCP_RATE)
    profile = es.HPCP(size=12, referenceFrequency=440, harmonics=0, bandPreset=True, minFrequency=40,
                      maxFrequency=5000, weightType="cosine", nonLinear=False, windowSize=1.0, normalized="unitMax",
                      sampleRate=HPCP_RATE)
    frames = [profile(*peaks(spectrum(window(frame))))
              for frame in es.FrameGenerator(y, frameSize=HPCP_FRAME, hopSize=HPCP_HOP, startFromZero=True)]
    return np.asarray(frames, dtype=np.float64).reshape(-1, 12)


def hpcp_similarity(reference: np.ndarray, reference_rate: int, generated: np.ndarray, generated_rate: int,
                    magnitude_threshold: float = 1e-4) -> float:
    """HPCP similarity (LaDA-Band's harmony score): the frame-wise cosine of the two :func:`hpcp` profiles
    (frame by frame, truncated to the shorter), averaged over the frames where both profiles are non-zero
    (a silent frame has no pitch class to compare). Identical audio scores 1; a triad against its
    transposition by k semitones scores about the share of pitch classes the two chords have in common."""
    if min(np.size(reference), np.size(generated)) == 0:
        raise MetricUnavailable("hpcp_similarity", "empty audio")
    a = hpcp(reference, reference_rate, magnitude_threshold)
    b = hpcp(generated, generated_rate, magnitude_threshold)
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n], b[:n]
    valid = (a.max(axis=1) > 0) & (b.max(axis=1) > 0)
    if not valid.any():
        raise MetricUnavailable("hpcp_similarity", "no frame has a pitch-class profile in both clips (silence)")
    return float(profile_cosine(a[valid], b[valid]).mean())
