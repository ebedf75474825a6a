"""kill -9 at every phase of a curate (``songcorpus/io/fault_points.py``), then the same command: the bytes of an
uninterrupted run, and nothing published in between.

A kill from outside lands wherever the job is; these points put it exactly in the phases a small corpus is through
too fast to catch (shard writing, the catalog build, publication). The default suite runs a chain on one in-process
Beam worker: one folder, killed at several points one run after the other (each run resuming the last), then
finished. Under ``slow``: every point from a fresh folder, on Beam and on Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from songcorpus.io.fault_points import ENV, POINTS

from conftest import DEMO_DIR, curate_with, output_files, song_folder

# one sample per shard, so shard writing has several parts to be killed between
CONFIG = "windows: {length_s: 4.0}\nshards: {max_samples: 1}\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A 12 s song and a speech clip: two analysis rows, one accepted song with a few windows."""
    folder = song_folder(tmp_path_factory.mktemp("kill") / "in", "song.flac")
    speech, rate = sf.read(DEMO_DIR / "speech_00" / "mix.flac", dtype="float32")
    sf.write(folder / "speech.flac", speech[: 8 * rate], rate, subtype="PCM_16")
    return folder


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kill-config") / "c.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("kill-reference") / "out"
    return output_files(curate_with("beam", [str(inputs)], out, workers=1, windows={"length_s": 4.0},
                                    shards={"max_samples": 1}))


def run(inputs: Path, out: Path, config: Path, engine: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    engine_args = ["--engine", "beam", "--workers", "1"] if engine == "beam" else ["--engine", "ray", "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if kill_at:
        env[ENV] = kill_at
    proc = subprocess.Popen([sys.executable, "-m", "songcorpus.cli", "curate", str(inputs), "--out", str(out),
                             "--config", str(config), *engine_args, "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        try:  # Ray's raylet and workers of a killed driver: gone with its session
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def kill_then_check(inputs, out, config, engine, point) -> None:
    killed = run(inputs, out, config, engine, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    assert not (out / "published.json").exists(), point


def test_every_point_is_documented_in_order():
    import songcorpus.io.fault_points as fp

    doc = fp.__doc__ or ""
    assert [p for p in POINTS if f"  {p} " in doc] == list(POINTS)
    assert sorted(doc.index(f"  {p} ") for p in POINTS) == [doc.index(f"  {p} ") for p in POINTS]


def test_killed_at_analysis_shards_and_catalog_one_run_after_another_then_finished(inputs, config_file, reference,
                                                                                     tmp_path):
    out = tmp_path / "out"
    for point in ("analysis-row:1", "shard-part:1", "catalog"):
        kill_then_check(inputs, out, config_file, "beam", point)
    done = run(inputs, out, config_file, "beam")
    assert done.returncode == 0, done.stderr[-3000:]
    assert output_files(out) == reference


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["beam", "ray"])
@pytest.mark.parametrize("point", [*POINTS, "analysis-row:2", "shard-part:2"])
def test_killed_at_one_point_from_a_fresh_folder_then_finished(point, engine, inputs, config_file, reference, tmp_path):
    out = tmp_path / "out"
    kill_then_check(inputs, out, config_file, engine, point)
    done = run(inputs, out, config_file, engine)
    assert done.returncode == 0, done.stderr[-3000:]
    assert output_files(out) == reference


@pytest.mark.slow
def test_killed_at_every_point_on_ray_one_run_after_another(inputs, config_file, reference, tmp_path):
    out = tmp_path / "out"
    for point in POINTS:
        kill_then_check(inputs, out, config_file, "ray", point)
    done = run(inputs, out, config_file, "ray")
    assert done.returncode == 0, done.stderr[-3000:]
    assert output_files(out) == reference
