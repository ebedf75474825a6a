"""Training benchmark: step time, samples/s, fraction of step time waiting for data and peak memory per model
at the default compact size on CPU, through the real loop (train/trainer.py) on a curated corpus; and 2
torchrun DDP processes against 1 at the same global batch.

    .venv/bin/python bench/bench_training.py CORPUS [--steps 12] [--models samuel,lada_band,...] [--ddp]

Each model trains ``--steps`` steps (the first 2 are dropped as warm-up) with 2 DataLoader workers, in its
own process, so peak RSS is that model's. Numbers come from the run's own log.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MODELS = ["samuel", "lada_band", "songecho", "unisinger"]


def run_one(model: str, corpus: str, steps: int, workers: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "cfg.yaml"
        cfg.write_text(yaml.safe_dump({"steps": steps, "global_batch": batch, "data": {"num_workers": workers},
                                       "checkpoint": {"every": 10_000}, "optim": {"warmup_steps": 1}}))
        code = ("import resource, sys, json; from songcorpus.schemas.training import load_train_config; "
                "from songcorpus.train.launch import launch_local; "
                f"c = load_train_config({model!r}, {str(cfg)!r}); "
                f"launch_local(c, {corpus!r}, {tmp + '/run'!r}, progress=False); "
                "print(json.dumps({'maxrss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        rss = json.loads(out.stdout.strip().splitlines()[-1])["maxrss_mb"]
        log = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()][2:]
    sps = sorted(r["samples_per_s"] for r in log)
    wait = [r["data_wait_frac"] for r in log]
    return {"model": model, "median_samples_per_s": sps[len(sps) // 2], "step_s": batch / sps[len(sps) // 2],
            "data_wait_frac_mean": sum(wait) / len(wait), "data_wait_frac_max": max(wait),
            "peak_rss_mb": rss, "wall_s": wall}


def run_ddp(corpus: str, steps: int) -> dict:
    """SAMUeL at global batch 8 on 1 process and on 2 torchrun processes: wall time (start-up included) and the
    median logged step time of rank 0 after 2 warm-up steps (the part DDP can speed up)."""
    import torch

    from songcorpus.schemas.training import load_train_config
    from songcorpus.train.launch import launch_local, launch_torchrun

    res: dict[str, float] = {}
    threads = torch.get_num_threads()
    for world in ("1t", 1, 2):  # "1t": one process on one thread, as each torchrun process runs (OMP_NUM_THREADS=1)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_train_config("samuel", overrides={"steps": steps, "global_batch": 8, "grad_accum": 1,
                                                         "data": {"num_workers": 0}, "checkpoint": {"every": 10_000}})
            torch.set_num_threads(1 if world == "1t" else threads)
            t0 = time.perf_counter()
            if world != 2:
                launch_local(cfg, corpus, Path(tmp) / "run", progress=False)
            else:
                assert launch_torchrun(cfg, corpus, Path(tmp) / "run", workers=2, progress=False) == 0
            res[f"wall_{world}"] = time.perf_counter() - t0
            log = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()][2:]
            step_s = sorted(8 / r["samples_per_s"] for r in log)
            res[f"step_{world}"] = step_s[len(step_s) // 2]
    torch.set_num_threads(threads)
    return {"one_process_s": res["wall_1"], "two_process_s": res["wall_2"], "speedup": res["wall_1"] / res["wall_2"],
            "one_step_s": res["step_1"], "two_step_s": res["step_2"], "step_speedup": res["step_1"] / res["step_2"],
            "one_thread_step_s": res["step_1t"], "per_core_speedup": res["step_1t"] / res["step_2"], "threads": threads}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--ddp", action="store_true", help="also time 2 torchrun processes against 1 (SAMUeL)")
    args = ap.parse_args()
    print("| model | step (s) | samples/s | data wait mean / max | peak RSS (MB) |")
    for model in [m for m in args.models.split(",") if m]:
        r = run_one(model, args.corpus, args.steps, args.workers, args.batch)
        print(f"| {model} | {r['step_s']:.2f} | {r['median_samples_per_s']:.1f} | {r['data_wait_frac_mean']:.1%} / "
              f"{r['data_wait_frac_max']:.1%} | {r['peak_rss_mb']:.0f} |", flush=True)
    if args.ddp:
        d = run_ddp(args.corpus, args.steps)
        print(f"DDP SAMUeL, global batch 8, {args.steps} steps: 1 process {d['one_process_s']:.1f} s, 2 processes "
              f"{d['two_process_s']:.1f} s wall (speed-up {d['speedup']:.2f}x); median step {d['one_step_s']:.3f} s "
              f"against {d['two_step_s']:.3f} s (speed-up {d['step_speedup']:.2f}x); 1 process on 1 thread "
              f"{d['one_thread_step_s']:.3f} s per step: 2 processes of 1 thread give {d['per_core_speedup']:.2f}x "
              f"({d['threads']} threads in the 1-process run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
