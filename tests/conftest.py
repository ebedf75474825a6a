"""Shared fixtures: curated demo corpora on both engines (built once per session), bad-input folders."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import soundfile as sf
import soxr

from songcorpus.pipelines.curate import curate
from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.schemas.config import load_config

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

DEMO_DIR = Path(demo_manifest()).parent
MUSIC_CLIP = DEMO_DIR / "song_00" / "mix.flac"  # a song: its windows need vocal activity


# The fast tier (`python -m pytest -m fast`, the edit loop): modules that test one component on small data they make
# (no curated demo corpus, no curate or training run, no engine start); a test of theirs that asks for a curated demo
# fixture is left out. The whole default suite is what CI runs.
FAST_MODULES = {
    "test_accelerator", "test_augment", "test_caption", "test_config", "test_content_alignment", "test_environment",
    "test_import_graph",
    "test_stage_contract", "test_jit_cache", "test_key", "test_lint", "test_models", "test_optim", "test_shard_families",
    "test_sources", "test_splits", "test_state_rows", "test_storage", "test_windows", "test_stems", "test_stages",
    "test_bounded_driver", "test_eval_metrics", "test_near_duplicates", "test_row_shape", "test_progress",
    "test_notebooks", "test_f0_on_mix",
    "test_view_queries", "test_view_server",
}
CURATED_FIXTURES = {"demo_ray", "demo_beam", "demo_elsewhere", "ray_two_nodes"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if (module in FAST_MODULES and not item.get_closest_marker("slow")
                and not CURATED_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.fast)


def curate_with(engine: str, inputs: list[str], out: Path, workers: int = 2, **overrides) -> Path:
    config = load_config(overrides={"engine": {"name": engine, "workers": workers}, **overrides})
    curate(inputs, out, config, progress=False)
    return out


def tracks(out: Path) -> list[dict]:
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        cur = con.execute("SELECT * FROM tracks ORDER BY source")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def output_files(out: Path) -> dict[str, bytes]:
    """Everything that must be byte-identical between engines and runs."""
    files = {}
    for sub in ("shards", "catalog"):
        for p in sorted((out / sub).iterdir()):
            files[f"{sub}/{p.name}"] = p.read_bytes()
    files["state/rows.jsonl"] = (out / "state" / "rows.jsonl").read_bytes()
    return files


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: the small FFTs of Griffin-Lim and the EQ slow down several-fold
    when torch threads fight over 2 shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_ray(tmp_path_factory) -> Path:
    return curate_with("ray", [demo_manifest()], tmp_path_factory.mktemp("demo_ray"))


@pytest.fixture(scope="session")
def demo_elsewhere(tmp_path_factory) -> Path:
    """The demo copied to another folder (another depth, another name) and curated from there on Ray."""
    copy = tmp_path_factory.mktemp("moved") / "some" / "other" / "place"
    shutil.copytree(DEMO_DIR, copy)
    return curate_with("ray", [str(copy / Path(demo_manifest()).name)], tmp_path_factory.mktemp("demo_elsewhere"))


@pytest.fixture(scope="session")
def demo_beam(tmp_path_factory) -> Path:
    """On one in-process worker: Beam's multi-process workers are covered by tests/test_beam_runners.py."""
    return curate_with("beam", [demo_manifest()], tmp_path_factory.mktemp("demo_beam"), workers=1)


def shard_plans(store) -> list:
    """Seven samples of two members in content-addressed files of ``store``, packed three to a shard: three
    shard plans, for the tests of the engines' shard writers."""
    from songcorpus.pipelines.corpus.shard_plans import ShardPlan, plan_digest, plan_shards
    from songcorpus.pipelines.sinks.shard_writer import Sample

    config = load_config(overrides={"shards": {"max_samples": 3}})
    samples, meta = [], {}
    for i in range(7):
        key = f"t{i:020x}_{i % 3:04d}"
        members = {"json": store.put_blob(json.dumps({"key": key}).encode(), ".json"),
                   "mix.flac": store.put_blob(bytes(range(256)) * (i + 1), ".flac")}
        samples.append(Sample(key, {k: store.root / rel for k, rel in members.items()}))
        meta[key] = {"members": members, "source": f"song_{i}.flac", "track_id": key.split("_")[0],
                     "split": "train", "start_s": 1.5 * i, "duration_s": 4.0, "reference_key": None,
                     "augmentation": None if i % 2 else {"song_op": {"applied": False}}}
    return [ShardPlan(name, "train", plan_digest(group), None, [{"key": s.key, **meta[s.key]} for s in group])
            for name, group in plan_shards(samples, "train", config)]


def forbid_analysis_stages(monkeypatch) -> None:
    """Make any analysis stage that runs in this process fail the test; the samples phase (which reads its cached
    samples through ``run_stage``) still runs. Engines whose workers run in this process (one Beam worker, in
    memory) are then checked stage by stage."""
    from songcorpus.pipelines.engines import executor

    real_run_stage = executor.run_stage

    def samples_only(stage, row, ready):
        if stage.name != "samples":
            pytest.fail(f"an analysis stage ran: {stage.name}")
        return real_run_stage(stage, row, ready)

    monkeypatch.setattr(executor, "run_stage", samples_only)


def ingested_excerpt(store, folder: Path, clip: str, start_s: float, end_s: float) -> dict:
    """A row whose input is ``start_s``-``end_s`` of the demo file ``clip`` (e.g. "song_00/mix.flac"),
    written to ``folder`` and ingested into ``store``: the input of a stage test that needs a short clip."""
    from songcorpus.transforms.stages.ingest import IngestStage

    x, rate = sf.read(DEMO_DIR / clip, dtype="float32")
    path = folder / (clip.replace("/", "_"))
    sf.write(path, x[int(start_s * rate):int(end_s * rate)], rate)
    row = {"track": {"path": str(path)}, "results": {}, "outcome": None}
    row["results"]["ingest"] = IngestStage(load_config(), store).process_one(row)
    return row


class LogLines(logging.Handler):
    """Every log record, formatted: what a test greps a run's log for."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def music(seconds: float | None = None) -> tuple[np.ndarray, int]:
    x, rate = sf.read(str(MUSIC_CLIP), dtype="float32")
    if seconds is not None:
        x = x[: int(seconds * rate)]
    return x, rate


def song_folder(folder: Path, name: str = "clip.flac", seconds: float = 12.0) -> Path:
    """``folder`` holding one short song (the first ``seconds`` of the demo's song_00 mix): the smallest input that
    is accepted and cut into 4 s windows, for the tests that curate it again and again."""
    folder.mkdir(parents=True, exist_ok=True)
    x, rate = music(seconds)
    sf.write(folder / name, x, rate, subtype="PCM_16")
    return folder


# expected (status, reason_code) for each bad or odd input; None code = accepted
BAD_INPUTS: dict[str, tuple[str, str | None]] = {
    "empty.wav": ("failed", "empty"),
    "truncated.flac": ("failed", "corrupt"),
    "truncated.wav": ("rejected", "truncated"),
    "random_bytes.wav": ("failed", "undecodable"),
    "text.mp3": ("failed", "undecodable"),
    "lying_header.wav": ("rejected", "truncated"),
    "nonfinite.wav": ("rejected", "nonfinite_samples"),
    "silence.wav": ("rejected", "digital_silence"),
    "near_silent_noise.wav": ("rejected", "too_quiet"),  # -70 dBFS noise: -67 LUFS
    "near_silent_tone.wav": ("rejected", "too_quiet"),  # a 1e-4 sine: every block under BS.1770's -70 LUFS gate
    "quiet_song.flac": ("accepted", None),  # a song at -25 dB gain (-42 LUFS) is quiet, not silent
    "very_short.wav": ("rejected", "too_short"),
    "hour_long.wav": ("rejected", "too_long"),
    "surround_5_1.wav": ("accepted", None),
    "rate_8k.wav": ("rejected", "low_source_rate"),
    "rate_192k.flac": ("accepted", None),
    "odd ‘名前’ \"quoted\" it's.flac": ("accepted", None),
    "zz_duplicate.flac": ("rejected", "duplicate"),
    "fake_dir.wav": ("failed", "not_a_file"),
    "dangling.wav": ("failed", "missing"),
    "unreadable.wav": ("failed", "unreadable"),
}


def make_bad_inputs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    x, rate = music(12.0)
    rng = np.random.default_rng(7)

    (root / "empty.wav").write_bytes(b"")
    full = MUSIC_CLIP.read_bytes()
    (root / "truncated.flac").write_bytes(full[: len(full) // 2])
    sf.write(root / "whole.wav", x, rate, subtype="PCM_16")
    whole = (root / "whole.wav").read_bytes()
    (root / "whole.wav").unlink()
    (root / "truncated.wav").write_bytes(whole[: len(whole) // 3])
    lying = bytearray(whole)
    at = lying.index(b"data")
    lying[at + 4 : at + 8] = (len(whole) * 4).to_bytes(4, "little")
    (root / "lying_header.wav").write_bytes(bytes(lying))
    (root / "random_bytes.wav").write_bytes(rng.bytes(100_000))
    (root / "text.mp3").write_text("this is not audio, it is a text file with an .mp3 name\n" * 50)
    bad = x.copy()
    bad[1000:1100] = np.nan
    bad[5000] = np.inf
    sf.write(root / "nonfinite.wav", bad, rate, subtype="FLOAT")
    sf.write(root / "silence.wav", np.zeros(rate * 8, np.float32), rate, subtype="PCM_16")
    sf.write(root / "near_silent_noise.wav", np.random.default_rng(70).normal(0, 10 ** (-70 / 20), rate * 8), rate,
             subtype="PCM_16")
    sf.write(root / "near_silent_tone.wav", 1e-4 * np.sin(2 * np.pi * 440 * np.arange(rate * 8) / rate), rate,
             subtype="PCM_16")
    sf.write(root / "quiet_song.flac", x * 10 ** (-25 / 20), rate, subtype="PCM_16")
    sf.write(root / "very_short.wav", x[: rate // 2], rate, subtype="PCM_16")
    with sf.SoundFile(root / "hour_long.wav", "w", samplerate=8000, channels=1, subtype="PCM_16") as fh:
        block = (rng.normal(0, 0.05, 8000 * 60)).astype(np.float32)
        for _ in range(60):
            fh.write(block)
    sf.write(root / "surround_5_1.wav", np.stack([x * g for g in (0.5, 0.45, 0.4, 0.3, 0.35, 0.3)], axis=1), rate,
             subtype="PCM_24")
    sf.write(root / "rate_8k.wav", soxr.resample(x, rate, 8000), 8000, subtype="PCM_16")
    sf.write(root / "rate_192k.flac", soxr.resample(x * 0.9, rate, 192000), 192000, subtype="PCM_24")
    odd = root / "odd ‘名前’ \"quoted\" it's.flac"
    sf.write(odd, x * 0.8, rate, subtype="PCM_16")
    shutil.copyfile(odd, root / "zz_duplicate.flac")
    (root / "fake_dir.wav").mkdir()
    os.symlink(root / "does-not-exist.flac", root / "dangling.wav")
    unreadable = root / "unreadable.wav"
    if os.geteuid() == 0:
        # root reads any mode-000 file; /proc/self/mem opens but every read at offset 0 fails with EIO
        os.symlink("/proc/self/mem", unreadable)
    else:
        shutil.copyfile(root / "very_short.wav", unreadable)
        unreadable.chmod(0)
    return root


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> Path:
    return make_bad_inputs(tmp_path_factory.mktemp("bad") / "inputs")


@pytest.fixture(scope="session")
def ray_two_nodes():
    """The address of a two-node Ray cluster on 127.0.0.1 (one CPU each, songcorpus/testing/ray_cluster.py), stopped at
    the end of the session (only its own processes)."""
    from songcorpus.testing.ray_cluster import LocalCluster

    with LocalCluster([1, 1]) as cluster:
        yield cluster.address


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 for the session (tests/s3_server.py), stopped at the end."""
    from s3_server import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(s3_endpoint, monkeypatch, request) -> str:
    """A fresh bucket on the local S3 server, with the AWS_* environment pointing at it; its s3:// URL."""
    import re

    from s3_server import make_bucket, s3_env

    for k, v in s3_env(s3_endpoint).items():
        monkeypatch.setenv(k, v)
    return make_bucket(re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") or "bucket")
