"""Seeded, label-preserving augmentation: plans, audio ops, label transforms, EQ and loudness."""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
import pytest
from scipy import signal

from songcorpus.schemas.config import AugmentConfig
from songcorpus.transforms.dsp.augment import (
    Biquad,
    EqParams,
    SongAugmentation,
    apply_eq,
    frequency_balance_eq,
    normalise_loudness,
    pitch_shift,
    plan_eq,
    plan_song_augmentation,
    rms_db,
    shift_f0,
    song_ops,
    stretch_frames,
    stretch_times,
    time_stretch,
)

SR = 44100
CFG = AugmentConfig()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sine(freq: float, seconds: float = 2.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray) -> float:
    """Frequency of the strongest FFT bin (zero-padded 8x, Hann window) of the middle of x."""
    mid = x[x.shape[0] // 4 : 3 * x.shape[0] // 4]
    spec = np.abs(np.fft.rfft(mid * np.hanning(mid.shape[0]), n=8 * mid.shape[0]))
    return float(np.argmax(spec) * SR / (8 * mid.shape[0]))


# ------------------------------------------------------------------------------------- plans

def test_song_plan_is_deterministic_and_seeded():
    ids = [f"track-{i:04d}" for i in range(200)]
    a = [plan_song_augmentation(t, CFG) for t in ids]
    assert a == [plan_song_augmentation(t, AugmentConfig()) for t in ids]
    b = [plan_song_augmentation(t, CFG.model_copy(update={"seed": 1})) for t in ids]
    assert a != b
    for plan in filter(None, a):
        d = plan.to_dict()
        assert SongAugmentation.from_dict(json.loads(json.dumps(d))) == plan


def test_selected_fraction_and_ops_are_uniform():
    plans = [plan_song_augmentation(f"song/{i}", CFG) for i in range(1000)]
    chosen = [p for p in plans if p is not None]
    # Binomial(1000, 0.2): sd 12.6, so +-50 is a 4-sd band.
    assert 150 <= len(chosen) <= 250
    counts = Counter((p.kind, p.value) for p in chosen)
    assert set(counts) == {(op.kind, op.value) for op in song_ops(CFG)}  # all 8 ops occur
    assert max(counts.values()) < 3 * min(counts.values())
    assert all(plan_song_augmentation(f"s{i}", CFG.model_copy(update={"fraction": 0.0})) is None for i in range(50))


def test_eq_plan_probability_ranges_and_serialisation():
    plans = [plan_eq(f"win-{i}", CFG) for i in range(1000)]
    active = [p for p in plans if p is not None]
    assert 650 <= len(active) <= 750  # Binomial(1000, 0.7): sd 14.5
    assert plans == [plan_eq(f"win-{i}", CFG) for i in range(1000)]
    for p in active:
        for band, rng in ((p.bass, CFG.eq_bass), (p.mid, CFG.eq_mid), (p.treble, CFG.eq_treble)):
            assert rng.gain_db[0] <= band.gain_db <= rng.gain_db[1]
            assert rng.freq_hz[0] <= band.freq_hz <= rng.freq_hz[1]
            assert rng.q[0] <= band.q <= rng.q[1]
        assert EqParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    # Parameters are independent draws, not one shared value.
    assert len({p.bass.gain_db for p in active}) == len(active)


# ------------------------------------------------------------------------------------- audio

@pytest.mark.parametrize("stretcher", ["rubberband-library", "rubberband", "librosa"])
@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.2])
def test_time_stretch_length_and_pitch_kept(factor, stretcher):
    x = sine(440.0, seconds=1.5)
    y = time_stretch(x, SR, factor, stretcher)
    assert y.shape == (round(x.shape[0] / factor),) and y.dtype == np.float32
    assert abs(peak_hz(y) - 440.0) < 0.01 * 440.0
    assert y.tobytes() == time_stretch(x, SR, factor, stretcher).tobytes()
    # the sine's level is kept and its middle is stretched, not padded or cut
    mid = y[y.shape[0] // 4: 3 * y.shape[0] // 4]
    assert abs(20 * np.log10(np.sqrt(np.mean(mid ** 2)) / np.sqrt(np.mean(x ** 2)))) < 1.0


@pytest.mark.parametrize("stretcher", ["rubberband-library", "rubberband", "librosa"])
@pytest.mark.parametrize("semitones", [-2, -1, 1, 2])
def test_pitch_shift_moves_a_sine_by_the_right_ratio(semitones, stretcher):
    x = sine(440.0, seconds=1.5)
    y = pitch_shift(x, SR, semitones, stretcher)
    assert y.shape == x.shape and y.dtype == np.float32
    expected = 440.0 * 2 ** (semitones / 12)
    assert abs(peak_hz(y) - expected) < 0.005 * expected  # a semitone is ~6%
    assert y.tobytes() == pitch_shift(x, SR, semitones, stretcher).tobytes()


@pytest.mark.parametrize("stretcher", ["rubberband-library", "rubberband"])
@pytest.mark.parametrize("amp", [3.0, 1e-3])
def test_rubberband_keeps_the_level_of_loud_and_quiet_signals(amp, stretcher):
    """pyrubberband's 16-bit WAV trip would clip a signal over full scale and quantise a quiet one
    coarsely; the scaling around the trip keeps the level and the waveform of both. The library runs in
    float and must keep them too (the op is linear in gain)."""
    x = sine(440.0, seconds=1.0, amp=amp)
    y = time_stretch(x, SR, 1.1, stretcher)
    assert 0.97 * amp < np.max(np.abs(y)) < 1.03 * amp
    ref = amp / 0.5 * time_stretch(sine(440.0, seconds=1.0), SR, 1.1, stretcher)  # the same run at a peak of 0.5
    # unscaled, a 1e-3 sine would cross the 16-bit files on +-33 steps: about 1% rms error
    assert np.sqrt(np.mean((y - ref) ** 2)) < 1e-3 * np.sqrt(np.mean(ref ** 2))


def test_missing_rubberband_names_the_fix(monkeypatch):
    import songcorpus.transforms.dsp.augment as augment

    augment.rubberband_version.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(augment.StretcherError, match="apt-get install rubberband-cli"):
            time_stretch(sine(440.0, seconds=0.5), SR, 1.2, "rubberband")
    finally:
        augment.rubberband_version.cache_clear()


def test_missing_rubberband_library_names_the_fix(monkeypatch):
    import songcorpus.transforms.dsp.augment as augment

    augment.rubberband_library_version.cache_clear()
    monkeypatch.setitem(sys.modules, "pylibrb", None)  # import pylibrb raises ImportError
    try:
        with pytest.raises(augment.StretcherError, match="pylibrb.*bash setup.sh.*augment.stretcher"):
            time_stretch(sine(440.0, seconds=0.5), SR, 1.2)
    finally:
        augment.rubberband_library_version.cache_clear()


@pytest.mark.parametrize("seconds", [0.05, 0.5, 14.0])
def test_rubberband_library_covers_short_and_long_signals(seconds):
    """Shorter than the engine's window, and longer than one block handed to the library (several study and
    process calls): the output is the stretched length, the sine's pitch and level, and nothing is lost at the
    block joins (no gap where a block's output would be missing)."""
    x = sine(440.0, seconds=seconds)
    y = time_stretch(x, SR, 1.25)
    assert y.shape == (round(x.shape[0] / 1.25),)
    if seconds >= 0.5:
        assert abs(peak_hz(y) - 440.0) < 0.01 * 440.0
        body = y[SR // 10: -SR // 10]
        frames = body[: body.size // 441 * 441].reshape(-1, 441)  # 10 ms frames
        assert np.sqrt(np.mean(frames ** 2, axis=1)).min() > 0.5 * np.sqrt(np.mean(x ** 2))


def test_recorded_stretchers_map_back_to_their_settings():
    from songcorpus.transforms.dsp.augment import SongAugmentation, stretcher_id

    for setting in ("rubberband-library", "rubberband", "librosa"):
        recorded = SongAugmentation("pitch", 1.0, setting).to_dict()
        assert recorded["stretcher"] == stretcher_id(setting)
        assert SongAugmentation.from_dict(recorded).stretcher == setting
    assert SongAugmentation.from_dict({"kind": "speed", "value": 1.1}).stretcher == "librosa"  # version 1 plans


def band_db(x: np.ndarray, lo: float, hi: float) -> float:
    f, p = signal.welch(x.astype(np.float64), SR, nperseg=8192)
    sel = (f >= lo) & (f < hi)
    return float(10 * np.log10(p[sel].mean()))


def test_eq_moves_band_energies_the_expected_way():
    noise = np.random.default_rng(0).normal(0, 0.3, SR * 4).astype(np.float32)  # peaks near 1: headroom path
    params = EqParams(bass=Biquad(-4.0, 120.0, 0.8), mid=Biquad(2.0, 2000.0, 0.9), treble=Biquad(3.0, 4500.0, 0.8))
    y = frequency_balance_eq(noise, SR, params)
    assert y.shape == noise.shape and np.isfinite(y).all()
    bass = band_db(y, 20, 60) - band_db(noise, 20, 60)
    mid = band_db(y, 1900, 2100) - band_db(noise, 1900, 2100)
    treble = band_db(y, 10000, 16000) - band_db(noise, 10000, 16000)
    assert -4.5 < bass < -3.0  # shelf reaches close to its -4 dB gain well below 120 Hz
    assert 1.0 < mid < 3.0
    assert 2.5 < treble < 3.5
    assert np.max(np.abs(y)) > 1.0  # boosted peaks were not clamped by torchaudio's lfilter
    # Drawn plans cut the lowest band and lift the top one by about their shelf gains.
    for i in range(5):
        p = plan_eq(f"k{i}", CFG.model_copy(update={"eq_probability": 1.0}))
        z = frequency_balance_eq(noise, SR, p)
        assert abs(band_db(z, 20, 60) - band_db(noise, 20, 60) - p.bass.gain_db) < 0.6
        assert abs(band_db(z, 10000, 16000) - band_db(noise, 10000, 16000) - p.treble.gain_db) < 0.6


def test_loudness_normalisation_target_and_peak_cap():
    noise = np.random.default_rng(1).normal(0, 0.01, SR).astype(np.float32)  # crest ~4.5: target reachable
    y = normalise_loudness(noise, -16.0, -1.0)
    assert abs(rms_db(y) - (-16.0)) < 1e-3
    assert 20 * np.log10(np.max(np.abs(y))) < -1.0
    clicks = np.zeros(SR, np.float32)
    clicks[::4410] = 0.2  # crest factor ~ 20 dB: -16 dB RMS would need a peak above -1 dBFS
    z = normalise_loudness(clicks, -16.0, -1.0)
    assert abs(20 * np.log10(np.max(np.abs(z))) - (-1.0)) < 1e-4
    assert rms_db(z) < -16.0
    assert not normalise_loudness(np.zeros(100, np.float32), -16.0, -1.0).any()


def test_apply_eq_is_deterministic_and_leaves_unplanned_audio_alone():
    x = np.random.default_rng(2).normal(0, 0.1, SR).astype(np.float32)
    p = plan_eq("song/3#w0", CFG.model_copy(update={"eq_probability": 1.0}))
    a, b = apply_eq(x, SR, p, CFG), apply_eq(x, SR, p, CFG)
    assert a.tobytes() == b.tobytes()
    assert abs(rms_db(a) - CFG.target_rms_db) < 1e-3
    assert apply_eq(x, SR, None, CFG).tobytes() == x.tobytes()


# ------------------------------------------------------------------------------------- labels

def test_shift_f0_keeps_unvoiced():
    f0 = np.array([0.0, 220.0, 0.0, 440.0, 0.0], np.float32)
    up = shift_f0(f0, 2)
    assert up.dtype == np.float32
    np.testing.assert_allclose(up, [0, 220 * 2 ** (2 / 12), 0, 440 * 2 ** (2 / 12), 0], rtol=1e-6)
    np.testing.assert_allclose(shift_f0(up, -2), f0, rtol=1e-6)


def test_stretch_times():
    t = np.array([[0.0, 1.2], [3.6, 6.0]])
    np.testing.assert_allclose(stretch_times(t, 1.2), [[0.0, 1.0], [3.0, 5.0]])
    np.testing.assert_allclose(stretch_times([1.0, 2.0], 0.8), [1.25, 2.5])


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.2])
def test_stretch_frames_nearest_keeps_voicing(factor):
    # 3 s of f0 at 100 Hz: voiced 220 Hz from 0.5 to 1.5 s, a glide 2.0-2.5 s, unvoiced elsewhere.
    f0 = np.zeros(300, np.float32)
    f0[50:150] = 220.0
    f0[200:250] = np.linspace(300, 400, 50)
    n_out = int(np.ceil(3.0 / factor * 100 - 1e-9))
    out = stretch_frames(f0, factor, n_out)
    assert out.shape == (n_out,) and out.dtype == np.float32
    assert set(np.unique(out)) <= set(np.unique(f0))  # only copies: no invented pitches
    voiced = np.flatnonzero(out == 220.0)
    # The voiced run now spans 0.5/f .. 1.5/f seconds (to within one frame).
    assert abs(voiced[0] - 50 / factor) <= 1 and abs(voiced[-1] + 1 - 150 / factor) <= 1
    t = np.arange(n_out) / 100.0
    inside = (t > 0.5 / factor + 0.02) & (t < 1.5 / factor - 0.02)
    assert (out[inside] == 220.0).all()
    assert (out[(t > 1.5 / factor + 0.02) & (t < 2.0 / factor - 0.02)] == 0).all()


def test_song_augmentation_keeps_labels_consistent():
    x = sine(330.0, seconds=2.0)
    f0 = np.where(np.arange(200) % 50 < 25, 330.0, 0.0).astype(np.float32)
    speed = SongAugmentation("speed", 1.2)
    y = speed.audio(x, SR)
    assert y.shape[0] == speed.n_samples(x.shape[0]) == round(x.shape[0] / 1.2)
    g = speed.f0(f0, y.shape[0], SR)
    assert g.shape == (int(np.ceil(y.shape[0] / SR * 100 - 1e-9)),)
    np.testing.assert_allclose(speed.times([1.2]), [1.0])
    pitch = SongAugmentation("pitch", -1.0)
    assert pitch.tag == "pitch-1" and speed.tag == "speed120" and "." not in speed.tag
    assert pitch.n_samples(x.shape[0]) == x.shape[0]
    np.testing.assert_allclose(pitch.f0(f0, x.shape[0], SR), shift_f0(f0, -1))
    np.testing.assert_allclose(pitch.times([1.2]), [1.2])


def test_preflight_names_a_missing_rubberband_before_any_input_is_read(monkeypatch, tmp_path):
    import songcorpus.transforms.dsp.augment as augment
    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.schemas.config import load_config
    from songcorpus.transforms.models.registry import ModelError
    from songcorpus.transforms.stages.samples_lite import SampleStage

    config = load_config()
    command = config.model_copy(update={"augment": config.augment.model_copy(update={"stretcher": "rubberband"})})
    stage = SampleStage(command, ArtefactStore(tmp_path))
    augment.rubberband_version.cache_clear()
    augment.rubberband_library_version.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(ModelError, match="rubberband-cli.*augment.stretcher: librosa"):
            stage.preflight()
        SampleStage(config, stage.store).preflight()  # the default, the library, needs no program
        augment.rubberband_library_version.cache_clear()
        monkeypatch.setitem(sys.modules, "pylibrb", None)
        with pytest.raises(ModelError, match="pylibrb.*augment.stretcher"):
            SampleStage(config, stage.store).preflight()
        # the phase vocoder needs no program; no augmentation needs no stretcher at all
        SampleStage(config.model_copy(update={"augment": config.augment.model_copy(update={"stretcher": "librosa"})}),
                    stage.store).preflight()
        SampleStage(config.model_copy(update={"augment": config.augment.model_copy(update={"fraction": 0.0})}),
                    stage.store).preflight()
    finally:
        augment.rubberband_version.cache_clear()
        augment.rubberband_library_version.cache_clear()


def test_gain_under_full_scale_lowers_only_as_far_as_the_mix_needs():
    from songcorpus.io.audio import INT16_FULL_SCALE as FULL_SCALE
    from songcorpus.transforms.dsp.augment import gain_under_full_scale

    t = np.arange(4000) / 4000
    rest = 0.6 * np.sin(2 * np.pi * 5 * t)  # vocals + residual
    part = 0.7 * np.sin(2 * np.pi * 5 * t + 0.3)  # an accompaniment that lifts the sum past full scale
    assert np.max(np.abs(rest + part)) > 1.0
    g = gain_under_full_scale(rest, part)
    assert 0 < g < 1
    assert np.max(np.abs(rest + g * part)) <= FULL_SCALE  # fits ...
    assert np.max(np.abs(rest + min(1.0, g + 1e-6) * part)) > FULL_SCALE  # ... and no lower than it must
    assert gain_under_full_scale(rest, 0.2 * part) == 1.0  # a sum that fits is left alone
    assert gain_under_full_scale(1.2 * np.ones(10), np.ones(10)) == 1.0  # a clipped source is not the part's fault
    assert gain_under_full_scale(rest, part) == g  # deterministic


def test_eq_is_the_torchaudio_biquads_it_was_drawn_for():
    """The EQ's bands are torchaudio's bass_biquad, equalizer_biquad and treble_biquad (what the parameter ranges
    were chosen with), computed with scipy: the same filters to float64 rounding, so within a float32 step."""
    import torch
    import torchaudio.functional as F

    cfg = AugmentConfig()
    noise = np.random.default_rng(5).normal(0, 0.2, SR * 2).astype(np.float32)
    checked = 0
    for i in range(40):
        p = plan_eq(f"track_{i:03d}_w000", cfg)
        if p is None:
            continue
        scale = 0.125 / float(np.max(np.abs(noise)))
        w = torch.from_numpy(noise.astype(np.float64) * scale)
        w = F.bass_biquad(w, SR, p.bass.gain_db, p.bass.freq_hz, p.bass.q)
        w = F.equalizer_biquad(w, SR, p.mid.freq_hz, p.mid.gain_db, p.mid.q)
        w = F.treble_biquad(w, SR, p.treble.gain_db, p.treble.freq_hz, p.treble.q)
        want = (w.numpy() / scale).astype(np.float32)
        got = frequency_balance_eq(noise, SR, p)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
        checked += 1
    assert checked >= 10
