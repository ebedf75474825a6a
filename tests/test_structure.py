"""StructureStage through the real code path (ingest into an artefact store, then structure) against the
demo songs' ground-truth beats, plus the edge cases: silence, very short audio, a known section join."""

from __future__ import annotations

import json
from pathlib import Path

import mir_eval
import numpy as np
import pytest
import soundfile as sf

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import load_config
from songcorpus.schemas.row import canonical_json
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.structure import StructureStage, import_madmom

from conftest import DEMO_DIR

SONGS = ("song_00", "song_01", "song_03", "song_05", "song_07")
META = {c["id"]: c for c in json.loads((DEMO_DIR / "metadata.json").read_text())}


class Pipeline:
    """Ingest + structure on one store, the way a runner calls them (setup once, then rows)."""

    def __init__(self, root: Path, **structure: object) -> None:
        config = load_config(overrides={"structure": structure} if structure else None)
        store = ArtefactStore(root)
        self.ingest = IngestStage(config, store)
        self.structure = StructureStage(config, store)
        self.structure.preflight()
        self.structure.setup()

    def run(self, path: Path) -> tuple[dict, dict]:
        row = {"track": {"path": str(path)}, "results": {}}
        row["results"]["ingest"] = self.ingest.process_one(row)
        return row, self.structure.process_one(row)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    return Pipeline(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def demo_results(pipeline) -> dict[str, tuple[dict, dict]]:
    return {song: pipeline.run(DEMO_DIR / song / "mix.flac") for song in SONGS}


def check_timeline(out: dict, duration: float) -> None:
    """Sections tile [0, duration] in order; every timestamp lies inside the track."""
    sections = out["sections"]
    assert sections and sections[0][0] == 0.0 and sections[-1][1] == pytest.approx(duration, abs=1e-3)
    assert sections[-1][1] <= duration
    assert all(prev[1] == nxt[0] for prev, nxt in zip(sections, sections[1:], strict=False))  # no gap, no overlap
    assert all(s < e for s, e, _ in sections)
    assert all(isinstance(label, str) and label for *_, label in sections)
    for key in ("beats", "downbeats"):
        times = out[key]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert all(0.0 <= t < duration for t in times)
    assert set(out["downbeats"]) <= set(out["beats"])


@pytest.mark.parametrize("song", SONGS)
def test_beats_match_ground_truth(demo_results, song):
    row, out = demo_results[song]
    ref = np.array(META[song]["beats_s"])
    assert mir_eval.beat.f_measure(ref, np.array(out["beats"]), 0.07) >= 0.8
    assert out["tempo_bpm"] == pytest.approx(META[song]["bpm"], rel=0.04)  # not half or double tempo
    check_timeline(out, row["results"]["ingest"]["duration_s"])
    assert set(out) == set(StructureStage.provides)
    canonical_json(out)  # JSON-able, no NaN


@pytest.mark.parametrize("song", ["song_00", "song_01"])
def test_downbeat_estimate_on_songs_whose_bars_are_known(demo_results, song):
    _, out = demo_results[song]
    bars = np.array(META[song]["beats_s"])[::4]  # 4/4 from t = 0: the chord changes fall on these
    assert out["beats_per_bar"] == 4
    assert mir_eval.beat.f_measure(bars, np.array(out["downbeats"]), 0.07) >= 0.8


def test_deterministic(tmp_path, demo_results):
    _, first = demo_results["song_01"]
    _, again = Pipeline(tmp_path).run(DEMO_DIR / "song_01" / "mix.flac")
    assert canonical_json(again) == canonical_json(first)


@pytest.mark.parametrize("seconds", [10.0, 0.5])
def test_silence_and_very_short_audio_give_no_beats_and_one_section(tmp_path, pipeline, seconds):
    path = tmp_path / "quiet.flac"
    n = int(seconds * 44100)
    if seconds < 1:  # very short but not silent
        x = np.random.default_rng(0).normal(0, 0.1, n)
    else:
        x = np.zeros(n)
    sf.write(path, x.astype(np.float32), 44100, subtype="PCM_16")
    _, out = pipeline.run(path)
    assert out["beats"] == [] and out["downbeats"] == [] and out["tempo_bpm"] is None
    assert out["beats_per_bar"] is None
    assert out["sections"] == [[0.0, seconds, "A"]]


def test_sections_find_a_known_join(tmp_path, pipeline):
    """Two different pieces back to back: a section boundary at the join, different labels either side."""
    a, rate = sf.read(DEMO_DIR / "instr_midi_00" / "mix.flac", dtype="float32")
    b, _ = sf.read(DEMO_DIR / "instr_fof_00" / "mix.flac", dtype="float32")
    path = tmp_path / "two_pieces.flac"
    sf.write(path, np.concatenate([a[: 15 * rate], b[: 15 * rate]]), rate, subtype="PCM_16")
    row, out = pipeline.run(path)
    check_timeline(out, row["results"]["ingest"]["duration_s"])
    starts = [s for s, _, _ in out["sections"][1:]]
    assert min(abs(s - 15.0) for s in starts) <= 1.5

    def label_at(t: float) -> str:
        return next(label for s, e, label in out["sections"] if s <= t < e)

    assert label_at(7.0) != label_at(22.0)


def test_madmom_method_when_available(tmp_path):
    try:
        import_madmom()
    except Exception as exc:  # noqa: BLE001 - an optional backend
        pytest.skip(f"madmom not importable: {exc}")
    x, rate = sf.read(DEMO_DIR / "song_01" / "mix.flac", dtype="float32")
    path = tmp_path / "excerpt.flac"
    sf.write(path, x[: 12 * rate], rate, subtype="PCM_16")
    row, out = Pipeline(tmp_path / "store", beat_method="madmom").run(path)
    ref = np.array(META["song_01"]["beats_s"])
    assert mir_eval.beat.f_measure(ref[ref < 12.0], np.array(out["beats"]), 0.07) >= 0.8
    assert out["beats_per_bar"] in (3, 4) and out["downbeats"]
    assert out["structure_method"].startswith("beats+downbeats:madmom")
    check_timeline(out, row["results"]["ingest"]["duration_s"])


def test_a_few_beats_give_one_section_not_an_error() -> None:
    """speech_01 (4.8 s) has beats but too few beat intervals for a recurrence matrix."""
    import soundfile as sf

    from songcorpus.schemas.config import load_config
    from songcorpus.transforms.stages.structure import analyse

    x, rate = sf.read(DEMO_DIR / "speech_01" / "mix.flac", dtype="float32")
    out = analyse(x, rate, load_config().structure)
    assert [s[2] for s in out["sections"]] == ["A"] and out["sections"][0][0] == 0.0
