"""The shards open in every reader trainers use: Hugging Face datasets (streaming and not), webdataset and
wids, each through the loading block docs/outputs.md shows, every member of every sample decoded and checked
against the catalog (each block zips a shard family's field-group files); and the sample JSON's declared
Arrow schema holds where HF's type guessing
would not."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import soundfile as sf

from songcorpus.pipelines.sinks.hf_features import FEATURES_FILE, write_features
from songcorpus.pipelines.sinks.shard_writer import Sample, write_shard
from songcorpus.schemas.catalog import SCORE_COLUMNS
from songcorpus.schemas.config import AugmentConfig
from songcorpus.schemas.sample import (
    F0_RATE_HZ,
    SAMPLE_JSON_SCHEMA,
    SAMPLE_SPEC_VERSION,
    InvalidSampleJson,
    conform_sample_json,
    frames_for,
)
from songcorpus.schemas.track import METADATA_FIELDS
from songcorpus.transforms.dsp.augment import Biquad, EqParams, SongAugmentation
from songcorpus.transforms.stages.samples_lite import augmentation_record, caption_method, clip_sections, clip_segments

READERS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"
BLOCK_HEAD = 'OUT, split = "songcorpus-demo", "train"'


def reader_block(name: str) -> str:
    """The python block under ``<!-- reader: NAME -->`` in docs/outputs.md."""
    found = re.findall(rf"<!-- reader: {name} -->\n```python\n(.*?)\n```", READERS_PAGE.read_text(encoding="utf-8"),
                       re.S)
    assert len(found) == 1, f"docs/outputs.md has {len(found)} '<!-- reader: {name} -->' blocks"
    return found[0]


def run_block(name: str, out: Path, split: str, **replace: str) -> dict[str, Any]:
    """Run the docs/outputs.md block on corpus ``out`` / ``split`` (its first line names the demo folder and split)."""
    code = reader_block(name)
    assert code.count(BLOCK_HEAD) == 1, f"the {name} block must start from {BLOCK_HEAD!r}"
    code = code.replace(BLOCK_HEAD, f"OUT, split = {str(out)!r}, {split!r}")
    for old, new in replace.items():
        assert code.count(old) == 1, (name, old)
        code = code.replace(old, new)
    namespace: dict[str, Any] = {}
    exec(compile(code, f"docs/outputs.md:{name}", "exec"), namespace)  # noqa: S102 - our own docs' code
    return namespace


def catalog_windows(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """split -> key -> windows row."""
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        cur = con.execute("SELECT * FROM windows ORDER BY key")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    by_split: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_split.setdefault(r["split"], {})[r["key"]] = r
    return by_split


def tar_members(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    """key -> suffix -> bytes, straight from the tars (the reference every reader must agree with)."""
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted((out / "shards").glob(f"shard-{split}-*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, _, suffix = m.name.partition(".")
                samples.setdefault(key, {})[suffix] = tar.extractfile(m).read()
    return samples


def check_reader(samples: Iterator[dict[str, Any]], out: Path, split: str, prefix: str = "") -> int:
    """Every decoded sample against the catalog row and the raw tar members: keys, member set, JSON
    (lossless and conforming to the schema), audio length, f0 / latent / token frames and values."""
    windows = catalog_windows(out)[split]
    raw = tar_members(out, split)
    seen = []
    for sample in samples:
        key = sample["__key__"]
        seen.append(key)
        row = windows[key]
        members = {k[len(prefix):]: v for k, v in sample.items() if not k.startswith("__")}
        assert sorted(members) == row["fields"].split(",") == sorted(raw[key]), key
        meta = members["json"]
        assert meta == json.loads(raw[key]["json"]), key  # typed reading loses nothing
        assert conform_sample_json(meta) == meta and meta["spec_version"] == SAMPLE_SPEC_VERSION
        assert meta["key"] == key and meta["split"] == split and meta["duration_s"] == row["duration_s"]
        dur, rate, codec = meta["duration_s"], meta["sample_rate"], meta["embedded_codec"]
        for stem in ("mix", "vocals", "accompaniment"):
            audio = np.asarray(members[f"{stem}.flac"])
            assert audio.shape == (round(dur * rate),), (key, stem)
            np.testing.assert_array_equal(audio, sf.read(io.BytesIO(raw[key][f"{stem}.flac"]), dtype="float32")[0])
        f0 = np.asarray(members["f0.npy"])
        assert f0.shape == (frames_for(dur, F0_RATE_HZ),), key
        for stem in ("vocals", "accompaniment"):
            lat = np.asarray(members[f"{stem}.embedded_latents.npy"])
            tok = np.asarray(members[f"{stem}.embedded_tokens.npy"])
            assert lat.shape == (frames_for(dur, codec["latent_rate_hz"]), codec["n_mels"]), key
            assert tok.shape == (frames_for(dur, codec["token_rate_hz"]),), key
        for name, value in members.items():
            if name.endswith(".npy"):
                ref = np.load(io.BytesIO(raw[key][name]))
                np.testing.assert_array_equal(np.asarray(value).astype(ref.dtype), ref)
    assert sorted(seen) == sorted(windows), "every sample of the split, each once"
    return len(seen)


@pytest.fixture(scope="module")
def demo(demo_ray: Path) -> Path:
    """The session's curated demo (conftest: ``demo_ray``); read-only here."""
    return demo_ray


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF's Arrow cache in the test's folder, not ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    datasets.disable_progress_bars()
    return tmp_path / "hf"


def splits_of(out: Path) -> list[str]:
    return sorted(catalog_windows(out))


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "arrow"])
def test_hugging_face_datasets_reads_every_sample(demo: Path, hf_cache: Path, streaming: bool) -> None:
    assert (demo / "shards" / FEATURES_FILE).exists()
    for split in splits_of(demo):
        ns = run_block("hf", demo, split, **({} if streaming else {"streaming=True": "streaming=False"}))
        assert check_reader(ns["samples"], demo, split) > 0
        if not streaming:
            assert any(hf_cache.rglob("*.arrow"))  # really read through the Arrow cache


def test_webdataset_reads_every_sample(demo: Path) -> None:
    for split in splits_of(demo):
        ns = run_block("webdataset", demo, split)
        assert check_reader(iter(ns["samples"]), demo, split) > 0


def test_wids_reads_every_sample_in_place(demo: Path) -> None:
    for split in splits_of(demo):
        index = json.loads((demo / "shards" / f"index-{split}.json").read_text())
        for shard in index["shardlist"]:
            assert shard["filesize"] == (demo / "shards" / shard["url"]).stat().st_size
            assert shard["url"] == shard["groups"]["meta"]["url"] == f"{shard['family']}.meta.tar"
            for group, entry in shard["groups"].items():
                one = json.loads((demo / "shards" / f"index-{split}.{group}.json").read_text())
                assert entry["url"] in [e["url"] for e in one["shardlist"]]
                assert entry["filesize"] == (demo / "shards" / entry["url"]).stat().st_size
        before = sorted(p.name for p in (demo / "shards").iterdir())
        ns = run_block("wids", demo, split)
        assert check_reader(ns["samples"], demo, split, prefix=".") == len(ns["ds"]) > 0
        assert all(d.cache_dir is None for d in ns["dss"])  # read where they are: nothing copied into a wids cache
        for d in ns["dss"]:
            d.close()
        assert sorted(p.name for p in (demo / "shards").iterdir()) == before  # no lock or copy left behind


# ---------------------------------------------------------------------------------------------
# the schema where guessing fails: the first five samples have none of the "sometimes" values
# ---------------------------------------------------------------------------------------------

def synthetic_sample(i: int, filled: bool) -> dict[str, Any]:
    """A spec-3 sample JSON; ``filled`` False: no augmentation, no beats, no sections, no reference, null
    metadata, scores and tempo (what a quiet, unlabelled window of an unscored song looks like)."""
    aug = SongAugmentation("pitch", 2, stretcher="librosa") if filled else None
    eq = EqParams(Biquad(-3.0, 150.0, 0.8), Biquad(1.5, 1300.0, 0.7), Biquad(2.0, 4000.0, 0.6)) if filled else None
    metadata = {k: (f"{k} {i}" if filled else None) for k in METADATA_FIELDS if k != "split"}
    scores = {k: ((True if str(t) == "bool" else 3 if str(t) == "int64" else 0.5) if filled else None)
              for k, (t, _, _) in SCORE_COLUMNS.items()}
    return conform_sample_json({
        "spec_version": SAMPLE_SPEC_VERSION, "key": f"t{i:020d}_0000", "track_id": f"t{i:020d}", "source": f"s{i}.flac",
        "split": "train", "start_s": 1, "duration_s": 10.24, "sample_rate": 44100, "channels": 1,
        "audio_sha256": "0" * 64, "reference_key": f"t{i:020d}_0002" if filled else None,
        "augmentation": augmentation_record(aug, eq, AugmentConfig(), (1.0, 11.24)),
        "labels": {"vad_segments": clip_segments([[2.0, 5.0]] if filled else [], 1.0, 11.24),
                   "beats": [0.5, 1.0] if filled else [], "downbeats": [0.5] if filled else [],
                   "sections": clip_sections([[0.0, 5.0, "A"], [5.0, 12.0, "B"]] if filled else [], 1.0, 11.24),
                   "tempo_bpm": 120 if filled else None, "f0_trust": 0.8 if filled else None},
        "metadata": metadata, "caption_method": caption_method(metadata), "scores": scores,
        "lineage": [{"stage": "ingest", "version": "3", "model": "m" if filled else None,
                     "checksum": "c" if filled else None, "config_hash": "h"}],
        "embedded_codec": {"codec": "embedded-mel", "version": "1", "kind": "k", "sample_rate": 44100, "n_mels": 64,
                           "n_fft": 2048, "fmin_hz": 0, "fmax_hz": 20000, "log_floor": 1e-5, "latent_rate_hz": 25,
                           "token_rate_hz": 25, "config_hash": "h", "codebook_size": 1024, "codebook_sha256": "0" * 64},
        "stems_method": "source", "fields": ["f0.npy", "json"],
    })


def test_declared_features_read_what_the_first_five_samples_cannot_type(tmp_path: Path, hf_cache: Path) -> None:
    """Five bare samples, then full ones: HF with the corpus' features.json reads all of them, streaming
    and not, value for value (guessing types null from the five, and the sixth fails; datasets #7549)."""
    import datasets

    metas = [synthetic_sample(i, filled=i >= 5) for i in range(8)]
    assert metas[0]["augmentation"]["song_op"]["applied"] is False and metas[6]["labels"]["sections"][0]["label"] == "A"
    f0 = tmp_path / "f0.npy"
    np.save(f0, np.zeros(frames_for(10.24, F0_RATE_HZ), np.float32))
    samples = [Sample(m["key"], {"json": json.dumps(m).encode(), "f0.npy": f0}) for m in metas]
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    written = write_shard(shard_dir, "shard-train-000000", samples)
    assert [f.name for f in written.files] == ["shard-train-000000.meta.tar"]  # json and f0: one field group
    write_features(shard_dir, samples, SAMPLE_JSON_SCHEMA)
    features = datasets.Features.from_dict(json.loads((shard_dir / "features.meta.json").read_text()))
    for streaming in (True, False):
        ds = datasets.load_dataset("webdataset", data_files={"train": [str(shard_dir / "shard-train-000000.meta.tar")]},
                                   split="train", streaming=streaming, features=features)
        rows = list(ds)
        assert [r["json"] for r in rows] == metas, streaming
        assert all(np.asarray(r["f0.npy"]).shape == (1024,) for r in rows)


def test_the_schema_check_names_what_breaks_it() -> None:
    good = synthetic_sample(1, filled=True)
    assert good["start_s"] == 1.0 and isinstance(good["start_s"], float)  # ints widened where floats are declared
    assert isinstance(good["labels"]["tempo_bpm"], float) and isinstance(good["scores"]["source_channels"], int)
    cases = {
        "json.augmentation is null": {**good, "augmentation": None},
        "json.labels.sections[0] is list": {**good, "labels": {**good["labels"], "sections": [[0.0, 4.0, "A"]]}},
        "not declared ['extra']": {**good, "extra": 1},
        "json.metadata has keys missing ['title']": {**good, "metadata": {k: v for k, v in good["metadata"].items()
                                                                            if k != "title"}},
        "json.scores.has_vocals is 0.5": {**good, "scores": {**good["scores"], "has_vocals": 0.5}},
        "json.spec_version is 3.0": {**good, "spec_version": 3.0},
    }
    for message, bad in cases.items():
        with pytest.raises(InvalidSampleJson, match=re.escape(message)):
            conform_sample_json(bad)
