"""Curating from and to an object store (a moto S3 server on 127.0.0.1, tests/s3_server.py; a GCS emulator,
tests/gcs_server.py) against local disk.

Two demo inputs (a song with stems, a speech clip) are curated from a local folder to a local folder, and the same
files, uploaded, from s3:// to s3:// with the artefact cache on S3. The S3 run is first crashed while it uploads
its shard (nothing may then read as a corpus), then re-run, which must finish it from the S3 cache. Checked: the
published corpora are byte-identical; the curate wrote no credential into any object (cache included) or log
record; the loader yields the same batches from S3 shards as from local ones, and a run's provenance is the same;
``rebuild`` on S3 republishes the same corpus without uploading its shard again; Hugging Face Parquet and Arrow
dataset folders on S3 are read row by row without pulling the audio through the driver. The same inputs curated
from gs:// to gs:// on the GCS emulator give the same bytes too, and the loader reads them the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from s3_server import KEY_ID, SECRET, make_bucket, s3_env

from songcorpus.io import storage
from songcorpus.pipelines.curate import curate, load_state
from songcorpus.schemas.config import load_config
from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.failures import JobFault

from conftest import DEMO_DIR, LogLines

# state/rows.jsonl records where each input was read from (here a folder, there a URL); DuckDB's file is not
# byte-stable between runs (its tables are: the Parquet parts they are loaded from are compared)
LOCATION_BOUND = ("state/rows.jsonl", "catalog.duckdb")
SONGS = ("song_03", "speech_00")  # the shortest song (27 s, stems given) and a speech clip the speech gate rejects


def _config():
    # Beam's FnApiRunner: in this process, so every log record of the run reaches the capturing handler (and the
    # DirectRunner's attempt to download its Prism binary is skipped)
    return load_config(overrides={"engine": {"name": "beam", "workers": 1, "beam_options": ["--runner=FnApiRunner"]}})


def _write_inputs(root: str) -> str:
    """The demo files of SONGS and a manifest naming them relatively, under a folder or a prefix."""
    lines = [line for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines()
             if json.loads(line)["path"].split("/")[0] in SONGS]
    for song in SONGS:
        for f in sorted((DEMO_DIR / song).glob("*.flac")):
            storage.upload(f, storage.join(root, song, f.name))
    manifest = storage.join(root, "manifest.jsonl")
    storage.write_bytes(manifest, ("\n".join(lines) + "\n").encode())
    return manifest


class SimulatedCrash(Exception):
    """Stands for the process dying while it uploads a shard."""


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, s3_endpoint):
    """(local corpus folder, s3 corpus URL, captured log lines of the S3 runs, what the crashed run left)."""
    tmp = tmp_path_factory.mktemp("object_store")
    local_out = tmp / "local_out"
    curate([_write_inputs(str(tmp / "inputs"))], local_out, _config(), progress=False)
    (local_out / "inputs-root").write_text(str(tmp / "inputs"))  # what state/rows.jsonl names the files by

    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_env(s3_endpoint).items():
            mp.setenv(k, v)
        bucket = make_bucket("corpora")
        manifest = _write_inputs(f"{bucket}/inputs")
        out = f"{bucket}/corpus"
        handler = LogLines()
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.getLogger("songcorpus").setLevel(logging.DEBUG)
        try:
            real_upload = storage.upload

            def crash_on_shard(local: Path, url: str) -> None:
                if str(url).endswith(".tar"):
                    raise SimulatedCrash(url)
                real_upload(local, url)

            mp.setattr(storage, "upload", crash_on_shard)
            with pytest.raises(JobFault, match="SimulatedCrash"):  # the job stops, naming what stopped it
                curate([manifest], out, _config(), progress=False)
            crashed = {"objects": storage.list_files(out), "marker": storage.read_published(out)}
            try:
                from songcorpus.train.data import CorpusView, DataError

                CorpusView(out, "train", ["f0"])
                crashed["loader"] = "read it"
            except DataError as exc:
                crashed["loader"] = str(exc)
            try:
                load_state(out)
                crashed["state"] = "read it"
            except ConfigError as exc:
                crashed["state"] = str(exc)
            mp.setattr(storage, "upload", real_upload)
            result = curate([manifest], out, _config(), progress=False)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
        assert result.out == out
        yield local_out, out, handler.lines, crashed


def test_crash_leaves_no_corpus_and_the_rerun_finishes_it(corpora):
    local_out, out, _, crashed = corpora
    assert crashed["marker"] is None  # the marker is written last: a crashed run publishes nothing
    assert not any(o.endswith(".tar") for o in crashed["objects"])  # the shard PUT never completed
    assert "no published corpus" in crashed["loader"] and "no published corpus" in crashed["state"]
    marker = storage.read_published(out)
    assert {f"shards/shard-train-000000.{g}.tar" for g in ("meta", "tokens", "latents", "audio")} <= set(marker["objects"])
    local = storage.read_published(local_out)["objects"]
    assert {k: v for k, v in marker["objects"].items() if k not in LOCATION_BOUND} == \
        {k: v for k, v in local.items() if k not in LOCATION_BOUND}


def _assert_same_corpus(local_out: Path, out: str) -> None:
    """Every published object of the corpus at ``out`` equals the local one (state names its inputs' URLs)."""
    marker = storage.read_published(out)
    listed = sorted(marker["objects"])
    assert listed == sorted(storage.read_published(local_out)["objects"])
    assert {r.split("/")[0] for r in listed} >= {"shards", "catalog", "state", "codec", "config.yaml"}
    for rel in listed:
        if rel == "catalog.duckdb":
            continue
        data = storage.read_bytes(storage.join(out, rel))
        expected = (local_out / rel).read_bytes()
        if rel == "state/rows.jsonl":  # records where each file was read from: the same, but at its URL
            expected = expected.replace((local_out / "inputs-root").read_text().encode(),
                                        out.replace("/corpus", "/inputs").encode())
        assert data == expected, rel
        assert hashlib.sha256(data).hexdigest() == marker["objects"][rel]["sha256"]
    stored = {storage.relative_to(u, out) for u in storage.list_files(out)}
    from songcorpus.pipelines.job.output_claim import OWN_NAMES  # the output's ownership marker (and lease, while held)

    assert {s for s in stored if not s.startswith(".cache/") and s not in OWN_NAMES} == {*listed, storage.PUBLISHED}
    from songcorpus.pipelines.sinks.catalog import read_funnel

    assert read_funnel(out) == read_funnel(local_out)


def test_s3_corpus_is_byte_identical_to_local(corpora):
    local_out, out, _, _ = corpora
    _assert_same_corpus(local_out, out)


@pytest.fixture(scope="module")
def gs_corpus(corpora):
    """The same inputs curated from gs:// to gs:// (cache included) on a local GCS emulator (tests/gcs_server.py)."""
    from gcs_server import gcs_env, gcs_server
    from gcs_server import make_bucket as make_gs_bucket

    with gcs_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for k, v in gcs_env(endpoint).items():
            mp.setenv(k, v)
        bucket = make_gs_bucket("corpora")
        manifest = _write_inputs(f"{bucket}/inputs")
        out = f"{bucket}/corpus"
        assert curate([manifest], out, _config(), progress=False).out == out
        yield corpora[0], out


def test_gs_corpus_is_byte_identical_to_local(gs_corpus):
    local_out, out = gs_corpus
    assert any("/.cache/results/" in o for o in storage.list_files(out.rsplit("/", 1)[0]))  # the cache is on GCS
    _assert_same_corpus(local_out, out)


def test_loader_reads_gs_shards_as_local(gs_corpus):
    from songcorpus.train.data import BatchBuilder, CorpusView, ShardStream, StepOrder

    local_out, out = gs_corpus
    keys = ["f0", "vocals_tokens", "accompaniment_latents"]
    views = [CorpusView(data, "train", keys, window_s=4.0) for data in (str(local_out), out)]
    assert views[1].index.shards[0].startswith("gs://")
    a, b = (ShardStream(BatchBuilder(v), StepOrder(len(v), seed=3, global_batch=2)).batch(1) for v in views)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_no_credential_in_any_object_or_log(corpora):
    _, out, lines, _ = corpora
    bucket = out.rsplit("/", 1)[0]
    objects = storage.list_files(bucket)
    assert any("/.cache/results/" in o for o in objects) and any(o.endswith(".tar") for o in objects)
    for url in objects:
        data = storage.read_bytes(url)
        assert SECRET.encode() not in data and KEY_ID.encode() not in data, url
    assert lines, "the runs logged nothing: the capture is broken"
    text = "\n".join(lines)
    assert SECRET not in text and KEY_ID not in text


def test_loader_reads_s3_shards_as_local(corpora):
    from songcorpus.train.data import BatchBuilder, CorpusView, ShardStream, StepOrder

    local_out, out, _, _ = corpora
    keys = ["f0", "vocals_tokens", "accompaniment_latents", "reference_tokens"]
    streams = []
    for data in (str(local_out), out):
        view = CorpusView(data, "train", keys, window_s=4.0)
        streams.append(ShardStream(BatchBuilder(view), StepOrder(len(view), seed=3, global_batch=2)))
    assert streams[1].builder.view.index.shards[0].startswith("s3://")
    for step in range(3):
        a, b = streams[0].batch(step), streams[1].batch(step)
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_s3_inputs_are_named_as_local_ones(tmp_path, s3):
    from songcorpus.pipelines.sources.inputs import expand_inputs

    local = tmp_path / "music"
    for song in SONGS:
        shutil.copytree(DEMO_DIR / song, local / "x" / song)
        for f in sorted((DEMO_DIR / song).glob("*.flac")):
            storage.upload(f, f"{s3}/music/x/{song}/{f.name}")
    for local_in, url_in in ((str(local), f"{s3}/music"), (f"{local}/**/mix.flac", f"{s3}/music/**/mix.flac")):
        here = [r.source for r in expand_inputs([local_in], tmp_path / "m")]
        there = expand_inputs([url_in], tmp_path / "m")
        assert [r.source for r in there] == here and here
        assert all(r.path.startswith("s3://") for r in there)


def test_s3_url_with_a_key_in_it_reads_and_is_named_without_it(tmp_path, s3):
    """``s3://KEY:SECRET@bucket/...`` (a secret may hold a raw "/"): read with that key, named and stored without it."""
    from songcorpus.pipelines.sources.inputs import expand_inputs

    clip = DEMO_DIR / "speech_00" / "mix.flac"
    storage.upload(clip, f"{s3}/music/speech_00.flac")
    secret = f"{SECRET}/with+slash"
    given = s3.replace("s3://", f"s3://{KEY_ID}:{secret}@")
    for item in (f"{given}/music", f"{given}/music/speech_00.flac"):
        [rec] = expand_inputs([item], tmp_path / "m")
        assert rec.source == "speech_00.flac" and rec.path == f"{s3}/music/speech_00.flac"
        assert storage.read_bytes(rec.path) == clip.read_bytes()
    with pytest.raises(FileNotFoundError) as err:
        storage.read_bytes(f"{given}/music/nope.flac")
    assert secret not in str(err.value) and KEY_ID not in str(err.value)


def _hf_dataset(clips: list[str]):
    import datasets

    files = [DEMO_DIR / c / "mix.flac" for c in clips]
    features = datasets.Features({"audio": datasets.Audio(), "title": datasets.Value("string")})
    audio = [{"bytes": f.read_bytes(), "path": f"{c}.flac"} for c, f in zip(clips, files, strict=True)]
    ds = datasets.Dataset.from_dict({"audio": audio, "title": clips}, features=features)
    return ds, files


@pytest.mark.parametrize("layout", ["parquet", "save_to_disk"])
def test_hf_dataset_on_s3_is_read_row_by_row(tmp_path, s3, layout, monkeypatch):
    from songcorpus.io import hf_remote
    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.pipelines.sources.inputs import expand_inputs
    from songcorpus.transforms.stages.ingest import IngestStage

    clips = ["speech_00", "speech_01", "speech_02"]
    ds, files = _hf_dataset(clips)
    local = tmp_path / "ds"
    if layout == "parquet":  # the Hub's layout: data/<split>-NNNNN-of-NNNNN.parquet
        (local / "data").mkdir(parents=True)
        ds.to_parquet(str(local / "data" / "train-00000-of-00001.parquet"))
        url = f"hf:{s3}/my_ds"
    else:
        ds.save_to_disk(str(local))
        url = f"{s3}/my_ds"  # found by its state.json
    for f in storage.list_files(str(local)):
        storage.upload(Path(f), f"{s3}/my_ds/{storage.relative_to(f, str(local))}")

    read = {"bytes": 0}
    real_open = storage.open_read

    def counting_open(u, exact=False):
        fh = real_open(u, exact)
        inner = fh.read

        def read_counted(*a):
            data = inner(*a)
            read["bytes"] += len(data)
            return data

        fh.read = read_counted
        return fh

    monkeypatch.setattr(storage, "open_read", counting_open)
    records = expand_inputs([url], tmp_path / "materialised")
    monkeypatch.setattr(storage, "open_read", real_open)
    audio_bytes = sum(f.stat().st_size for f in files)
    if layout == "parquet":  # column pruning: the driver reads the footer (pyarrow fetches its last 64 KiB) and the
        assert read["bytes"] < 70_000 < audio_bytes / 5, read  # small columns, never the audio column
    split = "/train" if layout == "parquet" else ""
    assert [r.source for r in records] == [f"hf:my_ds{split}#{i}" for i in range(3)]
    assert [r.metadata["title"] for r in records] == clips
    assert all(hf_remote.is_row_ref(r.path) for r in records) and not (tmp_path / "materialised").exists()

    stage = IngestStage(load_config(), ArtefactStore(tmp_path / "cache"))
    for rec, f in zip(records, files, strict=True):
        row = {"track": rec.to_dict(), "results": {}, "outcome": None}
        assert stage.input_identity(row) == hashlib.sha256(f.read_bytes()).hexdigest()
        out = stage.process_one(row)
        assert out["source_sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert out["duration_s"] == pytest.approx(__import__("soundfile").info(str(f)).duration, abs=0.01)


def test_training_provenance_is_the_same_from_s3(corpora):
    from songcorpus.train.data import CorpusView
    from songcorpus.train.trainer import provenance

    local_out, out, _, _ = corpora
    here = provenance(CorpusView(str(local_out), "train", ["f0"]), str(local_out))
    there = provenance(CorpusView(out, "train", ["f0"]), out)  # from the marker: no shard is downloaded to hash it
    assert there["corpus_sha256"] == here["corpus_sha256"] and there["shards"] == here["shards"]


def test_rebuild_on_s3_republishes_without_uploading_shards(corpora, monkeypatch):
    """It rewrites the S3 corpus the later tests read (with the same config, so with the same bytes)."""
    from songcorpus.pipelines.curate import rebuild

    _, out, _, _ = corpora
    before = storage.read_published(out)["objects"]
    uploads: list[str] = []
    real = storage.upload
    monkeypatch.setattr(storage, "upload", lambda local, url: (uploads.append(str(url)), real(local, url)))
    result = rebuild(out, _config(), progress=False)
    assert result.out == out and result.counts() == {"accepted": 1, "rejected": 1}
    after = storage.read_published(out)["objects"]
    assert sorted(after) == sorted(before)
    assert {k: v for k, v in after.items() if k != "catalog.duckdb"} == \
        {k: v for k, v in before.items() if k != "catalog.duckdb"}
    assert not [u for u in uploads if u.endswith(".tar")]  # the stored shard was checked and kept


def test_bad_objects_fail_by_their_url(tmp_path, s3):
    """A missing, empty or undecodable object fails with the funnel's code, named by its URL (never by the
    local temporary copy ingest decodes)."""
    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.io.audio import DecodeError
    from songcorpus.transforms.stages.ingest import IngestStage

    storage.write_bytes(f"{s3}/empty.wav", b"")
    storage.write_bytes(f"{s3}/text.mp3", b"not audio at all, a text file with an .mp3 name\n" * 40)
    stage = IngestStage(load_config(), ArtefactStore(tmp_path / "cache"))
    for name, code in (("nope.flac", "missing"), ("empty.wav", "empty"), ("text.mp3", "undecodable")):
        row = {"track": {"path": f"{s3}/{name}", "source": name}, "results": {}, "outcome": None}
        with pytest.raises(DecodeError) as err:
            stage.input_identity(row)
            stage.process_one(row)
        assert err.value.code == code
        assert f"{s3}/{name}" in str(err.value) and "songcorpus-input-" not in str(err.value), str(err.value)


def test_report_reads_a_published_corpus_url_and_refuses_an_unpublished_one(corpora, capsys):
    from songcorpus.cli import main

    _, out, _, _ = corpora
    assert main(["report", out]) == 0
    text = capsys.readouterr().out
    assert f"funnel for {out}" in text and "speech_dominant" in text and "in 1 shards" in text, text
    assert main(["report", out.rsplit("/", 1)[0] + "/inputs"]) == 2
    assert "no published corpus" in capsys.readouterr().err
