"""The synthetic song generator (pipelines/sources/synth.py): files, timing, determinism, harmony, curation.

Renders two songs with Festival and fluidsynth (Debian packages festival, festvox-kallpc16k,
festvox-kdlpc16k, fluidsynth, musescore-general-soundfont-small); skipped, naming them, where they are
missing. The plan/score/MIDI checks need no program and always run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songcorpus.pipelines.sources import synth

from conftest import curate_with, tracks

SEED = 7


def _tools_missing() -> str | None:
    try:
        synth.check_tools()
    except synth.SynthError as exc:
        return str(exc)
    return None


needs_tools = pytest.mark.skipif(_tools_missing() is not None, reason=f"{_tools_missing()}")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.synthesize(2, out, seed=SEED, workers=2)
    return out


def _truth(out: Path, i: int) -> dict:
    return json.loads((out / f"song_{i:04d}" / "song.json").read_text())


def test_plans_are_seeded_and_varied():
    assert synth.midi_bytes(synth.plan_song(SEED, 3)) == synth.midi_bytes(synth.plan_song(SEED, 3))
    assert synth.vocal_score_xml(synth.plan_song(SEED, 3)) == synth.vocal_score_xml(synth.plan_song(SEED, 3))
    assert synth.vocal_score_xml(synth.plan_song(SEED, 3)) != synth.vocal_score_xml(synth.plan_song(SEED + 1, 3))
    plans = [synth.plan_song(0, i) for i in range(200)]
    assert {p.tonic for p in plans} == set(range(12)) and {p.mode for p in plans} == {"major", "minor"}
    assert len({p.chord_program for p in plans}) == len(synth.CHORD_PROGRAMS)
    assert len({p.drum_pattern for p in plans}) == len(synth.DRUM_PATTERNS)
    assert min(p.bpm for p in plans) >= 70 and max(p.bpm for p in plans) <= 140
    assert all(synth.MIN_DURATION_S <= p.duration_s <= 40 for p in plans)
    splits = [synth.song_split(0, i) for i in range(200)]
    assert 0.7 < splits.count("train") / 200 < 0.9 and splits.count("valid") and splits.count("test")


def test_harmony_is_implied_by_the_melody():
    """Every pitched accompaniment note is a tone of its bar's chord (so in the key), every sung note
    that starts on a beat is a tone of that chord, and the song ends on the tonic."""
    for i in range(20):
        plan = synth.plan_song(SEED, i)
        scale = {(plan.tonic + s) % 12 for s in synth.SCALES[plan.mode]}
        tpq, notes = synth.read_midi_notes(synth.midi_bytes(plan))
        bar_ticks = synth.BEATS_PER_BAR * tpq
        for on, _off, ch, key, _vel in notes:
            if ch == 9:
                assert on % (tpq // 2) == 0, "drums sit on the eighth-note grid"
                continue
            chord = synth.triad(plan.tonic, plan.mode, plan.degrees[on // bar_ticks])
            assert key % 12 in chord and key % 12 in scale, (i, on, ch, key)
        kicks = {on for on, _, ch, key, _ in notes if ch == 9 and key == 36}
        assert kicks and all(k % tpq == 0 or plan.drum_pattern == "half-time" for k in kicks)
        for n in plan.notes:
            if n.start_beat == int(n.start_beat):
                bar = int(n.start_beat) // synth.BEATS_PER_BAR
                assert n.midi % 12 in synth.triad(plan.tonic, plan.mode, plan.degrees[bar]), (i, n)
            assert n.midi % 12 in scale
        assert plan.notes[-1].midi % 12 == plan.tonic


def test_the_melody_names_the_chords():
    """A rule that sees only the key and one bar of melody (chord tones weighted by length, on-beat notes
    double, a root on the downbeat) names the bar's chord in most bars: what a model can learn."""
    hits = bars = 0
    for i in range(100):
        plan = synth.plan_song(SEED, i)
        for bar in range(1, plan.bars - 1):
            notes = [n for n in plan.notes if bar * 4 <= n.start_beat < (bar + 1) * 4]
            if not notes:
                continue

            def score(degree: int, notes=notes, bar=bar, plan=plan) -> float:
                t = synth.triad(plan.tonic, plan.mode, degree)
                s = sum(n.beats * (2 if n.start_beat == int(n.start_beat) else 1) * (n.midi % 12 in t) for n in notes)
                return s + 1.5 * (notes[0].start_beat == bar * 4 and notes[0].midi % 12 == t[0]) + 0.01 * (degree == 0)

            degrees = [d for d in range(7) if synth.chord_label(synth.triad(plan.tonic, plan.mode, d))[-3:] != "dim"]
            hits += max(degrees, key=score) == plan.degrees[bar]
            bars += 1
    assert hits / bars > 0.85, hits / bars


@needs_tools
def test_lyrics_are_one_syllable_per_note(tmp_path):
    """Festival sings one pitch per syllable of its lexicon: every word in the list must be monosyllabic."""
    words = sorted({w for ws in synth.WORDS.values() for w in ws})
    scm = tmp_path / "lex.scm"
    scm.write_text("".join(f'(format t "%s %d\\n" "{w}" (length (car (cddr (lex.lookup "{w}" nil)))))\n'
                           for w in words))
    for voice in synth.VOICES:
        out = subprocess.run(["festival", "-b", f"(voice_{voice})", str(scm)], capture_output=True, text=True,
                             check=True).stdout.split()
        counts = dict(zip(out[::2], map(int, out[1::2]), strict=True))
        assert counts == {w: 1 for w in words}, {w: c for w, c in counts.items() if c != 1}


def test_missing_programs_name_the_packages(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(synth.SynthError, match="apt-get install festival .*fluidsynth"):
        synth.check_tools()


@needs_tools
def test_files_durations_and_manifest(songs):
    rows = [json.loads(line) for line in (songs / "manifest.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == ["song_0000/mix.flac", "song_0001/mix.flac"]
    for i, row in enumerate(rows):
        truth = _truth(songs, i)
        folder = songs / f"song_{i:04d}"
        n = round(truth["duration_s"] * synth.RATE)
        stems = {}
        for name in ("vocals", "accompaniment", "mix"):
            x, rate = sf.read(folder / f"{name}.flac", dtype="float64")
            assert rate == 44100 and x.ndim == 1 and len(x) == n, (name, len(x), n)
            stems[name] = x
        assert np.abs(stems["mix"] - stems["vocals"] - stems["accompaniment"]).max() <= 2 / 32768
        assert 0.85 < np.abs(stems["mix"]).max() < 0.9  # -1 dBFS
        # the voice enters with the first note (Festival drops leading rests; the stem places it)
        start = round(truth["vocal_start_s"] * synth.RATE)
        assert np.abs(stems["vocals"][: start - 441]).max() < 1e-3 < np.abs(stems["vocals"][start:start + 4410]).max()
        assert np.abs(stems["accompaniment"][:4410]).max() > 1e-2  # the intro is played
        f0 = np.loadtxt(folder / "f0_vocal_100hz.csv", delimiter=",", skiprows=1)
        assert len(f0) == int(np.ceil(truth["duration_s"] * 100))
        assert truth["notes"][-1]["end_s"] < truth["duration_s"] and truth["chords"][-1]["end_s"] < truth["duration_s"]
        assert row["lyrics"] == " ".join(n["word"] for n in truth["notes"]) == truth["lyrics"]
        assert row["split"] == truth["split"] and row["key"] == truth["key"] and str(row["bpm"]) in row["caption"]
        assert row["artist"] == f"festival {truth['voice']}"
        plan = synth.plan_song(SEED, i)
        assert (folder / "accompaniment.mid").read_bytes() == synth.midi_bytes(plan)
        assert (folder / "vocal_score.xml").read_text() == synth.vocal_score_xml(plan)


@needs_tools
def test_same_seed_same_bytes(songs, tmp_path):
    """Festival and fluidsynth are deterministic: a second render of song 0 is byte-identical."""
    synth.render_song(SEED, 0, tmp_path, synth.check_tools())
    for f in sorted((songs / "song_0000").iterdir()):
        assert (tmp_path / "song_0000" / f.name).read_bytes() == f.read_bytes(), f.name
    before = (songs / "manifest.jsonl").read_bytes()
    rows = synth.synthesize(2, songs, seed=SEED)  # a re-run keeps finished songs
    assert [r["seconds"] for r in rows] == [0.0, 0.0] and (songs / "manifest.jsonl").read_bytes() == before


@needs_tools
def test_a_synthetic_song_is_curated(songs, tmp_path):
    """The lite pipeline accepts a synthetic song unchanged and cuts it into windows."""
    manifest = tmp_path / "one.jsonl"
    row = json.loads((songs / "manifest.jsonl").read_text().splitlines()[0])
    row = {k: (str(songs / v) if k in ("path", "vocals", "accompaniment") else v) for k, v in row.items()}
    manifest.write_text(json.dumps(row) + "\n")
    out = curate_with("beam", [str(manifest)], tmp_path / "corpus", workers=1)  # one song: one in-process worker
    (track,) = tracks(out)
    assert track["status"] == "accepted", (track["reason_code"], track["reason"])
    assert track["n_windows"] >= 2 and track["split"] == row["split"] and track["has_stems"]
