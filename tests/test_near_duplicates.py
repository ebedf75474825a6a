"""Near duplicates: copies of one recording (re-encoded, gain, padded, cut, resampled) are grouped by their
Chromaprint fingerprints, one copy is kept by the stated rule, and no two different demo songs are grouped.

The variants are made here from the demo songs (songcorpus/testing/reencode.py) and go through the stages users run
(ingest -> fingerprint, quality for the kept-copy rule), then the corpus-level matcher. The first 24 s of each
song keep the test in seconds; bench/bench_near_duplicates.py measures the same on the whole songs."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.corpus.splits import assign_split, split_groups
from songcorpus.pipelines.curate import curate, rebuild
from songcorpus.schemas.config import load_config
from songcorpus.testing.reencode import VARIANTS, write_variant
from songcorpus.transforms.corpus.fingerprint_index import find_matches
from songcorpus.transforms.corpus.near_duplicates import is_lossless, keep_order, near_duplicate_groups
from songcorpus.transforms.models.registry import ModelError
from songcorpus.transforms.stages import fingerprint as fingerprint_module
from songcorpus.transforms.stages.fingerprint import ITEM_S, FingerprintStage, chromaprint
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.quality import QualityStage

from conftest import DEMO_DIR, forbid_analysis_stages, tracks

SONGS = ("song_00", "song_01", "song_03", "song_05", "song_07")
OTHERS = ("instr_fof_00", "instr_fof_01", "instr_midi_00", "speech_00", "speech_01", "speech_02")
SONG_S = 24.0


def analysed(path: Path, source: str, store: ArtefactStore) -> dict:
    """A row as the analysis phase leaves it, for the stages near-duplicate grouping reads."""
    config = load_config()
    row = {"track": {"path": str(path), "source": source, "metadata": {}}, "results": {}, "outcome": None}
    for stage in (IngestStage(config, store), FingerprintStage(config, store), QualityStage(config, store)):
        row["results"][stage.name] = stage.process_one(row)
    return row


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[dict], ArtefactStore]:
    """Every demo clip, plus the eight variants of each demo song (source ``<song>/<variant>``)."""
    root = tmp_path_factory.mktemp("near_dup")
    store = ArtefactStore(root / "store")
    rows = []
    for clip in SONGS + OTHERS:
        x, rate = sf.read(DEMO_DIR / clip / "mix.flac", dtype="float32")
        x = x[: int(SONG_S * rate)]
        sf.write(root / f"{clip}.flac", x, rate, subtype="PCM_16")
        rows.append(analysed(root / f"{clip}.flac", f"{clip}/original", store))
        if clip in SONGS:
            for name in VARIANTS:
                path = write_variant(name, x, rate, root / f"{clip}_{name}")
                rows.append(analysed(path, f"{clip}/{name}", store))
    return rows, store


def test_every_variant_matches_its_song_and_no_two_songs_match(corpus):
    rows, store = corpus
    config = load_config()
    cfg = config.near_duplicates
    fps = [store.get_array(r["results"]["fingerprint"]["fingerprint_file"]) for r in rows]
    srcs = [r["track"]["source"] for r in rows]
    found = {(srcs[m.a], srcs[m.b]): m for m in find_matches(fps, cfg.max_bit_error, int(np.ceil(cfg.min_overlap_s / ITEM_S)))}
    for song, variant in itertools.product(SONGS, VARIANTS):  # each variant against its song, directly
        assert (f"{song}/original", f"{song}/{variant}") in found, f"{variant} of {song} not matched"
    for (a, b), m in found.items():  # and nothing across songs (the demo repeats two scores with other voices)
        assert a.split("/")[0] == b.split("/")[0], f"{a} and {b} are different recordings (bit error {m.bit_error})"
    shifted = found[("song_00/lead_silence_1.3s", "song_00/original")] if ("song_00/lead_silence_1.3s", "song_00/original") \
        in found else found[("song_00/original", "song_00/lead_silence_1.3s")]
    assert abs(abs(shifted.offset) * ITEM_S - 1.3) < ITEM_S  # aligned at the added silence

    near = near_duplicate_groups(rows, config, store)
    for song in SONGS:  # one group per song; kept: of the lossless, full-band, full-length, unpadded copies (the
        # original and its gain change: the same by the rule), the first source
        assert {near.kept_of[f"{song}/{v}"] for v in VARIANTS} == {f"{song}/gain_-6db"}
        assert near.kept_of[f"{song}/original"] == f"{song}/gain_-6db"
    assert not any(f"{clip}/original" in near.kept_of for clip in OTHERS)
    assert len(set(near.kept_of.values())) == len(SONGS)


def test_the_kept_copy_rule():
    def row(src: str, fmt: str, bw: float | None, dur: float, silence: float = 0.0) -> dict:
        return {"track": {"source": src}, "results": {"ingest": {"source_format": fmt, "duration_s": dur},
                                                      "quality": {"bandwidth_hz": bw, "silence_ratio": silence}}}

    order = lambda rows: [r["track"]["source"] for r in keep_order(rows)]  # noqa: E731
    assert order([row("a", "MP3/MPEG_LAYER_III", 20000, 60), row("b", "FLAC/PCM_16", 11000, 30)]) == ["b", "a"]
    assert order([row("a", "FLAC/PCM_16", 11000, 60), row("b", "WAV/PCM_24", 21000, 30)]) == ["b", "a"]
    # within 10 % of the widest copy the bandwidth is a tie; then the longer audible audio wins...
    assert order([row("a", "FLAC/PCM_16", 21000, 30), row("b", "FLAC/PCM_16", 20000, 48)]) == ["b", "a"]
    # ... added silence is not length (the unpadded file wins), and then the source order decides
    assert order([row("b", "FLAC/PCM_16", 21000, 48.6), row("a", "FLAC/PCM_16", 21000, 49.9, 1.3 / 49.9)]) == ["b", "a"]
    assert order([row("b", "FLAC/PCM_16", 21000, 48.6), row("a", "WAV/PCM_16", 21000, 48.6)]) == ["a", "b"]
    assert order([row("b", "FLAC/PCM_16", 21000, 48.6), row("a", "FLAC/PCM_16", None, 48.6)]) == ["b", "a"]
    assert [is_lossless(f) for f in ("FLAC/PCM_16", "WAV/FLOAT", "ffmpeg:alac", "MP3/MPEG_LAYER_III", "OGG/OPUS",
                                     "OGG/VORBIS", "ffmpeg:aac", None)] == [True] * 3 + [False] * 5


def test_fpcalc_results_and_a_missing_fpcalc(monkeypatch):
    x, rate = sf.read(DEMO_DIR / "speech_00" / "mix.flac", dtype="int16", always_2d=True)
    assert chromaprint(x, rate).size > 10  # fpcalc exits 3 here (input no longer than -length): still a result
    assert chromaprint(x[: rate // 2], rate).size == 0  # too short for one item: empty, not an error
    monkeypatch.setattr(fingerprint_module.shutil, "which", lambda name: None)
    fingerprint_module.fpcalc_version.cache_clear()
    try:
        with pytest.raises(ModelError, match="apt-get install libchromaprint-tools"):
            FingerprintStage(load_config(), ArtefactStore("/nonexistent")).preflight()
    finally:
        monkeypatch.undo()
        fingerprint_module.fpcalc_version.cache_clear()


def test_planted_copies_are_found_among_random_fingerprints():
    rng = np.random.default_rng(0)
    fps = [rng.integers(0, 2**32, size=int(n), dtype=np.uint32) for n in rng.integers(100, 400, size=400)]
    flips = lambda fp, p: fp ^ np.packbits(rng.random((fp.size, 32)) < p, bitorder="little").view("<u4")  # noqa: E731
    planted = {(i, 400 + k) for k, i in enumerate(range(0, 400, 40))}
    fps += [flips(fps[i][20:], 0.05) for i, _ in sorted(planted)]  # cut and 5 % of bits flipped
    matches = find_matches(fps, 0.2, 80)
    assert {(m.a, m.b) for m in matches} == planted
    assert all(m.offset == 20 for m in matches)


def test_the_on_disk_join_finds_exactly_the_in_memory_matches(tmp_path):
    """``find_matches_on_disk`` (key buckets on disk, one in memory at a time) against ``find_matches``, on random
    fingerprints with planted copies, a held-chord run, a key shared by too many tracks, empty tracks and
    near misses: the same matches and the same counts, whatever the number of buckets."""
    from songcorpus.transforms.corpus.fingerprint_index import IndexStats, find_matches_on_disk

    rng = np.random.default_rng(3)
    fps = [rng.integers(0, 2**32, size=int(n), dtype=np.uint32) for n in rng.integers(60, 300, size=300)]
    flips = lambda fp, p: fp ^ np.packbits(rng.random((fp.size, 32)) < p, bitorder="little").view("<u4")  # noqa: E731
    fps += [flips(fps[i][k:], p) for i, k, p in ((0, 15, 0.05), (7, 0, 0.02), (7, 40, 0.1), (50, 5, 0.3), (99, 1, 0.18))]
    fps += [np.zeros(0, np.uint32), np.full(200, 0xABCD1234, np.uint32)]
    fps += [np.r_[rng.integers(0, 2**32, 100, dtype=np.uint32), np.full(30, 0xABCD1234, np.uint32)] for _ in range(300)]
    want_stats = IndexStats()
    want = find_matches(fps, 0.2, 40, max_postings=64, stats=want_stats)
    assert len(want) >= 4
    for bucket_terms in (10**9, 5000, 997):
        got_stats = IndexStats()
        got = find_matches_on_disk(fps.__getitem__, len(fps), 0.2, 40, max_postings=64, stats=got_stats,
                                   items_hint=sum(f.size for f in fps), bucket_terms=bucket_terms, scratch=tmp_path)
        assert got == want, bucket_terms
        assert got_stats == want_stats, bucket_terms
    assert list(tmp_path.iterdir()) == []  # scratch removed


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    """A demo song cut to 16 s (its fingerprint spans 13.5 s: over the 10 s minimum), its mp3 and opus copies, and
    another song."""
    root = tmp_path_factory.mktemp("copies")
    x, rate = sf.read(DEMO_DIR / "song_01" / "mix.flac", dtype="float32")
    x = x[: 16 * rate]
    sf.write(root / "song.flac", x, rate, subtype="PCM_16")
    write_variant("mp3_64k", x, rate, root / "song_copy")
    write_variant("opus", x, rate, root / "song_copy")
    y, rate = sf.read(DEMO_DIR / "song_07" / "mix.flac", dtype="float32")  # same score, another voice
    sf.write(root / "other.flac", y[: 16 * rate], rate, subtype="PCM_16")
    return root


def _salt_that_splits_the_copies(folder: Path) -> str:
    """A split salt under which the three copies, split each by its own file, would not share a split."""
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("song*"))]
    for i in range(200):
        config = load_config(overrides={"splits": {"train": 0.34, "valid": 0.33, "test": 0.33, "salt": f"s{i}"}})
        own = {assign_split({"track": {"source": s, "metadata": {}}, "results": {"ingest": {"source_sha256": s}}},
                            config) for s in shas}
        if len(own) > 1:
            return f"s{i}"
    raise AssertionError("no salt found")


def test_curate_groups_copies_in_one_split_and_rebuild_rejects_them(copies, tmp_path, monkeypatch):
    salt = _salt_that_splits_the_copies(copies)
    common = {"windows": {"length_s": 4.0}, "augment": {"fraction": 0.0}, "engine": {"name": "beam", "workers": 1},
              "splits": {"train": 0.34, "valid": 0.33, "test": 0.33, "salt": salt}}
    out = tmp_path / "out"
    curate([str(copies)], out, load_config(overrides={**common, "near_duplicates": {"reject": False}}), progress=False)
    rows = {r["source"]: r for r in tracks(out)}
    kept = rows["song.flac"]
    group = [rows[s] for s in ("song.flac", "song_copy.mp3", "song_copy.opus")]
    assert all(r["status"] == "accepted" for r in group)  # the gate is off: every copy stays...
    assert len({r["split"] for r in group}) == 1  # ... in one split, though their own files would split them
    assert {r["duplicate_group"] for r in group} == {kept["track_id"]}
    assert rows["other.flac"]["duplicate_group"] is None

    forbid_analysis_stages(monkeypatch)  # one Beam worker runs in this process
    rebuild(out, load_config(overrides=common), progress=False)  # the gate on: decided from the stored fingerprints
    rows = {r["source"]: r for r in tracks(out)}
    assert rows["song.flac"]["status"] == "accepted" and rows["other.flac"]["status"] == "accepted"
    for copy in ("song_copy.mp3", "song_copy.opus"):
        r = rows[copy]
        assert (r["status"], r["stage"], r["reason_code"], r["duplicate_of"]) == \
            ("rejected", "fingerprint", "near_duplicate", "song.flac")
        assert r["duplicate_group"] == kept["track_id"] and "bit error" in r["reason"]
    state = [json.loads(line) for line in (out / "state" / "rows.jsonl").open()]
    assert all(r["results"]["fingerprint"]["fingerprint_items"] > 100 for r in state)


def test_split_groups_join_copies_and_artists():
    def row(src: str, sha: str, artist: str | None = None) -> dict:
        return {"track": {"source": src, "metadata": {"artist": artist} if artist else {}},
                "results": {"ingest": {"source_sha256": sha}}, "outcome": None}

    class Near:
        kept_of = {"a.flac": "a.flac", "b.mp3": "a.flac", "c.flac": "c.flac", "d.flac": "c.flac"}

    rows = [row("a.flac", "1"), row("b.mp3", "2"), row("c.flac", "3", "kal"), row("d.flac", "4"),
            row("e.flac", "5", "kal"), row("f.flac", "6")]
    keys = split_groups(rows, Near())  # type: ignore[arg-type]
    assert keys["a.flac"] == keys["b.mp3"] == "file:1"
    assert keys["c.flac"] == keys["d.flac"] == keys["e.flac"] == "file:4"  # d copies c, c shares e's artist
    assert keys["f.flac"] == "file:6"  # alone: its own key, as before
    assert split_groups(rows, None)["c.flac"] == "kal"

