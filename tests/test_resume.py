"""kill -9 in the middle of a curate run, run the same command again: exactly the bytes of an
uninterrupted run, with the finished work reused from the cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from conftest import DEMO_DIR, output_files

# Five of the demo's eleven clips (songs, an instrumental, speech): enough work left after the kill point, at
# half the cost of all eleven.
CLIPS = ("instr_midi_00", "song_00", "song_03", "song_07", "speech_00")


def _make_inputs(root: Path, copies: int = 1) -> int:
    root.mkdir(parents=True)
    n = 0
    for clip in sorted(DEMO_DIR / c / "mix.flac" for c in CLIPS):
        x, rate = sf.read(str(clip), dtype="float32")
        for k in range(copies):
            sf.write(root / f"{clip.parent.name}_{k}.flac", x * (1.0 - 0.01 * k), rate, subtype="PCM_16")
            n += 1
    return n


def _curate_cmd(inputs: Path, out: Path, engine: str) -> list[str]:
    workers = ["--workers", "2"] if engine == "ray" else ["--engine", "beam", "--workers", "1"]
    return [sys.executable, "-m", "songcorpus.cli", "curate", str(inputs), "--out", str(out),
            *workers, "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled"}


# What makes a re-run resume is engine-free (the content-addressed cache, outputs committed last): by default on
# one in-process Beam worker; on Ray, with its raylet and actor processes killed too, under the slow marker.
@pytest.mark.parametrize("engine", ["beam", pytest.param("ray", marks=pytest.mark.slow)])
def test_kill_9_then_rerun_gives_the_uninterrupted_bytes(tmp_path, engine):
    inputs = tmp_path / "inputs"
    n_inputs = _make_inputs(inputs)

    reference = tmp_path / "reference"
    subprocess.run(_curate_cmd(inputs, reference, engine), check=True, env=_env(), capture_output=True, timeout=900)

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(_curate_cmd(inputs, crashed, engine), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = crashed / ".cache" / "results" / "classify"
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        done = sum(1 for _ in results.rglob("*.json")) if results.exists() else 0
        if done >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make the input larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= done < n_inputs
    assert not (crashed / "catalog.duckdb").exists()  # nothing was committed as done

    rerun = subprocess.run(_curate_cmd(inputs, crashed, engine), env=_env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert output_files(crashed) == output_files(reference)
