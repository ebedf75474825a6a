"""A running curate seen from outside, on real jobs in a subprocess (no mock of the job): ``OUT/progress.json``
appears, is whole JSON at every read and ends with the catalog's figures; ``songcorpus report --follow`` follows a
running job to its end and reports a finished one at once; a log (stdout and stderr to a pipe) gets a few plain
lines, with the inputs' failure reasons and a job fault's one line, and none of Ray's own chatter.

The job is slowed by its inputs (a few short songs on one Ray worker), not by sleeps in the code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import soundfile as sf

from songcorpus.schemas.failures import JOB_FAULT_EXIT
from songcorpus.schemas.progress import PHASES, PROGRESS_FILE, PROGRESS_VERSION

from conftest import DEMO_DIR, song_folder

CONFIG = "windows: {length_s: 4.0}\n"
ENGINE_CHATTER = ("core_worker", "streaming_executor", "Running Dataset", "Progress bars", "INFO ", "WARNING ",
                  "Started a local Ray instance", "(MapWorker", "Traceback")


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "songcorpus.cli", *args]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two short songs, a speech clip (rejected: speech_dominant) and a file that is not audio (failed)."""
    folder = tmp_path_factory.mktemp("live") / "in"
    for i, seconds in enumerate((8.0, 10.0)):
        song_folder(folder, f"song_{i}.flac", seconds=seconds)
    speech, rate = sf.read(DEMO_DIR / "speech_00" / "mix.flac", dtype="float32")
    sf.write(folder / "speech.flac", speech[: 8 * rate], rate, subtype="PCM_16")
    (folder / "notes.mp3").write_text("not audio\n" * 100)
    return folder


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("live-config") / "c.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def watched(inputs, config_file, tmp_path_factory) -> dict:
    """One curate on one Ray worker, its output to a pipe; while it runs the test reads progress.json as fast as it
    can and starts ``report --follow`` on it."""
    out = tmp_path_factory.mktemp("live-out") / "out"
    job = subprocess.Popen(_cli("curate", str(inputs), "--out", str(out), "--engine", "ray", "--workers", "1",
                                "--config", str(config_file)), env=_env(), start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    snapshots: list[dict] = []
    reads = 0
    follower = None
    try:
        deadline = time.monotonic() + 600
        while job.poll() is None and time.monotonic() < deadline:
            try:
                data = (out / PROGRESS_FILE).read_bytes()
            except FileNotFoundError:
                time.sleep(0.02)
                continue
            reads += 1
            snap = json.loads(data)  # whole JSON at every read: a half-written file fails here
            if not snapshots or snap["updated"] != snapshots[-1]["updated"]:
                snapshots.append(snap)
            if follower is None and not snap["done"]:
                follower = subprocess.Popen(_cli("report", str(out), "--follow"), env=_env(), stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)
            time.sleep(0.02)
        log, _ = job.communicate(timeout=600)
        followed = follower.communicate(timeout=120) if follower is not None else ("", "")
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        if follower is not None and follower.poll() is None:
            follower.kill()
    return {"out": out, "rc": job.returncode, "log": log, "snapshots": snapshots, "reads": reads,
            "follow_rc": follower.returncode if follower else None, "followed": followed}


def _catalog(out: Path) -> tuple[dict, dict, int, float]:
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        by_status = {s: (n, h) for s, n, h in con.execute(
            "SELECT status, count(*), coalesce(sum(duration_s), 0) / 3600 FROM tracks GROUP BY status").fetchall()}
        reasons = {(s, c): n for s, c, n in con.execute(
            "SELECT status, reason_code, count(*) FROM tracks WHERE status != 'accepted' GROUP BY ALL").fetchall()}
        n, hours = con.execute("SELECT count(*), coalesce(sum(duration_s), 0) / 3600 FROM tracks").fetchone()
    finally:
        con.close()
    return by_status, reasons, n, hours


def test_progress_json_is_whole_at_every_read_and_ends_with_the_catalogs_figures(watched):
    assert watched["rc"] == 0, watched["log"][-3000:]
    snaps = watched["snapshots"]
    assert watched["reads"] > 10 and len(snaps) >= 3, (watched["reads"], len(snaps))
    assert all(s["version"] == PROGRESS_VERSION for s in snaps)
    running = [s for s in snaps if not s["done"]]
    assert running and {s["phase"] for s in running} <= set(PHASES) and "analysis" in {s["phase"] for s in running}
    assert [s["inputs"]["done"] for s in running] == sorted(s["inputs"]["done"] for s in running)  # never backwards
    assert any(s["queues"] for s in running if s["phase"] == "analysis")  # Ray tells what waits in front of a group
    final = json.loads((watched["out"] / PROGRESS_FILE).read_bytes())
    assert final["done"] and final["phase"] == "done" and final["stopped"] is None
    by_status, reasons, n, hours = _catalog(watched["out"])
    assert final["inputs"] == {"done": n, "total": n} == {"done": 4, "total": 4}
    # counted from the rows as they came back, and equal to the catalog's
    assert final["audio_hours"] == pytest.approx(hours, abs=1e-5)
    assert {s: f["tracks"] for s, f in final["tracks"].items()} == {s: v[0] for s, v in by_status.items()}
    assert {s: f["hours"] for s, f in final["tracks"].items()} == pytest.approx({s: v[1] for s, v in by_status.items()},
                                                                                abs=1e-5)
    assert {(s, c): k for s, codes in final["failures"].items() for c, k in codes.items()} == reasons
    assert ("rejected", "speech_dominant") in reasons and ("failed", "undecodable") in reasons
    assert {"ingest", "classify", "stems", "samples"} <= set(final["stage_seconds"])
    assert set(final["phase_seconds"]) <= set(PHASES) and final["hours_per_wall_hour"] > 0
    assert final["engine"] == "ray" and final["workers"] == 1
    # the timings rode back on the rows and stayed off everything kept
    assert b"stage_seconds" not in (watched["out"] / "state" / "rows.jsonl").read_bytes()
    results = watched["out"] / ".cache" / "results"
    assert not [p for p in results.rglob("*.json") if b"stage_seconds" in p.read_bytes()]


def test_a_log_gets_a_few_plain_lines_with_the_failure_reasons_and_no_engine_chatter(watched):
    lines = watched["log"].splitlines()
    assert len(lines) <= 40, watched["log"]
    assert lines[0].startswith(f"songcorpus curate into {watched['out']} started ")
    assert not [ln for ln in lines if any(c in ln for c in ENGINE_CHATTER)], watched["log"]
    assert any(ln.startswith("failures by reason:") and "failed undecodable 1" in ln and "speech_dominant" in ln
               for ln in lines), watched["log"]
    assert any(ln.startswith("time by stage") for ln in lines) and any("audio hours per wall hour" in ln for ln in lines)
    assert any(ln.startswith("[") and "analysis:" in ln for ln in lines)


def test_report_follow_follows_a_running_job_to_its_end(watched):
    out, err = watched["followed"]
    assert watched["follow_rc"] == 0, (out, err)
    lines = out.splitlines()
    assert any(ln.startswith("[") for ln in lines), out  # the running job's figures
    assert any(ln.startswith("funnel for ") for ln in lines) and any(ln.startswith("last run: curate") for ln in lines)


def test_report_of_a_finished_job_prints_the_funnel_and_the_runs_timing(watched):
    for args in ((), ("--follow",)):
        done = subprocess.run(_cli("report", str(watched["out"]), *args), env=_env(), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert not [ln for ln in done.stdout.splitlines() if ln.startswith("[")]  # nothing running: no live lines
        assert done.stdout.startswith(f"funnel for {watched['out']}") and "last run: curate" in done.stdout
        assert "failures by reason: failed undecodable 1" in done.stdout


def test_report_follow_of_a_killed_job_says_it_stopped(inputs, config_file, tmp_path):
    out = tmp_path / "out"
    job = subprocess.Popen(_cli("curate", str(inputs), "--out", str(out), "--engine", "beam", "--workers", "1",
                                "--config", str(config_file)), env={**_env(), "SONGCORPUS_KILL_AT": "samples-chunk"},
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        job.wait(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == -signal.SIGKILL
    followed = subprocess.run(_cli("report", str(out), "--follow"), env=_env(), capture_output=True, text=True,
                              timeout=120)
    assert followed.returncode == JOB_FAULT_EXIT, followed
    assert "the curate of" in followed.stdout and "stopped before it finished (samples)" in followed.stdout


@pytest.mark.slow
def test_the_demo_in_a_log_is_a_few_lines_with_its_reasons(tmp_path):
    done = subprocess.run(_cli("demo", "--out", str(tmp_path / "demo")), env=_env(), capture_output=True, text=True,
                          timeout=1800)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    lines = log.splitlines()
    assert len(lines) <= 40, log
    assert not [ln for ln in lines if any(c in ln for c in ENGINE_CHATTER)], log
    assert any(ln.startswith("failures by reason:") and "rejected speech_dominant 3" in ln for ln in lines), log


def test_a_job_fault_in_a_log_is_its_one_line(inputs, config_file, tmp_path):
    """A full cache disk (a small tmpfs: root only) stops a Ray job from an actor process: the log says so in one
    line, without the engine's tracebacks, and progress.json says it stopped."""
    from test_job_faults import tmpfs

    out = tmp_path / "out"
    with tmpfs(tmp_path / "cache", 400) as cache:
        done = subprocess.run(_cli("curate", str(inputs), "--out", str(out), "--engine", "ray", "--workers", "1",
                                   "--config", str(config_file), "--cache-dir", str(cache)), env=_env(),
                              capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == JOB_FAULT_EXIT, log[-3000:]
    faults = [ln for ln in log.splitlines() if ln.startswith("songcorpus: the job stopped")]
    assert len(faults) == 1 and "No space left on device [ENOSPC]" in faults[0], log
    assert len(log.splitlines()) <= 40 and not [ln for ln in log.splitlines() if any(c in ln for c in ENGINE_CHATTER)], log
    stopped = json.loads((out / PROGRESS_FILE).read_bytes())
    assert stopped["phase"] == "stopped" and not stopped["done"] and "[ENOSPC]" in stopped["stopped"]
