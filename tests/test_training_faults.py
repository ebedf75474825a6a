"""Training survives faults without losing anything: ``kill -9`` of `songcorpus train` before, during and after
a checkpoint write and between checkpoints, with 0, 1 or 2 loader workers, on 1 or 2 torchrun ranks, then the
same command again, ends with the parameters of a run never interrupted; and bad run state or inputs (a tampered
latent_stats.npz, a malformed config, a pickled shard member) are refused in one line naming the file.

The kill points are reached by pausing the training processes there (a ``sitecustomize`` this module writes onto
the PYTHONPATH of the processes it starts: test code only, nothing in the package reads it), then SIGKILL of the
whole process group, so each point is hit every time rather than by a race with a poll.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import TINY_SAMUEL, final_weights, tiny, write_config

from songcorpus.cli import main
from songcorpus.schemas.training import load_train_config
from songcorpus.train.checkpoint import CheckpointError, latest_checkpoint, staging_dir
from songcorpus.train.data import BatchBuilder, CorpusView, DataError, latent_statistics
from songcorpus.train.launch import launch_local

FAULT_POINTS = '''
"""Fault points of tests/test_training_faults.py (test code, on the PYTHONPATH of the processes that test
starts). SONGCORPUS_TEST_PAUSE=<point>:<step> makes a training process write the file SONGCORPUS_TEST_PAUSED
and sleep at that point until the test kills it: step (before step N's update), before (checkpoint N not
begun), during (checkpoint N's staging folder holds half its state.pt), after (checkpoint N published)."""
import os

_SPEC = os.environ.get("SONGCORPUS_TEST_PAUSE")
if _SPEC:
    import io
    import time

    import torch

    from songcorpus.train import checkpoint, optim

    _POINT, _, _AT = _SPEC.partition(":")
    _AT = int(_AT)

    def _pause():
        marker = os.environ["SONGCORPUS_TEST_PAUSED"]
        with open(f"{marker}.{os.getpid()}", "w") as fh:
            fh.write(_SPEC)
        os.replace(f"{marker}.{os.getpid()}", marker)
        while True:
            time.sleep(3600)

    _lr, _begin, _publish = optim.learning_rate, checkpoint.begin_checkpoint, checkpoint.publish_checkpoint

    def learning_rate(step, *args, **kwargs):
        if _POINT == "step" and step == _AT:
            _pause()
        return _lr(step, *args, **kwargs)

    def begin_checkpoint(run, step):
        if _POINT == "before" and step == _AT:
            _pause()
        return _begin(run, step)

    def publish_checkpoint(run, step, state, keep):
        if _POINT == "during" and step == _AT:
            buf = io.BytesIO()
            torch.save(state, buf)
            with open(checkpoint.staging_dir(run, step) / "state.pt", "wb") as fh:
                fh.write(buf.getvalue()[: buf.tell() // 2])
            _pause()
        out = _publish(run, step, state, keep)
        if _POINT == "after" and step == _AT:
            _pause()
        return out

    optim.learning_rate = learning_rate
    checkpoint.begin_checkpoint = begin_checkpoint
    checkpoint.publish_checkpoint = publish_checkpoint
'''

STEPS, EVERY = 10, 3  # checkpoints at 3, 6, 9 and 10: resumes from odd and even steps
# (where the run is paused and killed, the checkpoint it must then resume from)
KILLS = [("step:4", 3), ("during:6", 3), ("before:9", 6), ("after:9", 9)]
HANG_GUARD_S = 600  # a run that never reaches its kill point fails the test instead of hanging it


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the processes these tests start: the fault points on PYTHONPATH, one torch thread
    (identical float results in every process), and a bytecode cache, since the suite starts a dozen Pythons."""
    root = tmp_path_factory.mktemp("faults")
    (root / "sitecustomize.py").write_text(FAULT_POINTS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(OMP_NUM_THREADS="1", PYTHONPYCACHEPREFIX=str(root / "pycache"),
               PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    return env


def train_command(demo: Path, config: Path, out: Path, ranks: int) -> list[str]:
    cmd = [sys.executable, "-m", "songcorpus.cli", "train", "--model", "samuel", "--data", str(demo),
           "--config", str(config), "--out", str(out), "--no-progress"]
    return cmd + (["--launcher", "torchrun", "--workers", str(ranks)] if ranks > 1 else [])


def fault_config(folder: Path, workers: int) -> Path:
    cfg = tiny(STEPS, checkpoint={"every": EVERY, "keep": 2}, data={**TINY_SAMUEL["data"], "num_workers": workers})
    return write_config(folder / f"tiny-{workers}.yaml", cfg)


def run_to_end(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-3000:]


def kill_at(cmd: list[str], env: dict[str, str], point: str, marker: Path) -> None:
    """Start ``cmd`` paused at ``point``, wait until it is there, then SIGKILL its whole process group (the CLI,
    torchrun, every rank and every loader worker at once, as a lost machine would)."""
    marker.unlink(missing_ok=True)
    errors = marker.with_suffix(".stderr")
    with open(errors, "wb") as err:
        proc = subprocess.Popen(cmd, env={**env, "SONGCORPUS_TEST_PAUSE": point, "SONGCORPUS_TEST_PAUSED": str(marker)},
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while not marker.exists():
            code = proc.poll()
            assert code is None, f"the run exited ({code}) before reaching {point}: {errors.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the run did not reach {point}"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(demo_ray, fault_env, tmp_path_factory) -> dict[int, dict[str, torch.Tensor]]:
    """Final weights of a run never interrupted (in-process loading), per number of ranks (1 computed at once,
    2 on first use): the loader's worker count must not change them."""
    root = tmp_path_factory.mktemp("uninterrupted")
    cfg = fault_config(root, 0)

    class Lazy(dict):
        def __missing__(self, ranks: int) -> dict[str, torch.Tensor]:
            run_to_end(train_command(demo_ray, cfg, root / f"run-{ranks}", ranks), fault_env)
            self[ranks] = final_weights(root / f"run-{ranks}")
            return self[ranks]

    return Lazy()


@pytest.mark.parametrize("ranks,workers", [
    pytest.param(1, 2, id="1rank-2workers"),
    pytest.param(1, 0, id="1rank-0workers", marks=pytest.mark.slow),
    pytest.param(1, 1, id="1rank-1worker", marks=pytest.mark.slow),
    pytest.param(2, 0, id="2ranks-0workers", marks=pytest.mark.slow),
    pytest.param(2, 1, id="2ranks-1worker", marks=pytest.mark.slow),
    pytest.param(2, 2, id="2ranks-2workers", marks=pytest.mark.slow),
])
def test_kill_9_anywhere_then_the_same_command_equals_an_uninterrupted_run(ranks, workers, demo_ray, fault_env,
                                                                           uninterrupted, tmp_path):
    """One run folder killed four times: mid-step 4 (after checkpoint 3), while checkpoint 6 is half written,
    before checkpoint 9 begins, after checkpoint 9 is published; each time the same command resumes from the
    last complete checkpoint (3, 3, 6, 9: odd and even steps, so loader workers restart mid-cycle). A staging
    folder an older run left (of a step this run never writes again) is cleared. The last run finishes with
    the final model and EMA of a run never interrupted, bit for bit, and one log line per step."""
    run = tmp_path / "run"
    cmd = train_command(demo_ray, fault_config(tmp_path, workers), run, ranks)
    for point, resumes_from in KILLS:
        kill_at(cmd, fault_env, point, tmp_path / "paused")
        found = latest_checkpoint(run)
        assert found is not None and found[0] == resumes_from, (point, found)
        if point.startswith("during"):
            step = int(point.split(":")[1])
            assert (staging_dir(run, step) / "state.pt").is_file(), "the kill did not land inside the write"
            assert not (run / "checkpoints" / f"step-{step:08d}").exists()
    stale = staging_dir(run, 7)
    stale.mkdir()
    (stale / "state.pt").write_bytes(b"half a checkpoint of an older run")
    run_to_end(cmd, fault_env)
    assert latest_checkpoint(run)[0] == STEPS
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000009", "step-00000010"]
    want, got = uninterrupted[ranks], final_weights(run)
    assert want.keys() == got.keys()
    differ = [k for k in want if not torch.equal(want[k], got[k])]
    assert not differ, differ[:3]
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(STEPS))


# ---------------------------------------------------------------------------------------------
# run state and inputs a resume cannot use: refused in one line, by name
# ---------------------------------------------------------------------------------------------

def tampered_copies(stats: Path) -> dict[str, bytes]:
    """latent_stats.npz with a key's arrays removed (generation used to skip that key silently), one array
    removed, cut in half, and with a zero std: a part of the expected error message -> the file's bytes."""
    with np.load(stats) as saved:
        arrays = {k: saved[k] for k in saved.files}
    out = {}
    removals = {"accompaniment_latents.mean": ("accompaniment_latents.mean", "accompaniment_latents.std"),
                "accompaniment_latents.std": ("accompaniment_latents.std",)}
    for problem, gone in removals.items():
        buf = io.BytesIO()
        np.savez(buf, **{k: v for k, v in arrays.items() if k not in gone})
        out[problem] = buf.getvalue()
    whole = stats.read_bytes()
    out["not a readable latent statistics file"] = whole[: len(whole) // 2]
    buf = io.BytesIO()
    np.savez(buf, **{k: (np.zeros_like(v) if k == "vocals_latents.std" else v) for k, v in arrays.items()})
    out["vocals_latents.std has values <= 0"] = buf.getvalue()
    return out


def test_resume_refuses_a_tampered_latent_stats_file_by_name(demo_ray, tmp_path, capsys):
    """A resume read the statistics with ``saved[key]``: a removed array was a bare KeyError, a truncated file a
    zip error. Both, and a zero std, now name the file and the problem (the CLI: one line, exit 2)."""
    cfg_dict = tiny(2)
    cfg = load_train_config("samuel", overrides=cfg_dict)
    run = tmp_path / "run"
    launch_local(cfg, str(demo_ray), run, progress=False)
    stats = run / "latent_stats.npz"
    good = stats.read_bytes()
    for problem, data in tampered_copies(stats).items():
        stats.write_bytes(data)
        with pytest.raises(CheckpointError) as caught:
            launch_local(cfg, str(demo_ray), run, progress=False)
        assert str(stats) in str(caught.value) and problem in str(caught.value), caught.value
    config = write_config(tmp_path / "tiny.yaml", cfg_dict)
    assert main(["train", "--model", "samuel", "--data", str(demo_ray), "--config", str(config), "--out", str(run),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("songcorpus: ") and err.count("\n") == 1 and str(stats) in err, err
    stats.write_bytes(good)
    assert launch_local(cfg, str(demo_ray), run, progress=False)["done"]


def test_train_with_a_malformed_config_says_where_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: samuel\nsteps: [1, 2\noptim: {lr: 1e-3}\n")
    assert main(["train", "--model", "samuel", "--data", str(tmp_path), "--config", str(bad),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("songcorpus: ") and err.count("\n") == 1, err
    assert str(bad) in err and "line 4, column" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--steps", "--checkpoint-every"])
def test_train_with_a_zero_count_flag_names_the_flag(flag, tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", tiny(4))
    assert main(["train", "--model", "samuel", "--data", str(tmp_path), "--config", str(config),
                 "--out", str(tmp_path / "run"), flag, "0"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} 0" in err and str(config) not in err, err


def replace_member(tar_path: Path, member_suffix: str, data: bytes) -> str:
    """Rewrite ``tar_path`` with the first member ending in ``member_suffix`` holding ``data``; its key."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    victim = next(m.name for m, _ in members if m.name.endswith(member_suffix))
    with tarfile.open(tar_path, "w") as tar:
        for member, content in members:
            if member.name == victim:
                content = data
                member.size = len(data)
            tar.addfile(member, io.BytesIO(content) if content is not None else None)
    return victim.partition(".")[0]


def test_a_pickled_shard_member_is_refused_naming_shard_sample_and_member(demo_ray, tmp_path):
    """An object array in a .npy member (which only unpickling could read) was a bare ValueError from numpy,
    naming nothing; it is never unpickled and the error names the shard file, the sample and the member."""
    corpus = tmp_path / "corpus"
    shutil.copytree(demo_ray / "shards", corpus / "shards")
    shard = next((corpus / "shards").glob("shard-train-*.latents.tar"))
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"not": "data"}], dtype=object), allow_pickle=True)
    member = "vocals.embedded_latents.npy"
    key = replace_member(shard, member, pickled.getvalue())
    view = CorpusView(str(corpus), "train", ["vocals_latents", "accompaniment_latents"], window_s=4.0)
    index = view.key_index[key]
    for call in (lambda: BatchBuilder(view).sample(index, np.random.default_rng(0)),
                 lambda: latent_statistics(view, ["vocals_latents"])):
        with pytest.raises(DataError) as caught:
            call()
        message = str(caught.value)
        assert str(shard) in message and key in message and member in message, message
