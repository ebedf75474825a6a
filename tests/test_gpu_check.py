"""bench/gpu_check.sh, the checks a lent GPU machine runs: its --dry-run (the same code on the CPU, tiny sizes) must
run every check and write the JSON the GPU run writes, so the script cannot rot between the rare GPU loans; a failed
check is recorded and the run goes on; the MFU's peak comes from the device's name."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("samuel", "lada_band", "songecho", "unisinger")
CHECKS = (["demucs", "whisper", "codec_encodec", "codec_dac", "codec_oobleck"]
          + [f"train_{m}_{s}" for m in MODELS for s in ("compact", "x10")]
          + [f"generate_{m}_{s}" for m in MODELS for s in ("compact", "x10")])
FIGURES = {  # the figures each family must measure: positive, finite numbers
    "demucs": ["audio_hours_per_gpu_hour", "seconds_per_audio_minute", "params_m"],
    "whisper": ["audio_hours_per_gpu_hour", "seconds_per_audio_minute"],
    "codec": ["audio_hours_per_gpu_hour", "stem_audio_hours_per_gpu_hour", "decode_x_real_time", "params_m"],
    "train": ["step_s", "samples_per_s", "params", "model_flops_per_step", "flops_6nd_per_step", "achieved_tflops",
              "mfu", "params_vs_compact"],
    "generate": ["rtf", "sample_rtf", "encode_rtf", "decode_rtf", "sample_s", "audio_s_per_call", "params_m"],
}


def positive(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def gpu_check():
    """bench/gpu_check.py as a module (it sets the offline variables at import: the test process's are restored)."""
    before = dict(os.environ)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        module = importlib.import_module("gpu_check")
    finally:
        os.environ.clear()
        os.environ.update(before)
    return module


def test_dry_run_runs_every_check_and_writes_the_gpu_runs_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out),
                           "--peak-tflops", "0.5"], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["schema"] == "songcorpus.gpu_check/1"
    assert report["errors"] == [] and report["skipped"] == [], report["errors"] or report["skipped"]
    for key in ("name", "type", "torch", "cuda", "python", "peak_bf16_tflops", "peak_source"):
        assert key in report["device"], key
    assert report["device"]["type"] == "cpu" and report["device"]["peak_source"] == "--peak-tflops"
    assert report["date"] and positive(report["total_wall_s"]) and report["peak_memory_source"]
    assert list(report["checks"]) == CHECKS
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == len(CHECKS), proc.stdout
    for name, entry in report["checks"].items():
        assert entry["status"] == "ok", (name, entry)
        family = name.split("_")[0]
        for key in ["wall_s", "cpu_s", "peak_memory_mb", "budget_s", *FIGURES[family]]:
            assert positive(entry.get(key)), (name, key, entry.get(key))
        if family == "train":
            # the MFU is the measured FLOPs per second over the peak given
            assert entry["mfu"] == pytest.approx(entry["achieved_tflops"] / 0.5, rel=1e-2)
            assert "FlopCounterMode" in entry["flops_method"] and math.isfinite(entry["loss"])
            assert entry["batch"] == report["train_batch"] == 2
        if family == "generate":
            parts = entry["encode_rtf"] + entry["sample_rtf"] + entry["decode_rtf"]
            assert entry["rtf"] == pytest.approx(parts, rel=1e-2)
    # x10 is about ten times the compact parameters on the GPU; the dry run's tiny sizes are larger, not equal
    for m in MODELS:
        assert report["checks"][f"train_{m}_x10"]["params"] > report["checks"][f"train_{m}_compact"]["params"]


def test_a_failed_check_is_recorded_and_the_run_goes_on(gpu_check, tmp_path: Path, monkeypatch) -> None:
    def broken(ctx, budget_s):
        raise RuntimeError("the accelerator caught fire")

    def absent(ctx, budget_s):
        raise gpu_check.SkipCheck("package not carried: nothing")

    checks = [("broken", 1.0, broken), ("absent", 1.0, absent),
              ("train_samuel_compact", 1.0, gpu_check.check_train("samuel", "compact"))]
    monkeypatch.setattr(gpu_check, "all_checks", lambda: checks)
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["errors"] == [{"check": "broken", "error": "RuntimeError: the accelerator caught fire"}]
    assert report["skipped"] == [{"check": "absent", "reason": "package not carried: nothing"}]
    assert report["checks"]["train_samuel_compact"]["status"] == "ok"
    assert report["checks"]["train_samuel_compact"]["mfu"] is None  # no peak for a CPU: said why, not invented
    assert "CPU" in report["checks"]["train_samuel_compact"]["mfu_reason"]


def test_peak_flops_come_from_the_device_name(gpu_check) -> None:
    peak = gpu_check.peak_bf16_tflops
    assert peak("NVIDIA H100 80GB HBM3", None)[0] == 989.0
    assert peak("NVIDIA H100 PCIe", None)[0] == 756.0
    assert peak("NVIDIA H200", None)[0] == 989.0
    assert peak("NVIDIA A100-SXM4-80GB", None)[0] == 312.0
    value, reason = peak("NVIDIA L4", None)
    assert value is None and "L4" in reason and "--peak-tflops" in reason
    assert peak("NVIDIA L4", 121.0) == (121.0, "--peak-tflops")


def test_without_a_gpu_only_the_dry_run_is_accepted(gpu_check, tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--out", str(tmp_path / "gpu.json")])
    assert exc.value.code == 2
    assert "no CUDA device is visible; run with --dry-run" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--only", "nothing_like_this", "--out", str(tmp_path / "gpu.json")])
    assert "names no check" in capsys.readouterr().err
