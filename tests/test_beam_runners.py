"""The Beam runner past one process: Beam's portable path (a job service and an external SDK worker pool, each
its own process, on 127.0.0.1) and Beam's Dask runner on a ``dask.distributed`` LocalCluster (worker processes).

Fast checks: the runner's options, and shards written by workers in other processes byte for byte the ones the
driver writes in process, with the same catalog parts. Slow check (``-m slow``): one small corpus (a demo song
and a spoken clip) curated on every engine gives byte-identical shards, catalog and state.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.corpus.planned_shards import write_shards_here
from songcorpus.pipelines.curate import curate
from songcorpus.pipelines.engines.beam_runner import DASK_RUNNER, beam_shard_writer, pipeline_flags
from songcorpus.pipelines.engines.beam_services import portable_services
from songcorpus.schemas.config import load_config

from conftest import DEMO_DIR, output_files, shard_plans


@pytest.fixture(scope="module")
def portable_flags(tmp_path_factory) -> Iterator[list[str]]:
    """Beam options for a job service + external worker pool started for this module (separate processes)."""
    with portable_services(tmp_path_factory.mktemp("beam_services")) as flags:
        yield flags


@pytest.fixture(scope="module")
def dask_flags() -> Iterator[list[str]]:
    """Beam options for the Dask runner on a two-process LocalCluster bound to 127.0.0.1."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.WARNING) as cluster:
        yield ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]


def beam_config(flags: list[str], **overrides):
    return load_config(overrides={"engine": {"name": "beam", "workers": 2, "beam_options": flags}, **overrides})


def test_pipeline_flags_default_expand_and_pass_through():
    direct = pipeline_flags(beam_config([]))
    assert direct == ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    one = pipeline_flags(load_config(overrides={"engine": {"name": "beam", "workers": 1}}))
    assert one == ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    dask = pipeline_flags(beam_config(["--runner=DaskRunner", "--dask_client_address=127.0.0.1:1"]))
    # one Create element per Dask partition: its default packs 128 into one partition, i.e. one worker
    assert dask == [f"--runner={DASK_RUNNER}", "--dask_client_address=127.0.0.1:1", "--dask_partition_size=1"]
    assert pipeline_flags(beam_config(["--runner=DaskRunner", "--dask_npartitions=8"]))[-1] == "--dask_npartitions=8"
    portable = ["--runner=PortableRunner", "--job_endpoint=127.0.0.1:8099", "--environment_type=EXTERNAL",
                "--environment_config=127.0.0.1:50000"]
    assert pipeline_flags(beam_config(portable)) == portable


@pytest.mark.parametrize("runner", ["portable", "dask"])
def test_workers_in_other_processes_write_the_shards_the_driver_would(runner, request, tmp_path):
    flags = request.getfixturevalue(f"{runner}_flags")
    store = ArtefactStore(tmp_path / "store")
    plans = shard_plans(store)
    assert len(plans) == 3
    here = sorted(write_shards_here(plans, tmp_path / "here", store, False), key=lambda p: p["shard"])
    there = sorted(beam_shard_writer(beam_config(flags))(plans, tmp_path / "there", store, False),
                   key=lambda p: p["shard"])
    assert there == here  # catalog parts: shard rows and windows rows (offsets into the shard) alike
    assert [w["index_in_shard"] for w in here[0]["windows"]] == [0, 1, 2]
    files = sorted(p.name for p in (tmp_path / "here").glob("*.tar"))
    assert files == sorted(f"{plan.name}.{g}.tar" for plan in plans for g in ("meta", "audio"))
    assert sorted(p.name for p in (tmp_path / "there").glob("*.tar")) == files
    for name in files:
        assert (tmp_path / "there" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    assert list((store.root / "tmp").iterdir()) == []  # the job folder (inputs, results) is gone


def test_workers_upload_shards_to_an_object_store(s3, tmp_path):
    """No shared disk: DirectRunner worker processes fetch the members from an S3 cache into their own mirrors
    and upload the shards to the S3 output; bytes and catalog parts are the ones written locally."""
    from songcorpus.io import storage

    store = ArtefactStore(f"{s3}/cache")
    plans = shard_plans(store)
    here = sorted(write_shards_here(plans, tmp_path / "here", store, False), key=lambda p: p["shard"])
    there = sorted(beam_shard_writer(beam_config([]))(plans, f"{s3}/out/shards", store, False),
                   key=lambda p: p["shard"])
    assert there == here
    files = sorted(f["file"] for part in here for f in part["files"])
    assert [storage.basename(u) for u in storage.list_files(f"{s3}/out/shards")] == files
    for name in files:
        assert storage.read_bytes(f"{s3}/out/shards/{name}") == (tmp_path / "here" / name).read_bytes()
    assert storage.list_files(f"{s3}/cache/tmp") == []  # the job folder on the store is gone


# ---- every engine, one corpus (slow) ------------------------------------------------------------------------

def _ray_two_nodes(request: pytest.FixtureRequest) -> dict:
    """Ray on a two-node cluster (conftest's ``ray_two_nodes``: two ``ray start`` nodes on 127.0.0.1, own temp
    dirs)."""
    return {"name": "ray", "workers": 2, "ray_address": request.getfixturevalue("ray_two_nodes")}


# Each engine's ``engine`` config section, given the test's ``request`` (so it can start the fixture it needs).
# Every corpus is compared with the DirectRunner's; to add an engine, add a row.
ENGINES: dict[str, Callable[[pytest.FixtureRequest], dict]] = {
    "ray-local": lambda request: {"name": "ray", "workers": 2},
    "beam-portable": lambda request: {"name": "beam", "workers": 2,
                                      "beam_options": request.getfixturevalue("portable_flags")},
    "beam-dask": lambda request: {"name": "beam", "workers": 2, "beam_options": request.getfixturevalue("dask_flags")},
    "ray-two-node": _ray_two_nodes,
}


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory) -> Path:
    """A demo song (accepted, windows in a shard) and a spoken clip (rejected), with a manifest of their own."""
    root = tmp_path_factory.mktemp("two_inputs")
    lines = [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines() if line.strip()]
    keep = [r for r in lines if r["path"].split("/")[0] in ("song_03", "speech_00")]
    for r in keep:
        shutil.copytree(DEMO_DIR / r["path"].split("/")[0], root / r["path"].split("/")[0])
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    return root / "manifest.jsonl"


SMALL = {"windows": {"length_s": 4.0}}


@pytest.fixture(scope="module")
def direct_corpus(two_inputs, tmp_path_factory) -> Path:
    """The reference: the two inputs curated on Beam's DirectRunner (two worker processes)."""
    out = tmp_path_factory.mktemp("beam_direct")
    curate([str(two_inputs)], out, beam_config([], **SMALL), progress=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_writes_the_same_corpus(engine, request, two_inputs, direct_corpus, tmp_path):
    out = tmp_path / engine
    config = load_config(overrides={"engine": ENGINES[engine](request), **SMALL})
    curate([str(two_inputs)], out, config, progress=False)
    reference, got = output_files(direct_corpus), output_files(out)
    assert sorted(got) == sorted(reference)
    assert [name for name in reference if got[name] != reference[name]] == []
    assert any(name.endswith(".tar") for name in got)


@pytest.mark.slow
def test_beam_curates_onto_an_object_store_with_no_shared_disk(s3, two_inputs, direct_corpus):
    """Output and cache on S3: the DirectRunner's worker processes read the cache and upload the shards
    themselves; the published corpus is the local one, object for object."""
    from songcorpus.io import storage

    out = f"{s3}/corpus"
    curate([str(two_inputs)], out, beam_config([], **SMALL), progress=False)
    marker = storage.read_published(out)
    assert sorted(marker["objects"]) == sorted(storage.read_published(direct_corpus)["objects"])
    assert any(rel.endswith(".tar") for rel in marker["objects"])
    for rel in sorted(marker["objects"]):
        if rel != "catalog.duckdb":  # DuckDB's file is not byte-stable; its Parquet sources are compared
            assert storage.read_bytes(storage.join(out, rel)) == (direct_corpus / rel).read_bytes(), rel
