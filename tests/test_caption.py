"""Captions where the source has none: a demo song curated without a caption gets one naming its tempo and key
(caption_method says it is generated); a source caption is kept; an augmented copy names its own tempo and key."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import load_config
from songcorpus.transforms.stages.caption import (
    GENERATED,
    CaptionStage,
    effective_caption,
    measured_facts,
    render,
    sample_caption,
)
from songcorpus.transforms.stages.classify_yamnet import YamnetContentClassifier
from songcorpus.transforms.stages.key import transpose_key

from conftest import ingested_excerpt, tracks

SOURCE_CAPTION = "A gentle folk song, sung by a synthetic voice over piano."


def _facts(**results) -> dict:
    return measured_facts(results, load_config().caption)


def test_only_what_was_measured_is_claimed() -> None:
    tags = {"genre": [["Heavy metal", 0.046], ["Rock music", 0.04]],
            "instrument": [["Drum kit", 0.05], ["Drum", 0.04], ["Electric guitar", 0.035], ["Piano", 0.01]],
            "mood": [["Angry music", 0.031]]}
    facts = _facts(classify={"music_tags": tags}, structure={"tempo_bpm": 114.44},
                   key={"key": "F#", "mode": "minor", "key_strength": 0.8}, stems={"has_vocals": True},
                   vad={"vocal_activity": 0.02})
    # "drum" adds nothing to "drum kit"; piano is under caption.min_tag_prob; 2 % vocal activity is no singing
    assert render(facts) == "Heavy metal with drum kit and electric guitar, angry mood, instrumental, 114 BPM, in F# minor."
    weak = _facts(structure={"tempo_bpm": 84.03}, key={"key": "C", "mode": "major", "key_strength": 0.3},
                  stems={"has_vocals": True}, vad={"vocal_activity": 0.2})
    assert render(weak) == "Music, 84 BPM."  # a weak key and an uncertain vocal activity are left out
    assert render(_facts()) == "Music."


def test_an_augmented_copy_names_its_own_tempo_and_key() -> None:
    facts = _facts(structure={"tempo_bpm": 110.0}, key={"key": "F", "mode": "major", "key_strength": 0.7},
                   stems={"has_vocals": True}, vad={"vocal_activity": 0.85})
    result = {"caption": render(facts), "caption_method": GENERATED, "caption_facts": facts}
    assert sample_caption(result) == ("Music, vocals, 110 BPM, in F major.", GENERATED)
    assert sample_caption(result, speed=1.2)[0] == "Music, vocals, 132 BPM, in F major."
    assert sample_caption(result, semitones=-2.0)[0] == "Music, vocals, 110 BPM, in Eb major."
    source = {**result, "caption": SOURCE_CAPTION, "caption_method": "source"}
    assert sample_caption(source, speed=1.2) == (SOURCE_CAPTION, "source")  # a human caption is never rewritten


def _row(caption: str | None) -> dict:
    facts = {"classify": {"music_tags": {"genre": [], "instrument": [["Piano", 0.2]], "mood": []}},
             "structure": {"tempo_bpm": 84.0}, "key": {"key": "C", "mode": "major", "key_strength": 0.9},
             "stems": {"has_vocals": True}, "vad": {"vocal_activity": 0.9}}
    return {"track": {"source": "x.flac", "metadata": {"caption": caption} if caption else {}}, "results": facts}


def test_a_source_caption_always_wins_and_is_part_of_the_cache_key(tmp_path: Path) -> None:
    stage = CaptionStage(load_config(), ArtefactStore(tmp_path))
    assert stage.process_one(_row(SOURCE_CAPTION))["caption"] == SOURCE_CAPTION
    assert stage.process_one(_row(SOURCE_CAPTION))["caption_method"] == "source"
    assert stage.process_one(_row("  "))["caption"] == "Music with piano, vocals, 84 BPM, in C major."  # blank: none
    assert len({stage.cache_key(_row(c)) for c in (None, SOURCE_CAPTION, "Another caption.")}) == 3
    assert effective_caption(_row(SOURCE_CAPTION) | {"results": {}}) == (SOURCE_CAPTION, "source")  # rejected early
    assert effective_caption(_row(None) | {"results": {}}) == (None, None)


def _song_op(meta: dict) -> tuple[float, int]:
    """(speed, semitones) of a sample's song op (1.0, 0 when none was applied)."""
    op = (meta.get("augmentation") or {}).get("song_op") or {}
    if not op or op.get("applied") is False:
        return 1.0, 0
    if "speed" in op:
        return float(op["speed"]), round(op["semitones"])
    return (float(op["value"]), 0) if op["kind"] == "speed" else (1.0, round(op["value"]))


def test_demo_songs_without_a_caption_get_one_naming_tempo_and_key(demo_ray: Path) -> None:
    """The demo manifest gives no caption: each accepted song's is generated from its measured tempo and key,
    and every sample of it carries that caption (an augmented copy's own tempo and key)."""
    songs = {Path(r["source"]).parent.name: r for r in tracks(demo_ray) if r["status"] == "accepted"}
    assert {"song_00", "song_01", "song_03", "song_05", "song_07"} <= set(songs)
    for name, song in songs.items():
        assert song["caption_method"] == GENERATED, name
        assert f"{round(song['tempo_bpm'])} BPM" in song["caption"], (name, song["caption"])
        assert f"in {song['key']} {song['mode']}" in song["caption"], (name, song["caption"])
    for name in ("song_00", "song_01", "song_05", "song_07"):  # accompaniments rendered from F major lead sheets
        assert "in F major" in songs[name]["caption"], (name, songs[name]["caption"])
    by_track = {r["track_id"]: r for r in songs.values()}
    n_moved = 0
    for shard in sorted((demo_ray / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if not m.name.endswith(".json"):
                    continue
                meta = json.load(io.BytesIO(tar.extractfile(m).read()))
                song = by_track[meta["track_id"]]
                speed, semitones = _song_op(meta)
                assert meta["caption_method"] == GENERATED
                if (speed, semitones) == (1.0, 0):
                    assert meta["metadata"]["caption"] == song["caption"]
                else:
                    n_moved += 1
                    key = transpose_key(song["key"], song["mode"], semitones)
                    assert f"{round(song['tempo_bpm'] * speed)} BPM, in {key} " in meta["metadata"]["caption"]
    print("augmented samples with a moved caption:", n_moved)


def test_yamnet_music_tags_name_a_rock_recordings_genre(tmp_path: Path) -> None:
    """The lite classifier's music_tags on a real band recording (demo instr_fof_00, CC-BY-SA rock): its genre
    is a rock class, strong enough for the caption to name it."""
    store = ArtefactStore(tmp_path / "cache")
    row = ingested_excerpt(store, tmp_path, "instr_fof_00/mix.flac", 0.0, 30.0)
    tags = YamnetContentClassifier(load_config(), store).process_one(row)["music_tags"]
    assert tags["genre"][0][0] in ("Heavy metal", "Rock music", "Punk rock"), tags["genre"]
    assert tags["genre"][0][1] >= load_config().caption.min_tag_prob
    assert [len(tags[c]) for c in ("genre", "instrument", "mood")] == [5, 5, 5]
