"""The Krumhansl-Schmuckler key estimator: known answers on synthesised progressions, transposition moves the
key, silence has none, and the demo accompaniments read in the key of their lead sheets."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from songcorpus.transforms.stages.key import (
    MAJOR_PROFILE,
    MINOR_PROFILE,
    estimate_key,
    estimate_key_from_audio,
    transpose_key,
)

from conftest import DEMO_DIR

RATE = 22050
C, F, G = (60, 64, 67), (65, 69, 72), (67, 71, 74)  # I, IV, V of C major (MIDI notes)
AM, DM, E = (57, 60, 64), (62, 65, 69), (64, 68, 71)  # i, iv, V (with the leading tone G#) of A minor


def tone(midi: int, seconds: float) -> np.ndarray:
    """A note with four harmonics (1/h amplitudes) and short fades."""
    t = np.arange(int(seconds * RATE)) / RATE
    f = 440.0 * 2 ** ((midi - 69) / 12)
    env = np.minimum(1.0, np.minimum(t / 0.02, (seconds - t) / 0.05))
    return env * sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 5))


def progression(chords: list[tuple[int, ...]], shift: int = 0) -> np.ndarray:
    """One second per chord, with its root an octave down as the bass."""
    return 0.1 * np.concatenate([sum(tone(n + shift, 1.0) for n in ch) + 1.5 * tone(ch[0] - 12 + shift, 1.0)
                                 for ch in chords]).astype(np.float32)


@pytest.mark.parametrize(("shift", "major", "minor"), [(0, "C major", "A minor"), (3, "Eb major", "C minor"),
                                                       (-5, "G major", "E minor")])
def test_known_answers_and_transposition(shift: int, major: str, minor: str) -> None:
    got_major = estimate_key_from_audio(progression([C, F, G, C, F, C, G, C], shift), RATE)
    got_minor = estimate_key_from_audio(progression([AM, DM, E, AM, DM, AM, E, AM], shift), RATE)
    assert (got_major.name, got_minor.name) == (major, minor)
    assert got_major.strength > 0.9 and got_major.margin > 0.2  # an unambiguous cadence
    assert got_minor.strength > 0.8 and got_minor.margin > 0  # beats its relative major, narrowly


def test_the_profiles_themselves_and_silence() -> None:
    for tonic in range(12):
        major, minor = estimate_key(np.roll(MAJOR_PROFILE, tonic)), estimate_key(np.roll(MINOR_PROFILE, tonic))
        assert (major.tonic, major.mode, major.strength) == (tonic, "major", 1.0)
        assert (minor.tonic, minor.mode, minor.strength) == (tonic, "minor", 1.0)
    assert estimate_key(np.zeros(12)) is None
    assert estimate_key_from_audio(np.zeros(RATE * 2, np.float32), RATE) is None
    assert transpose_key("F", "major", -2) == "Eb" and transpose_key("A", "minor", 11) == "G#"


@pytest.mark.parametrize("song", ["song_00", "song_01"])
def test_demo_accompaniments_are_in_their_lead_sheets_key(song: str) -> None:
    """The demo's Foster and Berlin lead sheets are in F major; their accompaniments were rendered untransposed
    (the vocals were moved into each voice's range: pipelines/demo/metadata.json transpose_semitones)."""
    x, rate = sf.read(DEMO_DIR / song / "accompaniment.flac", dtype="float32")
    assert estimate_key_from_audio(x, rate).name == "F major"
