"""`songcorpus curate --profile full` end to end with tiny random models of the real architectures,
each saved in its published on-disk layout, registered in a temporary model store and loaded through
the stages' own code: on Ray and on Beam (same bytes), and failing fast, before any data is read,
when a model is missing or altered."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import duckdb
import numpy as np
import pytest
import soundfile as sf
import yaml

# the tiny builders live beside the adapters' own tests
from test_aesthetics import make_audiobox_folder, make_songeval_folder
from test_demucs import save_th, tiny_htdemucs
from test_lyrics import TINY_EN
from test_neural_codecs import build_tiny
from test_speaker_units import make_ecapa, make_hubert
from test_tagger import save_tiny_ast

from songcorpus.cli import main
from songcorpus.schemas.sample import conform_sample_json, sample_json_schema
from songcorpus.transforms.models.store import register_model
from songcorpus.transforms.stages.lyrics import random_ct2_whisper

from conftest import DEMO_DIR, output_files, tracks

CODECS = {"tiny-encodec": "encodec", "tiny-dac": "dac", "tiny-sao-vae": "oobleck"}


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model the full profile loads, tiny, in a fresh store."""
    build = tmp_path_factory.mktemp("tiny-models")
    root = tmp_path_factory.mktemp("store")

    def reg(name: str, folder: Path, kind: str) -> None:
        register_model(name, folder, root, kind=kind, version="tiny", licence="test")

    folder = build / "htdemucs"
    folder.mkdir()
    save_th(tiny_htdemucs(0), folder, "955717e8")
    reg("tiny-htdemucs", folder, "htdemucs")
    reg("tiny-ast", save_tiny_ast(build / "ast"), "ast")
    reg("tiny-whisper", random_ct2_whisper(build / "whisper", TINY_EN), "ct2-whisper")
    reg("tiny-songeval", make_songeval_folder(build / "songeval"), "songeval")
    reg("tiny-audiobox", make_audiobox_folder(build / "audiobox"), "audiobox-aesthetics")
    for name, kind in CODECS.items():
        build_tiny(kind, build / name)
        reg(name, build / name, kind)
    reg("tiny-ecapa", make_ecapa(build / "ecapa"), "ecapa")
    reg("tiny-hubert", make_hubert(build / "hubert"), "hubert")
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 12 s song excerpts (one with its stems, one without: Demucs separates it) and a speech clip."""
    root = tmp_path_factory.mktemp("inputs")
    lines = []
    for song, with_stems in (("song_00", True), ("song_01", False)):
        entry = {"path": f"{song}.flac", "artist": song, "lyrics": json.loads(
            next(line for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines() if f'"{song}/' in line))["lyrics"]}
        for part in ("mix", *(("vocals", "accompaniment") if with_stems else ())):
            x, rate = sf.read(str(DEMO_DIR / song / f"{part}.flac"), dtype="float32")
            name = f"{song}.flac" if part == "mix" else f"{song}_{part}.flac"
            sf.write(root / name, x[: 12 * rate], rate, subtype="PCM_16")
            if part != "mix":
                entry[part] = name
        lines.append(entry)
    shutil.copy(DEMO_DIR / "speech_00" / "mix.flac", root / "speech_00.flac")
    lines.append({"path": "speech_00.flac", "artist": "espeak-ng"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return root / "manifest.jsonl"


def full_config(path: Path, store: Path) -> Path:
    cfg = {
        "profile": "full",
        "models": {"store_dir": str(store)},
        "separation": {"model": "tiny-htdemucs", "batch_size": 2},
        "tagger": {"model": "tiny-ast"},
        "lyrics": {"model": "tiny-whisper", "beam_size": 1},
        "aesthetics": {"songeval_model": "tiny-songeval", "audiobox_model": "tiny-audiobox", "max_analysis_s": 10},
        "codecs": {"models": list(CODECS)},
        "speaker": {"model": "tiny-ecapa"},
        "content_units": {"model": "tiny-hubert", "layer": 2, "n_units": 8},
        "stems": {"evaluate_separator": False},
        "windows": {"length_s": 4.0},
        "augment": {"fraction": 0.0},
        # random weights score at random: only the gates that do not read model scores
        "gates": [{"name": "too_short", "score": "duration_s", "min": 2.0}],
        "engine": {"workers": 1},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def curate_full(engine: str, manifest: Path, out: Path, config: Path, capsys) -> tuple[int, str]:
    code = main(["curate", str(manifest), "--out", str(out), "--profile", "full", "--config", str(config),
                 "--engine", engine, "--no-progress"])
    return code, capsys.readouterr().err


def read_sample(out: Path, key: str) -> dict[str, bytes]:
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    shard = con.execute("SELECT shard FROM windows WHERE key = ?", [key]).fetchone()[0]
    con.close()
    members = {}
    for path in sorted((out / "shards").glob(f"{shard}.*.tar")):  # the family's field-group files
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                k, _, suffix = m.name.partition(".")
                if k == key:
                    members[suffix] = tar.extractfile(m).read()
    return members


def test_full_profile_runs_every_model_stage(full_store: Path, inputs: Path, tmp_path: Path, capsys) -> None:
    """On Ray; the two engines' bytes are compared by the slow whole-demo test below (Beam's full-profile path is
    the lite one's, whose engine identity the default suite checks on the demo)."""
    config = full_config(tmp_path / "full.yaml", full_store)
    out = tmp_path / "ray"
    code, err = curate_full("ray", inputs, out, config, capsys)
    assert code == 0, err[-3000:]
    rows = {Path(r["source"]).name: r for r in tracks(out)}
    assert sorted(rows) == ["song_00.flac", "song_01.flac", "speech_00.flac"]
    assert rows["song_00.flac"]["status"] == rows["song_01.flac"]["status"] == "accepted"
    song1 = rows["song_01.flac"]
    assert song1["stems_method"] == "demucs:tiny-htdemucs"  # no stems given: separated
    assert rows["song_00.flac"]["stems_method"] == "source"
    assert song1["classify_method"].startswith("ast:tiny-ast")
    for field in ("songeval_mean", "audiobox_pq", "lyrics_language_probability"):
        assert song1[field] is not None, field
    assert rows["song_00.flac"]["lyrics_cer"] is not None  # the source has lyrics

    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    fields = {(s, f): (m, c) for s, f, m, c in con.execute(
        "SELECT stage, field, model, model_checksum FROM fields").fetchall()}
    keys = [k for (k,) in con.execute("SELECT key FROM windows ORDER BY key").fetchall()]
    con.close()
    assert fields[("stems", "vocals_file")][0] == "tiny-htdemucs@tiny"
    assert fields[("classify", "speech_fraction")][0] == "tiny-ast@tiny"
    assert fields[("lyrics", "lyrics_text")][0] == "tiny-whisper@tiny"
    assert "tiny-songeval@tiny" in fields[("aesthetics", "songeval_mean")][0]
    assert all(fields[("samples", "samples")][0].count(f"{m}@tiny") == 1 for m in (*CODECS, "tiny-ecapa", "tiny-hubert"))
    assert all(len(c) == 64 for (_, c) in fields.values() if c is not None)

    assert keys
    sample = read_sample(out, keys[0])
    meta = json.loads(sample["json"])
    duration = meta["duration_s"]
    assert sorted(c["name"] for c in meta["codecs"]) == sorted(CODECS)
    for codec in meta["codecs"]:
        for stem in ("mix", "vocals", "accompaniment"):
            arr = np.load(io.BytesIO(sample[f"{stem}.{codec['name']}_{codec['representation']}.npy"]))
            assert arr.shape[-1] == codec["n_frames"], (codec, arr.shape)
            assert abs(arr.shape[-1] - duration * codec["frame_rate"]) <= 1.0
    assert all(0 <= w["start_s"] <= w["end_s"] <= duration for w in meta["labels"]["lyrics_words"])  # window-relative
    units = np.load(io.BytesIO(sample["vocals.units.npy"]))
    assert units.dtype == np.int16 and units.shape == (int((duration * 16000 - 400) // 320) + 1,)
    assert 0 <= units.min() and units.max() < meta["units"]["n_units"] <= 8
    emb = np.load(io.BytesIO(sample["speaker.npy"]))  # every sample has one: zeros when it has no reference
    assert emb.shape == (192,) and meta["speaker"]["from_reference"] == (meta["reference_key"] is not None)
    assert abs(float(np.linalg.norm(emb)) - (1.0 if meta["speaker"]["from_reference"] else 0.0)) < 1e-4
    assert (out / "codec" / "units.npy").exists()
    # every sample typed by the full profile's schema, and HF reads them all with the corpus' features
    import datasets

    assert conform_sample_json(meta, sample_json_schema(full_profile=True)) == meta
    assert {"speaker.npy", "vocals.units.npy"} <= set(json.loads((out / "shards" / "features.json").read_text()))
    features = datasets.Features.from_dict(json.loads((out / "shards" / "features.meta.json").read_text()))
    assert {"speaker.npy", "vocals.units.npy"} <= set(features)  # small arrays: the meta group
    shards = sorted(str(p) for p in (out / "shards").glob("*.meta.tar"))
    rows = list(datasets.load_dataset("webdataset", data_files={"train": shards}, split="train", streaming=True,
                                      features=features))
    assert sorted(r["__key__"] for r in rows) == keys and all(r["json"]["codecs"] for r in rows)


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_missing_or_altered_model_fails_before_any_data_is_read(full_store: Path, inputs: Path, tmp_path: Path,
                                                                  capsys, damage: str) -> None:
    store = tmp_path / "store"
    shutil.copytree(full_store, store)
    victim = next((store / "tiny-hubert" / "tiny").glob("model.safetensors"))
    if damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    config = full_config(tmp_path / "full.yaml", store)
    code, err = curate_full("ray", inputs, tmp_path / "out", config, capsys)
    assert code == 2
    assert "tiny-hubert" in err and "songcorpus models" in err
    assert ("is missing" if damage == "missing" else "does not match its registered sha256") in err
    assert not (tmp_path / "out" / "state").exists()  # nothing ran


@pytest.mark.slow
def test_full_profile_on_the_whole_demo_corpus(full_store: Path, tmp_path: Path, capsys) -> None:
    """The bundled demo corpus (11 inputs), full profile, tiny models, both engines (about 10 min on 2 cores)."""
    from songcorpus.pipelines.sources.demo import demo_manifest

    config = full_config(tmp_path / "full.yaml", full_store)
    for engine in ("ray", "beam"):
        code, err = curate_full(engine, Path(demo_manifest()), tmp_path / engine, config, capsys)
        assert code == 0, err[-3000:]
    rows = {Path(r["source"]).parent.name: r for r in tracks(tmp_path / "ray")}
    assert len(rows) == 11
    assert all(rows[f"song_0{i}"]["status"] == "accepted" for i in (0, 1, 3, 5, 7))
    assert all(r["status"] != "failed" for r in rows.values()), {n: r["reason"] for n, r in rows.items()}
    assert output_files(tmp_path / "ray") == output_files(tmp_path / "beam")


def test_an_empty_store_lists_every_missing_model_at_once(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SONGCORPUS_MODELS", str(tmp_path / "empty"))
    code = main(["curate", str(DEMO_DIR / "manifest.jsonl"), "--out", str(tmp_path / "out"), "--profile", "full"])
    err = capsys.readouterr().err
    assert code == 2
    full = yaml.safe_load((Path(__file__).parents[1] / "schemas" / "profiles" / "full.yaml").read_text())
    wanted = {full["tagger"]["model"], full["separation"]["model"], full["lyrics"]["model"],
              full["aesthetics"]["songeval_model"], full["aesthetics"]["audiobox_model"],
              full["content_units"]["model"], full["speaker"]["model"], *full["codecs"]["models"]}
    assert f"{len(wanted)} models are not usable" in err
    for name in wanted:
        assert f"model {name} (" in err and f"songcorpus models add {name} DIR" in err
    assert not (tmp_path / "out" / "state").exists()
