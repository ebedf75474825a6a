"""Ray past one machine: a local run never joins a cluster the machine knows of, and a real two-node cluster
(songcorpus/testing/ray_cluster.py: two ``ray start`` nodes on 127.0.0.1, each with its own temp dir) curates and trains.

On the cluster every input, cache entry and output is an s3:// object on a local moto server (tests/s3_server.py),
so the nodes share no folder: what one node computes reaches the other and the driver through the store.
Checked there: ``curate --address`` publishes exactly the corpus a private local Ray publishes (run while the
cluster is up and ``$RAY_ADDRESS`` names it), from S3 to S3 and from gs:// to gs:// (a local GCS emulator,
tests/gcs_server.py, whose environment every node is given); killing the worker node mid-run (and adding a fresh one, as an
autoscaler would) still ends with those bytes, every shard once; ``train --launcher ray --address`` trains 2
Ray Train workers on the cluster's corpus, read from S3, and checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from songcorpus.io.ray_address import driver_node_ip
from songcorpus.pipelines.engines.ray_runner import ray_init_args
from songcorpus.schemas.config import load_config

from conftest import DEMO_DIR

SONGS = ("song_03", "song_01", "speech_00")  # two songs with stems (27 s, 45 s), one clip the speech gate rejects
# where the inputs were read from; DuckDB's file bytes; the config, which records the engine (address) and cache
LOCATION_BOUND = ("state/rows.jsonl", "catalog.duckdb", "config.yaml")
STALE_MESSAGE = "When connecting to an existing cluster, num_cpus and num_gpus must not be provided"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", **extra}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "songcorpus.cli", *args]


def test_driver_names_its_node_on_a_loopback_cluster_and_starts_a_private_ray_otherwise():
    assert driver_node_ip("127.0.0.1:6379") == "127.0.0.1"
    assert driver_node_ip("localhost:6379") == "127.0.0.1"
    assert driver_node_ip("[::1]:6379") == "127.0.0.1"
    assert driver_node_ip("10.0.0.5:6379") is None  # Ray finds the interface that reaches the head
    assert driver_node_ip("ray://127.0.0.1:10001") is None  # Ray Client: the driver runs on the cluster
    assert driver_node_ip("10.0.0.5:6379", "10.0.0.9") == "10.0.0.9"
    local = ray_init_args(load_config(overrides={"engine": {"workers": 3}}))
    assert local["address"] == "local" and local["num_cpus"] == 3 and "_node_ip_address" not in local
    joined = ray_init_args(load_config(overrides={"engine": {"ray_address": "127.0.0.1:6379"}}))
    assert joined["address"] == "127.0.0.1:6379" and joined["_node_ip_address"] == "127.0.0.1"
    assert "num_cpus" not in joined  # Ray refuses them when joining a cluster


def test_local_curate_ignores_a_stale_ray_current_cluster(tmp_path):
    """A killed ``ray start`` leaves ``ray_current_cluster`` behind; a plain ``ray.init(num_cpus=...)`` then
    tries to join it and fails (the control below), ``songcorpus curate`` starts its own Ray. ``RAY_TMPDIR``
    puts Ray's default folder in tmp_path, so the planted file misleads no one else's Ray on this machine."""
    ray_tmp = Path(f"/tmp/sc-stale-{os.getpid()}")  # short: Ray's socket paths live under it
    (ray_tmp / "ray").mkdir(parents=True, exist_ok=True)
    try:
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # nothing listens on port 1
        env = _env(RAY_TMPDIR=str(ray_tmp))
        env.pop("RAY_ADDRESS", None)
        control = subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=1)"], env=env,
                                 capture_output=True, text=True, timeout=300)
        assert control.returncode != 0 and STALE_MESSAGE in control.stderr, control.stderr[-2000:]
        run = subprocess.run(_cli("curate", str(DEMO_DIR / "speech_00" / "mix.flac"), "--out", str(tmp_path / "out"),
                                  "--workers", "1", "--no-progress"), env=env, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "curated 1 inputs" in run.stdout and "rejected" in run.stdout
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# a real two-node cluster, sharing no folder: inputs, cache and outputs on S3
# ---------------------------------------------------------------------------------------------


def _upload_inputs(bucket: str) -> str:
    """The demo files of SONGS and a manifest naming them relatively, under ``bucket/inputs``."""
    from songcorpus.io import storage

    lines = [line for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines()
             if json.loads(line)["path"].split("/")[0] in SONGS]
    for song in SONGS:
        for f in sorted((DEMO_DIR / song).glob("*.flac")):
            storage.upload(f, storage.join(bucket, "inputs", song, f.name))
    manifest = storage.join(bucket, "inputs", "manifest.jsonl")
    storage.write_bytes(manifest, ("\n".join(lines) + "\n").encode())
    return manifest


def _curate(manifest: str, bucket: str, name: str, *extra: str) -> list[str]:
    return _cli("curate", manifest, "--out", f"{bucket}/{name}", "--cache-dir", f"{bucket}/cache-{name}",
                "--workers", "2", "--no-progress", *extra)


def _published(out: str) -> dict[str, str]:
    """The published corpus: object name -> sha256, less what names where the inputs were read from."""
    from songcorpus.io import storage

    marker = storage.read_published(out)
    assert marker is not None, f"{out} published nothing"
    return {k: v["sha256"] if isinstance(v, dict) else v for k, v in marker["objects"].items()
            if k not in LOCATION_BOUND}


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory, s3_endpoint):
    """Curate SONGS four ways (private local Ray while the cluster runs and $RAY_ADDRESS names it; the
    two-node cluster, on S3 and on GCS; the cluster with its worker node killed mid-run), then train on the
    cluster's corpus."""
    from gcs_server import gcs_env, gcs_server
    from gcs_server import make_bucket as make_gs_bucket
    from s3_server import make_bucket, s3_env

    from songcorpus.io import storage
    from songcorpus.testing.ray_cluster import LocalCluster

    tmp = tmp_path_factory.mktemp("ray_cluster")
    s3 = s3_env(s3_endpoint)
    found: dict = {}
    with gcs_server() as gs_endpoint, pytest.MonkeyPatch.context() as mp:
        stores = {**s3, **gcs_env(gs_endpoint)}  # the nodes' environment: both stores' endpoints
        for k, v in stores.items():
            mp.setenv(k, v)
        bucket = make_bucket("ray-cluster")
        manifest = _upload_inputs(bucket)
        gs_bucket = make_gs_bucket("ray-cluster")
        gs_manifest = _upload_inputs(gs_bucket)
        env = _env(**stores)
        with LocalCluster([1, 1], env=stores) as cluster:
            local = subprocess.run(_curate(manifest, bucket, "local"), capture_output=True, text=True,
                                   env={**env, "RAY_ADDRESS": cluster.address}, timeout=1200)
            assert local.returncode == 0, local.stderr[-3000:]

            t = time.monotonic()
            joined = subprocess.run(_curate(manifest, bucket, "cluster", "--address", cluster.address),
                                    capture_output=True, text=True, env=env, timeout=1200)
            assert joined.returncode == 0, joined.stderr[-3000:]
            found["cluster_s"] = time.monotonic() - t

            on_gs = subprocess.run(_curate(gs_manifest, gs_bucket, "cluster", "--address", cluster.address),
                                   capture_output=True, text=True, env=env, timeout=1200)
            assert on_gs.returncode == 0, on_gs.stderr[-3000:]
            found["gs"] = _published(f"{gs_bucket}/cluster")
            found["gs_cache"] = storage.list_files(f"{gs_bucket}/cache-cluster")

            # kill the worker node once the first input's analysis is stored (both nodes are then busy)
            out = f"{bucket}/killed"
            cmd = _curate(manifest, bucket, "killed", "--address", cluster.address)
            with open(tmp / "killed.log", "w") as log:
                proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
                results = f"{bucket}/cache-killed/results/ingest"
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline and proc.poll() is None:
                    if storage.exists(results) and storage.list_files(results):
                        break
                    time.sleep(0.5)
                assert proc.poll() is None, "the run ended before the node could be killed"
                cluster.kill_node(1)
                found["published_at_kill"] = storage.read_published(out)
                cluster.add_node(1)  # a replacement node, as an autoscaler would start
                found["first_rc"] = proc.wait(timeout=1200)  # 0: Ray retried the lost node's work itself
            found["killed_log"] = (tmp / "killed.log").read_text()[-3000:]
            if found["first_rc"] != 0:  # Ray could not retry: the same command again resumes from the cache
                rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
                assert rerun.returncode == 0, rerun.stderr[-3000:]

            cfg = tmp / "tiny.yaml"
            cfg.write_text("model: {name: samuel, base_channels: 8, time_dim: 16, heads: 2}\n"
                           "data: {num_workers: 0, window_s: 4.0}\noptim: {warmup_steps: 2}\nglobal_batch: 4\n"
                           "steps: 4\ncheckpoint: {every: 2, keep: 2}\n")
            found["train"] = subprocess.run(
                _cli("train", "--model", "samuel", "--data", f"{bucket}/cluster", "--out", str(tmp / "run"),
                     "--config", str(cfg), "--launcher", "ray", "--workers", "2", "--address", cluster.address,
                     "--no-progress"), capture_output=True, text=True, env=env, timeout=1200)
        found.update(bucket=bucket, run=tmp / "run", local=_published(f"{bucket}/local"),
                     cluster=_published(f"{bucket}/cluster"), killed=_published(out))
        yield found


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's cluster fixture runs 4 curates and a fit
def test_two_node_curate_publishes_the_local_corpus(cluster_runs):
    local, joined = cluster_runs["local"], cluster_runs["cluster"]
    assert any(k.startswith("shards/") and k.endswith(".tar") for k in local)
    assert joined == local


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's cluster fixture runs 4 curates and a fit
def test_two_node_curate_from_and_to_gcs_publishes_the_local_corpus(cluster_runs):
    assert any("/results/" in o for o in cluster_runs["gs_cache"])  # the nodes' cache is on GCS too
    assert cluster_runs["gs"] == cluster_runs["local"]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's cluster fixture runs 4 curates and a fit
def test_killing_a_worker_node_mid_run_ends_with_the_same_bytes(cluster_runs):
    import io

    import pyarrow.parquet as pq

    from songcorpus.io import storage

    assert cluster_runs["published_at_kill"] is None  # the node died before the corpus was published
    assert cluster_runs["killed"] == cluster_runs["local"], cluster_runs["killed_log"]
    out = f"{cluster_runs['bucket']}/killed/catalog"
    windows = pq.read_table(io.BytesIO(storage.read_bytes(f"{out}/windows.parquet"))).to_pydict()
    tracks = pq.read_table(io.BytesIO(storage.read_bytes(f"{out}/tracks.parquet"))).to_pydict()
    keys = windows["key"]  # every window once, in one shard, as many as the tracks say
    assert len(keys) == len(set(keys)) == sum(tracks["n_windows"]) > 0
    shards = [k for k in cluster_runs["killed"] if k.startswith("shards/") and k.endswith(".tar")]
    assert sorted(set(windows["shard"])) == sorted({k.split("/")[-1].split(".")[0] for k in shards})  # families


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's cluster fixture runs 4 curates and a fit
def test_ray_train_on_the_two_node_cluster_trains_and_checkpoints(cluster_runs):
    from songcorpus.train.checkpoint import latest_checkpoint

    train = cluster_runs["train"]
    assert train.returncode == 0, train.stderr[-3000:]
    assert "trained samuel to step 4" in train.stdout
    assert latest_checkpoint(cluster_runs["run"])[0] == 4


def test_ray_tasks_write_the_shards_the_driver_would(tmp_path, monkeypatch):
    """Ray's shard writer: one task per planned shard, in Ray's worker processes; the driver only merges the
    catalog parts (its own ``write_planned_shard`` is patched to fail, and nothing fails)."""
    import ray

    from songcorpus.io.artefacts import ArtefactStore
    from songcorpus.pipelines.corpus import planned_shards as corpus
    from songcorpus.pipelines.corpus.planned_shards import write_shards_here
    from songcorpus.pipelines.engines import ray_runner
    from songcorpus.pipelines.engines.ray_runner import ray_shard_writer
    from songcorpus.schemas.config import load_config

    from conftest import shard_plans

    store = ArtefactStore(tmp_path / "store")
    plans = shard_plans(store)
    here = sorted(write_shards_here(plans, tmp_path / "here", store, False), key=lambda p: p["shard"])
    for module in (corpus, ray_runner):  # Ray's workers import their own, unpatched copies
        monkeypatch.setattr(module, "write_planned_shard", lambda *a, **k: pytest.fail("the driver wrote a shard"))
    try:
        writer = ray_shard_writer(load_config(overrides={"engine": {"name": "ray", "workers": 2}}))
        there = sorted(writer(plans, tmp_path / "there", store, False), key=lambda p: p["shard"])
    finally:
        ray.shutdown()
    assert there == here
    files = sorted(p.name for p in (tmp_path / "here").glob("*.tar"))
    assert files == sorted(f"{plan.name}.{g}.tar" for plan in plans for g in ("meta", "audio"))
    assert sorted(p.name for p in (tmp_path / "there").glob("*.tar")) == files
    for name in files:
        assert (tmp_path / "there" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
