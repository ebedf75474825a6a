"""Thin launchers around the one training loop (train/trainer.py): a single process, torchrun DDP, Ray Train.

Each writes the run's config first and then runs :func:`songcorpus.train.trainer.train` unchanged on every
worker; rank and world size come from the environment the launcher sets up (torchrun's RANK/WORLD_SIZE, Ray
Train's process group). ``python -m songcorpus.train.launch --run RUN --data DATA`` is what torchrun starts.

Fails: a worker's error fails the launch with that worker's message (torchrun's exit code, Ray's
TrainingFailedError); nothing is half-written, since checkpoints are atomic.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from songcorpus.schemas.training import TrainConfig, load_train_config


def write_config(config: TrainConfig, run: Path) -> Path:
    """The run's config as the workers will read it (the loop checks it against an existing run's)."""
    run.mkdir(parents=True, exist_ok=True)
    path = run / "launch-config.yaml"
    path.write_text(config.to_yaml())
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(config: TrainConfig, data: Any, run: Path, progress: bool = True, backbone: Path | None = None,
                 stop_after: int | None = None) -> dict[str, Any]:
    from songcorpus.train.trainer import Dist, train

    return train(config, data, run, Dist(), progress=progress, backbone=backbone, stop_after=stop_after)


def launch_torchrun(config: TrainConfig, data: str, run: Path, workers: int, backbone: Path | None = None,
                    progress: bool = True, stop_after: int | None = None) -> int:
    """``torchrun --standalone --nproc-per-node N`` on this machine (gloo on CPU, NCCL on GPUs)."""
    cfg = write_config(config, run)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={workers}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "songcorpus.train.launch",
           "--config", str(cfg), "--model", config.model.name, "--data", str(data), "--run-dir", str(run)]
    if backbone:
        cmd += ["--backbone", str(backbone)]
    if not progress:
        cmd.append("--no-progress")
    if stop_after:
        cmd += ["--stop-after", str(stop_after)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(cmd, env=env).returncode


def launch_ray(config: TrainConfig, data: str, run: Path, workers: int, backbone: Path | None = None,
               address: str | None = None, use_gpu: bool = False, node_ip: str | None = None,
               stop_after: int | None = None) -> dict[str, Any]:
    """Ray Train ``TorchTrainer`` with ``workers`` workers (CPU here, GPUs on a cluster with ``use_gpu``).

    Without ``address`` it starts a private local Ray (never one this machine once knew, nor ``$RAY_ADDRESS``)
    and stops it after; with one it joins that cluster (``node_ip``: this driver's address there, 127.0.0.1 by
    default for a head on the loopback). The workers' ranks write and read the run folder itself (checkpoints,
    each rank's RNG), so on several machines ``run`` and ``data`` must be paths every node reaches (a shared
    filesystem). Rank 0 hands the loop's result back through a small actor, so the driver needs no access to
    Ray Train's storage; re-running resumes from the run's last checkpoint like every other launcher. (Ray
    Train's placement-group cleaner polls Ray's State API, which lives in the dashboard; the locked Ray has no
    dashboard dependencies, so it logs "Failed to query Ray Train Controller actor state" while a fit runs.)"""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from songcorpus.io.ray_address import driver_node_ip

    run = Path(run).resolve()
    write_config(config, run)
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
        if address:
            kwargs["address"] = address
            ip = driver_node_ip(address, node_ip)
            if ip:
                kwargs["_node_ip_address"] = ip
        else:  # a private local instance, never a cluster this machine once knew
            kwargs.update(address="local", num_cpus=max(workers, 1) + 1)
        ray.init(**kwargs)
    try:
        box = ray.remote(num_cpus=0)(_ResultBox).remote()
        payload = {"config": config.model_dump(mode="json"), "data": str(data), "run": str(run),
                   "backbone": str(backbone) if backbone else None, "stop_after": stop_after, "result": box}
        trainer = TorchTrainer(_ray_worker, train_loop_config=payload,
                               scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
                               # a failed worker fails the fit; the re-run resumes from the last checkpoint
                               run_config=RunConfig(name=run.name, storage_path=str(run / "ray"),
                                                    failure_config=FailureConfig(max_failures=0)))
        trainer.fit()
        return dict(ray.get(box.get.remote()) or {})
    finally:
        if started:
            ray.shutdown()


class _ResultBox:
    """Holds rank 0's result for the driver (a Ray actor; no shared storage needed)."""

    def __init__(self) -> None:
        self.value: dict[str, Any] | None = None

    def set(self, value: dict[str, Any]) -> None:
        self.value = value

    def get(self) -> dict[str, Any] | None:
        return self.value


def _ray_worker(payload: dict[str, Any]) -> None:
    import ray

    from songcorpus.schemas.training import TrainConfig
    from songcorpus.train.trainer import init_distributed, train

    config = TrainConfig.model_validate(payload["config"])
    dist = init_distributed()
    out = train(config, payload["data"], payload["run"], dist, progress=False,
                backbone=Path(payload["backbone"]) if payload["backbone"] else None, stop_after=payload["stop_after"])
    if dist.main:
        ray.get(payload["result"].set.remote(dict(out)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one training worker (what torchrun starts); use `songcorpus train`")
    p.add_argument("--config", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--backbone")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stop-after", type=int)
    args = p.parse_args(argv)
    from songcorpus.train.trainer import init_distributed, train

    config = load_train_config(args.model, args.config)
    dist = init_distributed()
    out = train(config, args.data, args.run_dir, dist, progress=not args.no_progress,
                backbone=Path(args.backbone) if args.backbone else None, stop_after=args.stop_after)
    if dist.main:
        print(json.dumps({"result": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
