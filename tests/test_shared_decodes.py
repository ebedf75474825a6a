"""A row's stages share one decode of each standardised file (songcorpus/io/audio.py: shared_decodes; the engines
open a block per row in pipelines/engines/executor.py): fewer decodes, the same results, nothing writable shared."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songcorpus.io import audio
from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.audio import read_standard_audio, shared_decodes
from songcorpus.pipelines.engines import executor
from songcorpus.pipelines.engines.executor import StageGroup
from songcorpus.pipelines.sources.inputs import expand_inputs
from songcorpus.schemas.config import load_config
from songcorpus.schemas.row import new_row
from songcorpus.transforms.registry import build_stages

from conftest import DEMO_DIR


@pytest.fixture
def decodes(monkeypatch) -> Counter:
    """Counts sf.read calls by path."""
    seen: Counter = Counter()
    real = sf.read

    def counting(path, *args, **kwargs):
        seen[str(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(audio.sf, "read", counting)
    return seen


def flac(tmp_path: Path, name: str, seconds: float = 1.0) -> Path:
    path = tmp_path / name
    x = (np.random.default_rng(0).uniform(-0.5, 0.5, (int(44100 * seconds), 2)) * 32767).astype(np.int16)
    sf.write(path, x, 44100, subtype="PCM_16")
    return path


def test_inside_a_block_each_file_is_decoded_once_and_read_only(tmp_path, decodes):
    path = flac(tmp_path, "a.flac")
    with shared_decodes():
        first, rate = read_standard_audio(path)
        again, _ = read_standard_audio(path)
        assert again is first and rate == 44100
        assert not first.flags.writeable
        with pytest.raises(ValueError):
            first[0, 0] = 1.0
        with shared_decodes():  # nested: the outer block keeps serving
            assert read_standard_audio(path)[0] is first
        assert read_standard_audio(path)[0] is first
    assert decodes[str(path)] == 1
    outside, _ = read_standard_audio(path)
    assert outside.flags.writeable and outside is not first and decodes[str(path)] == 2
    np.testing.assert_array_equal(outside, first)


def test_past_the_budget_files_are_decoded_on_each_read(tmp_path, decodes):
    small, large = flac(tmp_path, "small.flac", 0.1), flac(tmp_path, "large.flac", 1.0)
    with shared_decodes(max_bytes=100_000):  # the small file's 35 kB fit, the large one's 353 kB do not
        for _ in range(3):
            x, _ = read_standard_audio(large)
            assert not x.flags.writeable
            read_standard_audio(small)
    assert decodes[str(large)] == 3 and decodes[str(small)] == 1


def test_a_rows_analysis_decodes_each_file_once_with_the_same_results(tmp_path, decodes, monkeypatch):
    """The lite analysis of one demo song through the engines' StageGroup: the mix is read by about nine stages;
    with the shared block each file is decoded once, and every stage's result is what it is without it."""
    def analyse(root: Path) -> dict:
        config = load_config()
        store = ArtefactStore(root)
        (rec,) = expand_inputs([str(DEMO_DIR / "song_00" / "mix.flac")], store.root / "inputs")
        (row,) = StageGroup(build_stages(config, store, "analysis"))([new_row(rec.to_dict())])
        return row

    shared = analyse(tmp_path / "shared")
    assert shared["outcome"] is None and len(shared["results"]) >= 9
    assert decodes and max(decodes.values()) == 1
    monkeypatch.setattr(executor, "shared_decodes", nullcontext)
    decodes.clear()
    alone = analyse(tmp_path / "alone")
    assert max(decodes.values()) >= 5  # without the block the mix is decoded by each stage that reads it
    assert alone["results"] == shared["results"]


def test_stems_the_stems_stage_writes_are_handed_on_not_decoded(tmp_path, decodes, monkeypatch):
    """A song with given stems through the analysis: the stems stage writes the kept vocals and accompaniment and
    hands their samples on, so the stages after it (vad, f0, key) never decode those two files, and every stage's
    result is what it is when each reader decodes them itself."""
    song = DEMO_DIR / "song_01"

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"path": str(song / "mix.flac"), "vocals": str(song / "vocals.flac"),
                                    "accompaniment": str(song / "accompaniment.flac")}) + "\n")

    def analyse(root: Path) -> dict:
        config = load_config()
        store = ArtefactStore(root)
        (rec,) = expand_inputs([str(manifest)], store.root / "inputs")
        (row,) = StageGroup(build_stages(config, store, "analysis"))([new_row(rec.to_dict())])
        return row

    shared = analyse(tmp_path / "shared")
    stems = shared["results"]["stems"]
    assert stems["stems_method"] == "source"
    kept = [str(tmp_path / "shared" / stems[f]) for f in ("vocals_file", "accompaniment_file")]
    assert all(decodes[p] == 0 for p in kept), decodes
    monkeypatch.setattr(audio, "share_written_audio", lambda *a: None)
    monkeypatch.setattr("songcorpus.transforms.stages.stems.share_written_audio", lambda *a: None)
    decodes.clear()
    plain = analyse(tmp_path / "plain")
    assert decodes[str(tmp_path / "plain" / plain["results"]["stems"]["vocals_file"])] == 1
    assert plain["results"] == shared["results"]
