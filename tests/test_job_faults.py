"""Faults of the machine or of the project's code stop a curate with one message, publish nothing, and leave a
state the same command resumes from to the bytes of an uninterrupted run; the output folder is songcorpus's own
(a user's files in it are refused, never deleted or overwritten) and locked against a second run.

The disk faults mount small tmpfs filesystems, which needs root (CI runs as root); elsewhere they are skipped with
that reason."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from songcorpus.cli import main as cli_main
from songcorpus.pipelines.job.output_claim import LOCK, MARKER, OutputClaimError, claim_output
from songcorpus.schemas.failures import JOB_FAULT_EXIT, RESUME_HINT, JobFault

from conftest import curate_with, output_files, song_folder

WINDOWS = {"windows": {"length_s": 4.0}}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return song_folder(tmp_path_factory.mktemp("clip") / "in")


@pytest.fixture(scope="module")
def reference(clip_dir, tmp_path_factory) -> dict[str, bytes]:
    """The bytes of an uninterrupted run (one in-process Beam worker)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    return output_files(curate_with("beam", [str(clip_dir)], out, workers=1, **WINDOWS))


def beam(clip_dir: Path, out: Path, **over) -> Path:
    return curate_with("beam", [str(clip_dir)], out, workers=1, **{**WINDOWS, **over})


def test_a_fault_in_a_stage_stops_the_job_and_the_same_command_resumes(clip_dir, reference, tmp_path, monkeypatch):
    """A bug in a stage is not the input's fault: no 'failed' row, no corpus published with exit status 0."""
    from songcorpus.transforms.stages.key import KeyStage

    def broken(self, row):
        raise RuntimeError("a bug in the key stage")

    monkeypatch.setattr(KeyStage, "process_one", broken)
    out = tmp_path / "out"
    with pytest.raises(JobFault) as fault:
        beam(clip_dir, out)
    message = str(fault.value)
    assert "stage 'key'" in message and "clip.flac" in message and "a bug in the key stage" in message
    assert RESUME_HINT in message
    assert not (out / "published.json").exists() and not (out / "catalog.duckdb").exists()
    monkeypatch.undo()
    assert output_files(beam(clip_dir, out)) == reference


def test_the_cli_says_a_job_fault_in_one_line_and_exits_3(clip_dir, tmp_path, monkeypatch, capsys):
    from songcorpus.transforms.stages.key import KeyStage

    monkeypatch.setattr(KeyStage, "process_one", lambda self, row: 1 / 0)
    config = tmp_path / "w.yaml"
    config.write_text("windows: {length_s: 4.0}\n")
    rc = cli_main(["curate", str(clip_dir), "--out", str(tmp_path / "out"), "--engine", "beam", "--workers", "1",
                   "--config", str(config), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == JOB_FAULT_EXIT
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("songcorpus:")]
    assert len(lines) == 1 and "ZeroDivisionError" in lines[0] and "stage 'key'" in lines[0], err


# ---- the output folder: never another's files, one run at a time -------------------------------------------


@pytest.mark.parametrize("foreign", ["config.yaml", "shards/x.tar", "catalog/tracks.parquet", "state/rows.jsonl",
                                     "notes.tmp"])
def test_a_folder_songcorpus_did_not_write_is_refused_and_left_as_it_was(foreign, clip_dir, tmp_path):
    out = tmp_path / "out"
    path = out / foreign
    path.parent.mkdir(parents=True)
    path.write_bytes(b"the user's own bytes")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(OutputClaimError, match="did not write"):
        beam(clip_dir, out)
    assert path.read_bytes() == b"the user's own bytes"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before


def test_files_a_user_adds_to_a_corpus_folder_survive_a_rerun(clip_dir, reference, tmp_path):
    """Only files a songcorpus manifest names are ever removed: a stray tar beside the shards, a user's temp file
    and notes stay as they are; the corpus is unchanged."""
    out = beam(clip_dir, tmp_path / "out")
    assert (out / MARKER).is_file()
    mine = {out / "shards" / "mine.tar": b"a tar of my own", out / "shards" / "shard-train-999999.tar": b"mine too",
            out / "shards" / "draft.tar.tmp": b"half", out / "notes.tmp": b"notes"}
    for path, data in mine.items():
        path.write_bytes(data)
    beam(clip_dir, out)
    assert {p: p.read_bytes() for p in mine} == mine
    assert output_files(out) == {**reference, **{f"shards/{p.name}": d for p, d in mine.items()
                                                 if p.parent.name == "shards"}}


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(clip_dir, tmp_path):
    out = tmp_path / "out"
    with claim_output(out, "curate"):
        with pytest.raises(OutputClaimError, match=rf"being written by another run: songcorpus curate \(pid {os.getpid()}"):
            beam(clip_dir, out)
    assert (out / LOCK).exists()
    beam(clip_dir, out)  # the lock went with its holder


def test_two_runs_started_together_one_publishes_and_one_is_refused(clip_dir, reference, tmp_path):
    """Two `songcorpus curate` processes into one folder, started together: exactly one holds the folder."""
    config = tmp_path / "w.yaml"
    config.write_text("windows: {length_s: 4.0}\n")
    cmd = [sys.executable, "-m", "songcorpus.cli", "curate", str(clip_dir), "--out", str(tmp_path / "out"),
           "--engine", "beam", "--workers", "1", "--config", str(config), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert "being written by another run" in refused and "pid" in refused
    assert output_files(tmp_path / "out") == reference


# ---- full and read-only disks (tmpfs: root only) ---------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def leftovers(out: Path) -> list[str]:
    """Half-written files a failed run must not leave behind."""
    return sorted(p.name for p in out.rglob("*") if p.name.endswith((".tmp", ".wal")) or ".duckdb.tmp" in p.name)


@pytest.mark.parametrize("engine", ["beam", "ray"])
def test_a_full_cache_disk_stops_the_job_and_the_same_command_completes_with_room(engine, clip_dir, reference,
                                                                                  tmp_path):
    """On Ray the stage's fault crosses from an actor process to the driver, and must still stop the job."""
    out = tmp_path / "out"
    with tmpfs(tmp_path / "cache", 400) as cache:
        with pytest.raises(JobFault) as fault:
            curate_with(engine, [str(clip_dir)], out, workers=1, cache_dir=str(cache), **WINDOWS)
        assert "No space left on device [ENOSPC]" in str(fault.value) and str(cache) in str(fault.value)
        assert "\n" not in str(fault.value)
        assert not (out / "published.json").exists()
        remount(cache, "size=100m")
        assert output_files(curate_with(engine, [str(clip_dir)], out, workers=1, cache_dir=str(cache),
                                        **WINDOWS)) == reference


@pytest.mark.parametrize("room,fails_at", [(0.3, "shard-"), (1.0, "catalog.duckdb")])
def test_a_full_output_disk_leaves_nothing_half_written(room, fails_at, clip_dir, reference, tmp_path):
    """Room for part of the shards, or for the shards and tables but not for catalog.duckdb (DuckDB allocates
    its file in blocks of a few hundred KB): one message naming the file, no shard, table, DuckDB temp or WAL
    left half-written, nothing published; the same command completes once there is room."""
    sizes = sum(len(b) for b in reference.values()) + 512 * 1024  # + the codebook beside the shards
    with tmpfs(tmp_path / "disk", int(sizes * room) // 1024) as disk:
        out = disk / "out"
        cache = tmp_path / "cache"
        with pytest.raises(JobFault) as fault:
            beam(clip_dir, out, cache_dir=str(cache))
        assert "[ENOSPC]" in str(fault.value) and fails_at in str(fault.value), fault.value
        assert not (out / "published.json").exists()
        assert leftovers(out) == []
        remount(disk, "size=100m")
        assert output_files(beam(clip_dir, out, cache_dir=str(cache))) == reference


def test_a_read_only_output_is_one_message_and_resumes_once_writable(clip_dir, reference, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", 100 * 1024) as disk:
        out = disk / "out"
        beam(clip_dir, out, cache_dir=str(tmp_path / "cache"))
        remount(disk, "ro")
        config = tmp_path / "w.yaml"
        config.write_text(f"windows: {{length_s: 4.0}}\ncache_dir: {tmp_path / 'cache'}\n")
        rc = cli_main(["curate", str(clip_dir), "--out", str(out), "--engine", "beam", "--workers", "1",
                       "--config", str(config), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == JOB_FAULT_EXIT and "Traceback" not in err
        assert "Read-only file system [EROFS]" in err and str(out) in err, err
        remount(disk, "rw")
        assert output_files(beam(clip_dir, out, cache_dir=str(tmp_path / "cache"))) == reference


# ---- nothing written outside the output, the cache and temp files the job removes ------------------------


@pytest.mark.parametrize("engine", ["beam", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_curate_writes_nothing_outside_its_output_and_cache(engine, clip_dir, tmp_path):
    """A fresh HOME and temp folder stay empty: no onnxruntime telemetry (~/.cache/Microsoft, $TMPDIR/.ses), no
    Beam Prism download cache (~/.apache_beam), no Ray session logs or Beam temp folders left, no lock files."""
    home = tmp_path / "home"
    home.mkdir()
    # a short temp path, as on a real machine: Ray's socket paths under it must fit in 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    config = tmp_path / "w.yaml"
    config.write_text("windows: {length_s: 4.0}\n")
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(temp)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    try:
        done = subprocess.run([sys.executable, "-m", "songcorpus.cli", "curate", str(clip_dir), "--out",
                               str(tmp_path / "out"), "--engine", engine, "--workers", "1", "--config", str(config),
                               "--no-progress"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
        assert sorted(p.relative_to(temp).as_posix() for p in temp.rglob("*")) == []
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_temp_folders_of_killed_jobs_are_removed_by_the_next(tmp_path):
    from songcorpus.pipelines.job.temp_dir import remove_orphans

    dead = tmp_path / "songcorpus-999999999-abcdefgh"  # no such process
    live = tmp_path / f"songcorpus-{os.getpid()}-abcdefgh"
    other = tmp_path / "songcorpus-mirror-abcdefgh"  # another kind of songcorpus temp: not a job folder
    for d in (dead, live, other):
        (d / "ray").mkdir(parents=True)
    remove_orphans(tmp_path)
    assert not dead.exists() and live.exists() and other.exists()
