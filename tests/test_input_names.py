"""What an input scan may name: never the corpus it is writing, nor its cache, nor another corpus; and every file,
whatever bytes its name holds.

A corpus written inside its own input folder (``curate in --out in/corpus``) must give the same catalog when the
command is run again: the scan leaves out the output folder, the cache (``OUT/.cache`` or ``--cache-dir``) and any
folder or prefix holding a corpus's ``published.json``, whether it walks a folder, a glob or an object-store prefix.
A file whose name is not valid UTF-8 gets its row under a reversibly escaped source (``\\xNN`` per undecodable
byte) and is read and curated like any other.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from songcorpus.io import storage
from songcorpus.pipelines.sources.inputs import expand_inputs
from songcorpus.schemas.failures import SourceError

from conftest import DEMO_DIR, curate_with, tracks

CLIP = DEMO_DIR / "speech_00" / "mix.flac"  # short clips: the speech gate rejects them early, after ingest
OTHER_CLIP = DEMO_DIR / "speech_01" / "mix.flac"
ODD = b"\xff\xfe song.flac"  # not valid UTF-8


def _marker(folder: Path) -> None:
    """A corpus's publication marker, as storage.OutputDir.publish writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / storage.PUBLISHED).write_text(json.dumps({"format": storage.PUBLISHED_FORMAT, "objects": {}}))


def _input_tree(root: Path) -> None:
    """A song, a corpus written inside the folder (its cache holds audio), a separate cache folder, an older corpus
    (published), and a folder with someone else's published.json (kept: it is not a corpus's marker)."""
    for rel in ("song.flac", "corpus/.cache/audio/ab/abcd.flac", "corpus/shards/x.flac", "cache2/audio/ef.flac",
                "old_corpus/.cache/audio/cd.flac", "foreign/b.flac"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CLIP, root / rel)
    _marker(root / "old_corpus")
    (root / "foreign" / storage.PUBLISHED).write_text('{"format": "something-else"}')


def test_folder_and_glob_scans_leave_out_the_output_the_cache_and_other_corpora(tmp_path):
    root = tmp_path / "in"
    _input_tree(root)
    exclude = (str(root / "corpus"), str(root / "cache2"))
    expected = ["foreign/b.flac", "song.flac"]
    assert [r.source for r in expand_inputs([str(root)], tmp_path / "m", exclude)] == expected
    assert [r.source for r in expand_inputs([f"{root}/**/*.flac"], tmp_path / "m", exclude)] == expected
    # named through a symbolic link to the same folder: excluded by where it really is
    (tmp_path / "link").symlink_to(root)
    assert [r.source for r in expand_inputs([str(tmp_path / "link")], tmp_path / "m", exclude)] == expected
    with pytest.raises(SourceError, match="inside the output or cache"):
        expand_inputs([str(root / "corpus" / ".cache")], tmp_path / "m", exclude)
    with pytest.raises(SourceError, match="is a songcorpus corpus"):
        expand_inputs([str(root / "old_corpus")], tmp_path / "m")


def test_prefix_and_glob_on_a_store_leave_out_the_output_the_cache_and_other_corpora(tmp_path, s3):
    local = tmp_path / "in"
    _input_tree(local)
    for f in storage.list_files(str(local)):
        storage.upload(Path(f), f"{s3}/in/{storage.relative_to(f, str(local))}")
    exclude = (f"{s3}/in/corpus", f"{s3}/in/cache2")
    expected = ["foreign/b.flac", "song.flac"]
    assert [r.source for r in expand_inputs([f"{s3}/in"], tmp_path / "m", exclude)] == expected
    assert [r.source for r in expand_inputs([f"{s3}/in/**/*.flac"], tmp_path / "m", exclude)] == expected
    with pytest.raises(SourceError, match="inside the output or cache"):
        expand_inputs([f"{s3}/in/cache2/audio"], tmp_path / "m", exclude)


def test_rerun_with_the_output_inside_the_input_folder_gives_the_same_corpus(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    shutil.copyfile(CLIP, root / "clip.flac")
    out = root / "corpus"
    first = tracks(curate_with("beam", [str(root)], out, workers=1))
    assert [r["source"] for r in first] == ["clip.flac"]
    assert any((out / ".cache").rglob("*.flac"))  # the cache now holds audio inside the input folder
    state_before = (out / "state" / "rows.jsonl").read_bytes()
    second = tracks(curate_with("beam", [str(root)], out, workers=1))
    assert [(r["source"], r["status"], r["reason_code"]) for r in second] == \
        [(r["source"], r["status"], r["reason_code"]) for r in first]
    assert (out / "state" / "rows.jsonl").read_bytes() == state_before


def test_printable_names_are_valid_text_and_reversible():
    from songcorpus.pipelines.sources.inputs import name_bytes, printable_name

    names = [b"plain.flac", "caf\u00e9 \u2018\u540d\u2019.flac".encode(), ODD, b"a\\xff.flac", b"a\\x5c\xff.flac",
             b"\\", b"\\x", b"back\\slash\x80.wav", b"\xc3\x28.mp3", b"x\\xAB\\xz.flac"]
    printed = [printable_name(os.fsdecode(n)) for n in names]
    for raw, text in zip(names, printed, strict=True):
        text.encode("utf-8")  # valid text: no surrogate escapes left
        assert name_bytes(text) == raw, (raw, text)
    assert len(set(printed)) == len(names)
    assert printed[:2] == ["plain.flac", "caf\u00e9 \u2018\u540d\u2019.flac"]  # valid names do not move
    assert printed[2] == "\\xff\\xfe song.flac"


def test_a_file_name_that_is_not_utf8_gets_its_row_and_is_curated(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    shutil.copyfile(CLIP, root / "plain.flac")
    shutil.copyfile(OTHER_CLIP, os.fsencode(root) + b"/" + ODD)
    os.symlink(os.fsencode(root) + b"/gone.flac", os.fsencode(root) + b"/\xfa broken.flac")  # nothing to read
    rows = {r["source"]: r for r in tracks(curate_with("beam", [str(root)], tmp_path / "out", workers=1))}
    odd = "\\xff\\xfe song.flac"
    assert sorted(rows) == sorted(["plain.flac", odd, "\\xfa broken.flac"])
    from songcorpus.pipelines.sources.inputs import name_bytes

    assert name_bytes(odd) == ODD
    for source, clip in (("plain.flac", CLIP), (odd, OTHER_CLIP)):  # read, decoded and decided like any other
        row = rows[source]
        assert (row["status"], row["stage"], row["reason_code"]) == ("rejected", "classify", "speech_dominant"), row
        assert row["duration_s"] == pytest.approx(sf.info(str(clip)).duration, abs=0.01)
    broken = rows["\\xfa broken.flac"]
    assert broken["status"] == "failed" and "broken symbolic link" in broken["reason"], broken
