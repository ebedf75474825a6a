"""The embedded codec: frame-count contract, exact frame times, round trips, deterministic tokens."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf
import soxr
from scipy.spatial.distance import cdist

from songcorpus.schemas.config import CodecConfig
from songcorpus.transforms.models.embedded_codec import (
    EmbeddedCodec,
    encode_tokens,
    fit_codebook,
    load_codebook,
    n_frames,
)

from conftest import DEMO_DIR

SR = 44100


@pytest.fixture(scope="module")
def demo() -> np.ndarray:
    x, sr = sf.read(DEMO_DIR / "song_00" / "mix.flac", dtype="float32")
    assert sr == SR and x.ndim == 1
    return x


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("duration", "rate", "expected"), [
    (10.24, 21.53, 221), (3.3333, 21.53, 72), (47.55, 21.53, 1024),
    (10.24, 25.0, 256), (3.3333, 25.0, 84), (47.55, 25.0, 1189), (0.0, 25.0, 0), (0.04, 25.0, 1),
])
def test_frame_count_rule(duration, rate, expected, demo):
    assert n_frames(duration, rate) == expected
    for sr in (44100, 48000):
        n = round(duration * sr)
        x = demo[:n] if sr == SR else soxr.resample(demo, SR, sr)[:n]
        codec = EmbeddedCodec(CodecConfig(latent_rate_hz=rate), sr)
        lat = codec.encode_latents(x)
        assert lat.dtype == np.float32
        assert lat.shape == (n_frames(n / sr, rate), CodecConfig().n_mels) == (codec.n_frames(n / sr), 128)
        assert np.isfinite(lat).all()


@pytest.mark.parametrize("sr", [44100, 48000])
def test_frame_i_describes_time_i_over_rate(sr):
    """1 ms bursts at t = k / 21.53 s (a non-integer hop) land in frame k, centred: no drift by 47.55 s.

    An integer hop of round(sr / rate) would put frame 1023 about 7 ms off its time, which costs
    the burst over 1 dB of window weight; the exact centres keep every burst's energy equal.
    """
    rate = 21.53
    burst = np.random.default_rng(0).normal(0, 0.5, 2 * (sr // 2000)).astype(np.float32)
    x = np.zeros(round(47.55 * sr), dtype=np.float32)
    ks = [1, 37, 500, 1023]
    for k in ks:
        start = round(k / rate * sr) - sr // 2000
        x[start : start + burst.shape[0]] = burst
    lat = EmbeddedCodec(CodecConfig(latent_rate_hz=rate), sr).encode_latents(x)
    assert lat.shape[0] == 1024
    energy = np.exp(2 * lat.astype(np.float64)).sum(axis=1)
    assert sorted(np.argsort(energy)[-len(ks):].tolist()) == ks
    assert np.ptp(10 * np.log10(energy[ks])) < 0.1


@pytest.mark.parametrize(("rate", "sr"), [(25.0, 44100), (21.53, 44100), (21.53, 48000), (25.0, 48000)])
def test_round_trip_length_rate_and_content(rate, sr, demo):
    x = demo[SR * 10 : SR * 10 + round(3.3333 * SR)]
    x = x if sr == SR else soxr.resample(x, SR, sr)
    codec = EmbeddedCodec(CodecConfig(latent_rate_hz=rate), sr)
    lat = codec.encode_latents(x)
    y = codec.decode_latents(lat, x.shape[0])
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    again = codec.encode_latents(y)
    assert again.shape == lat.shape
    # The decoded audio's log-mel follows the original's frame by frame: far closer than another
    # excerpt of the same song, and each frame's nearest original frame is itself (+-1).
    other_src = demo if sr == SR else soxr.resample(demo, SR, sr)
    other = codec.encode_latents(other_src[sr * 30 : sr * 30 + x.shape[0]])
    assert np.mean((lat - again) ** 2) < 0.1 * np.mean((lat - other) ** 2)
    nearest = np.argmin(cdist(again, lat), axis=1)
    assert np.mean(np.abs(nearest - np.arange(lat.shape[0])) <= 1) > 0.9


def test_decode_is_deterministic_and_honours_output_rate():
    """A 1 kHz sine encoded at 44.1 kHz decodes at 48 kHz with the same pitch, identically twice."""
    t = np.arange(SR * 2) / SR
    x = (0.3 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    codec = EmbeddedCodec(CodecConfig(latent_rate_hz=21.53), SR)
    lat = codec.encode_latents(x)
    y1 = codec.decode_latents(lat, 96000, out_rate=48000)
    y2 = codec.decode_latents(lat, 96000, out_rate=48000)
    assert y1.shape == (96000,) and y1.tobytes() == y2.tobytes()
    spec = np.abs(np.fft.rfft(y1 * np.hanning(y1.shape[0])))
    peak_hz = np.argmax(spec) * 48000 / y1.shape[0]
    assert abs(peak_hz - 1000.0) < 40.0
    with pytest.raises(ValueError, match="Nyquist"):
        codec.decode_latents(lat, 1000, out_rate=16000)


@pytest.fixture(scope="module")
def corpus_frames() -> np.ndarray:
    cfg = CodecConfig()
    frames = []
    for name in ("song_00", "song_01", "instr_fof_00"):
        x, _ = sf.read(DEMO_DIR / name / "mix.flac", dtype="float32")
        frames.append(EmbeddedCodec(cfg, SR).encode_latents(x))
    return np.concatenate(frames)


def test_codebook_and_tokens_are_stable(corpus_frames, tmp_path):
    cfg = CodecConfig(codebook_size=64, fit_max_frames=1000, seed=3)
    assert corpus_frames.shape[0] > cfg.fit_max_frames  # the seeded subsample path is exercised
    a = fit_codebook(corpus_frames, cfg)
    b = fit_codebook(corpus_frames.copy(), cfg)
    assert a.shape == (64, cfg.n_mels) and a.dtype == np.float32
    assert a.tobytes() == b.tobytes()
    assert fit_codebook(corpus_frames, cfg.model_copy(update={"seed": 4})).tobytes() != a.tobytes()
    ids1, ids2 = encode_tokens(corpus_frames, a), encode_tokens(corpus_frames, b)
    assert ids1.dtype == np.int32 and ids1.tobytes() == ids2.tobytes()
    assert len(np.unique(ids1)) > 32  # the codebook is used, not collapsed

    # Tokens carry information: the fitted codebook reconstructs latents far better than a random one.
    rng = np.random.default_rng(0)
    random_cb = (corpus_frames.mean(0) + corpus_frames.std(0) * rng.normal(size=(64, cfg.n_mels))).astype(np.float32)
    err_fit = np.mean((a[ids1] - corpus_frames) ** 2)
    err_rand = np.mean((random_cb[encode_tokens(corpus_frames, random_cb)] - corpus_frames) ** 2)
    assert err_fit < 0.5 * err_rand


def test_codebook_with_few_distinct_frames():
    cfg = CodecConfig(codebook_size=16)
    frames = np.repeat(np.arange(5, dtype=np.float32)[:, None] * np.ones((1, cfg.n_mels), np.float32), 40, axis=0)
    cb = fit_codebook(frames, cfg)
    assert cb.shape == (5, cfg.n_mels)
    assert np.array_equal(encode_tokens(frames, cb), np.repeat(np.arange(5), 40))
    with pytest.raises(ValueError):
        fit_codebook(np.zeros((0, cfg.n_mels), np.float32), cfg)


def test_ties_go_to_lowest_id():
    cb = np.zeros((4, 8), np.float32)
    cb[1] = cb[3] = 1.0
    cb[0] = cb[2] = -1.0
    assert encode_tokens(np.ones((2, 8)) * 0.9, cb).tolist() == [1, 1]
    assert encode_tokens(np.zeros((1, 8)), cb).tolist() == [0]


def test_codec_tokens_at_token_rate_save_load_and_lineage(demo, corpus_frames, tmp_path):
    cfg = CodecConfig(latent_rate_hz=21.53, token_rate_hz=25.0, codebook_size=32)
    codec = EmbeddedCodec(cfg, SR)
    assert "codebook_sha256" not in codec.lineage()
    with pytest.raises(ValueError, match="no codebook"):
        codec.encode_tokens(demo[:SR])
    codec.fit_codebook(corpus_frames)  # corpus frames are at 25 Hz = the token rate
    x = demo[: round(4.1 * SR)]
    ids = codec.encode_tokens(x)
    assert ids.shape == (n_frames(x.shape[0] / SR, 25.0),)
    assert codec.encode_latents(x).shape[0] == n_frames(x.shape[0] / SR, 21.53)
    y = codec.decode_tokens(ids, x.shape[0])
    assert y.shape == x.shape and np.isfinite(y).all()

    path = tmp_path / "codebook.npy"
    digest = codec.save_codebook(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    lineage = codec.lineage()
    json.dumps(lineage)
    assert lineage["codec"] == "embedded-mel" and lineage["codebook_sha256"] == digest
    assert lineage["n_mels"] == 128 and lineage["latent_rate_hz"] == 21.53 and lineage["token_rate_hz"] == 25.0

    other = EmbeddedCodec(cfg, SR)
    other.load_codebook(path, expected_sha256=digest)
    assert other.encode_tokens(x).tobytes() == ids.tobytes()
    with pytest.raises(ValueError, match="sha256"):
        load_codebook(path, expected_sha256="0" * 64)


def _sung_melody(sr: int) -> tuple[np.ndarray, np.ndarray]:
    """A vowel-like voice (harmonics to 5 kHz, -6 dB/octave, 5.5 Hz vibrato) on a melody of eight notes
    from 147 to 392 Hz, 0.5 s each; and its f0 at 100 Hz."""
    notes = 440.0 * 2.0 ** (np.array([-15, -10, -8, -3, -1, 2, -5, -12]) / 12)  # D3 .. G4
    t = np.arange(int(0.5 * sr)) / sr
    parts, f0 = [], []
    for f in notes:
        inst = f * 2.0 ** (0.25 / 12 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(inst) / sr
        tone = sum(np.sin(k * phase) / k for k in range(1, int(5000 / f) + 1))
        parts.append(tone * np.hanning(t.size) ** 0.1)
        f0.append(inst[:: sr // 100])
    x = np.concatenate(parts)
    return (0.3 * x / np.abs(x).max()).astype(np.float32), np.concatenate(f0)


def test_codec_keeps_the_pitch_of_a_sung_melody():
    """Decoded latents keep the melody: the f0 stage's tracker finds the same pitches (RPA > 0.8, 50 cents) and
    the pitch classes survive (chroma cosine > 0.7). The 64-mel, 20 kHz codec of earlier versions scored about
    RPA 0.5 and chroma 0.2 on sung vocals (bench/RESULTS.md, "The embedded codec's pitch and harmony ceiling")."""
    from songcorpus.train.eval.metrics.harmony import chroma_cosine_similarity
    from songcorpus.train.eval.metrics.melody import f0_of_vocals, melody_accuracy

    x, _ = _sung_melody(SR)
    codec = EmbeddedCodec(CodecConfig(), SR)
    y = codec.decode_latents(codec.encode_latents(x), x.size)
    reference = f0_of_vocals(x, SR)
    assert (reference > 0).mean() > 0.8  # the tracker hears the clean melody
    scores = melody_accuracy(reference, f0_of_vocals(y, SR))
    assert scores["rpa"].value > 0.8, scores
    assert chroma_cosine_similarity(x, SR, y, SR) > 0.7


def test_a_mel_bank_the_decoder_cannot_invert_is_refused():
    """160 bands over 0-11 kHz at n_fft 2048 are narrower than the FFT bins: the bank loses rank and the
    least-squares inversion decoded to amplitudes near 1e8. It is refused by name, at construction and decode."""
    bad = CodecConfig(n_mels=160, fmax_hz=11025.0)
    with pytest.raises(ValueError, match="160 mel bands over 0-11025 Hz are narrower than the FFT"):
        EmbeddedCodec(bad, SR)
    from songcorpus.transforms.models.embedded_codec import decode_latents

    with pytest.raises(ValueError, match="codec.n_mels"):
        decode_latents(np.zeros((10, 160), np.float32), 4410, SR, bad)
    EmbeddedCodec(CodecConfig(n_mels=150, fmax_hz=11025.0), SR)  # still invertible: accepted
