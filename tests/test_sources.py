"""Folders, manifests (CSV / JSONL / Parquet) and local Hugging Face datasets yield the same records."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from songcorpus.pipelines.sources.inputs import expand_inputs
from songcorpus.schemas.failures import SourceError

from conftest import DEMO_DIR


def _manifest_rows():
    return [
        {"path": "song_00/mix.flac", "vocals": "song_00/vocals.flac", "accompaniment": "song_00/accompaniment.flac",
         "title": "Jeanie", "artist": "kal", "lyrics": "i dream of jeannie", "split": "valid", "bpm": 84},
        {"path": str(DEMO_DIR / "speech_00" / "mix.flac"), "title": "speech"},
    ]


def _check(records, base):
    assert [r.metadata.get("title") for r in records] == ["speech", "Jeanie"] or \
        [r.metadata.get("title") for r in records] == ["Jeanie", "speech"]
    song = next(r for r in records if r.metadata.get("title") == "Jeanie")
    assert song.source == "song_00/mix.flac"  # named as the manifest writes it, not where it sits
    assert song.path == str(base / "song_00/mix.flac")
    speech = next(r for r in records if r.metadata.get("title") == "speech")
    assert speech.source == speech.path == str(DEMO_DIR / "speech_00" / "mix.flac")  # absolute stays as written
    assert song.vocals == str(base / "song_00/vocals.flac")
    assert song.metadata["split"] == "valid" and song.metadata["artist"] == "kal"
    assert str(song.extra["bpm"]) == "84"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_formats_resolve_relative_paths(fmt, tmp_path):
    rows = _manifest_rows()
    path = DEMO_DIR / f"_test_manifest.{fmt}"  # relative paths resolve against the manifest's folder
    try:
        if fmt == "csv":
            with open(path, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=sorted({k for r in rows for k in r}))
                w.writeheader()
                w.writerows(rows)
        elif fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            pq.write_table(pa.Table.from_pylist(rows), path)
        _check(expand_inputs([str(path)], tmp_path), DEMO_DIR)
    finally:
        path.unlink(missing_ok=True)


def test_manifest_without_path_column_is_a_clear_error(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"file": "x.wav"}) + "\n")
    with pytest.raises(SourceError, match="missing required column 'path'"):
        expand_inputs([str(path)], tmp_path)


def test_folder_scan_is_recursive_sorted_and_skips_non_audio(tmp_path):
    records = expand_inputs([str(DEMO_DIR)], tmp_path)
    names = [r.source for r in records]  # relative to the folder
    assert names == sorted(names)
    assert all(r.path == str(DEMO_DIR / r.source) for r in records)
    assert "song_00/vocals.flac" in names and "song_00/mix.flac" in names
    assert not any(n.endswith((".csv", ".mid", ".xml", ".json", ".jsonl", ".md")) for n in names)


def test_glob_and_missing_input(tmp_path):
    records = expand_inputs([str(DEMO_DIR / "speech_*" / "mix.flac")], tmp_path)
    assert [r.source for r in records] == [f"speech_0{i}/mix.flac" for i in range(3)]  # from the fixed prefix
    with pytest.raises(SourceError, match="does not exist"):
        expand_inputs([str(tmp_path / "nope")], tmp_path)


def test_local_hugging_face_dataset_with_audio_column(tmp_path):
    import datasets

    files = [str(DEMO_DIR / f"speech_0{i}" / "mix.flac") for i in range(2)]
    ds = datasets.Dataset.from_dict({"audio": files, "title": ["a", "b"]})
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    ds = ds.map(lambda row: {"audio": {"bytes": open(row["audio"]["path"], "rb").read(), "path": "clip.flac"}})
    saved = tmp_path / "hfds"
    ds.save_to_disk(str(saved))
    records = expand_inputs([str(saved)], tmp_path / "materialised")
    assert [r.metadata["title"] for r in records] == ["a", "b"]
    assert [r.source for r in records] == ["hf:hfds#0", "hf:hfds#1"]
    assert open(records[0].path, "rb").read() == open(files[0], "rb").read()


def test_sources_do_not_depend_on_where_the_corpus_sits(tmp_path):
    """The same folder copied elsewhere gives the same sources; only ``path`` moves."""
    import shutil

    for where in ("a/deep/copy", "b"):
        shutil.copytree(DEMO_DIR / "speech_00", tmp_path / where / "clips" / "speech_00")
    one = expand_inputs([str(tmp_path / "a/deep/copy/clips")], tmp_path / "m")
    two = expand_inputs([str(tmp_path / "b/clips")], tmp_path / "m")
    assert [r.source for r in one] == [r.source for r in two] == ["speech_00/mix.flac", "speech_00/speech.flac"]
    assert one[0].path != two[0].path
    single = expand_inputs([str(tmp_path / "b/clips/speech_00/mix.flac")], tmp_path / "m")
    assert [r.source for r in single] == ["mix.flac"]


def test_several_inputs_are_prefixed_by_their_names_and_a_clash_is_refused(tmp_path):
    import shutil

    for where in ("x/left", "x/right", "y/left"):
        shutil.copytree(DEMO_DIR / "speech_00", tmp_path / where)
    records = expand_inputs([str(tmp_path / "x/left"), str(tmp_path / "x/right")], tmp_path / "m")
    assert [r.source for r in records] == ["left/mix.flac", "left/speech.flac", "right/mix.flac", "right/speech.flac"]
    with pytest.raises(SourceError, match="share the name 'left'"):
        expand_inputs([str(tmp_path / "x/left"), str(tmp_path / "y/left")], tmp_path / "m")


def test_track_ids_follow_the_file_bytes_not_the_name():
    """A renamed or moved file keeps its track id (so its sample keys and augmentation draws); another file's
    bytes give another id; an input whose bytes were never read falls back to its name."""
    from songcorpus.schemas.track import track_id_of

    def row(source, sha):
        return {"track": {"source": source}, "results": {"ingest": {"source_sha256": sha}} if sha else {}}

    assert track_id_of(row("a/song.flac", "ab" * 32)) == track_id_of(row("elsewhere/renamed.flac", "ab" * 32))
    assert track_id_of(row("a/song.flac", "ab" * 32)) != track_id_of(row("a/song.flac", "cd" * 32))
    assert track_id_of(row("missing.flac", None)) != track_id_of(row("other.flac", None))
    assert len(track_id_of(row("x", None))) == 21 and "." not in track_id_of(row("x", "ab" * 32))
