"""Splits follow the song, not where its file lives: by the source's own split, else the artist, else the
input file's bytes (``ingest.source_sha256``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.corpus.splits import assign_split
from songcorpus.schemas.config import load_config
from songcorpus.transforms.stages.ingest import IngestStage

from conftest import DEMO_DIR


def row(source: str, sha: str | None, **metadata) -> dict:
    return {"track": {"source": source, "metadata": metadata},
            "results": {"ingest": {"source_sha256": sha}} if sha else {}}


def test_a_moved_or_renamed_file_keeps_its_split():
    config = load_config()
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(400)]
    at_a = [assign_split(row(f"/data/a/{i}.flac", sha), config) for i, sha in enumerate(shas)]
    at_b = [assign_split(row(f"/mnt/b/renamed_{i}.wav", sha), config) for i, sha in enumerate(shas)]
    assert at_a == at_b
    # ... while the fractions still hold (0.9 / 0.05 / 0.05) over distinct songs
    assert 0.85 < at_a.count("train") / len(at_a) < 0.95 and at_a.count("valid") > 5 and at_a.count("test") > 5
    # the path alone used to decide: the same 400 songs by path give a different assignment
    by_path = [assign_split(row(f"/mnt/b/renamed_{i}.wav", None), config) for i in range(400)]
    assert by_path != at_b


def test_the_artist_and_a_given_split_come_first():
    config = load_config()
    a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    songs = [assign_split(row(f"/x/{i}.flac", hashlib.sha256(bytes([i])).hexdigest(), artist="kal"), config)
             for i in range(50)]
    assert len(set(songs)) == 1  # every song of an artist lands in one split
    assert assign_split(row("/x/a.flac", a, split="test"), config) == "test"
    assert assign_split(row("/x/b.flac", b, split="valid", artist="kal"), config) == "valid"


def test_ingest_records_the_source_files_sha256(tmp_path: Path):
    src = tmp_path / "odd name (copy).flac"
    shutil.copyfile(DEMO_DIR / "song_00" / "mix.flac", src)
    stage, row = IngestStage(load_config(), ArtefactStore(tmp_path / "store")), {"track": {"path": str(src)}}
    out = stage.process_one(row)  # alone: the file is hashed here
    assert out["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert stage.input_identity(row) == stage.process_one(row)["source_sha256"]  # as the executor calls it
