"""Ray Data runner (the default engine): local Ray on a laptop, ``--address`` for a cluster.

Each stage group becomes one ``map_batches`` operator on an actor pool, so ``setup()`` (model
loading) happens once per actor; the pool's CPU/GPU/memory request is the group's declared
resources. Rows travel as canonical JSON strings (small: audio stays in the artefact store, which
must be a path every worker can reach: on a cluster an object-store URL, or a shared filesystem); the
driver hands them over as part files in that store (``pipelines/job/exchange_folder.py``), not as a list.

Which Ray: with ``engine.ray_address`` (``--address``) the job joins that cluster, and the driver names its own
node address (``engine.ray_node_ip``; 127.0.0.1 when the head is dialled on the loopback: a driver that left it
to Ray's guess was measured to hang against nodes started on 127.0.0.1). Without one, it always starts a private
instance (``address="local"``): never ``$RAY_ADDRESS``, nor the cluster named in ``/tmp/ray/ray_current_cluster``,
which a killed ``ray start`` leaves behind and which made a plain local run join a dead or foreign cluster.

What the driver sees of a running phase: each result block as the last operator yields it (a few rows: the driver's
progress figures move as songs finish), and, through a Ray Data execution callback (:func:`queue_probe_class`), the rows
queued in front of each stage group. Ray's own logs, progress bars and workers' prints show only under ``--verbose``
(``pipelines/engines/engine_logs.py``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.ray_address import driver_node_ip
from songcorpus.pipelines.corpus.planned_shards import write_planned_shard
from songcorpus.pipelines.corpus.shard_plans import ShardPlan, ShardWriter
from songcorpus.pipelines.engines.engine_logs import engine_logs_wanted, quiet_engine_loggers, quiet_ray_core
from songcorpus.pipelines.engines.executor import StageGroup, group_stages
from songcorpus.pipelines.job.exchange_folder import JobFolder, part_count, read_part
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, canonical_json
from songcorpus.transforms.registry import build_stages


class _GroupActor:
    """One Ray actor running a stage group; built from the config, not pickled stage objects."""

    def __init__(self, config_json: str, store_root: str, phase: str, stage_names: list[str]) -> None:
        config = PipelineConfig.model_validate_json(config_json)
        stages = [s for s in build_stages(config, ArtefactStore(store_root), phase) if s.name in stage_names]
        self.group = StageGroup(stages)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "part" in batch:  # the first group reads its input part files itself (pipelines/job/exchange_folder.py)
            payloads = [line for url in batch["part"] for line in read_part(url)]
        else:
            payloads = list(batch["payload"])
        rows = self.group([json.loads(p) for p in payloads])
        return {"payload": np.array([canonical_json(r) for r in rows], dtype=object)}


def ray_init_args(config: PipelineConfig) -> dict[str, Any]:
    """``ray.init`` arguments: join ``engine.ray_address``, else start a private local instance. Workers' output
    reaches the driver only when the engines' logs are wanted (``--verbose``)."""
    engine = config.engine
    verbose = engine_logs_wanted()
    init_args: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose,
                                 "logging_level": logging.INFO if verbose else logging.WARNING,
                                 "configure_logging": True}
    if engine.ray_address:
        init_args["address"] = engine.ray_address
        node_ip = driver_node_ip(engine.ray_address, engine.ray_node_ip)
        if node_ip:
            init_args["_node_ip_address"] = node_ip
    else:  # "local": start a new instance whatever RAY_ADDRESS or /tmp/ray/ray_current_cluster say
        init_args.update(address="local", num_cpus=engine.workers)
    return init_args


def start_ray(config: PipelineConfig) -> bool:
    """Start (or join, with ``engine.ray_address``) Ray unless it is running; True if this call started it."""
    import ray

    engine = config.engine
    started = not ray.is_initialized()
    if started:
        init_args = ray_init_args(config)
        if not engine.ray_address:
            # Workers inherit the driver's environment: one BLAS/OpenMP thread per worker, since the
            # pool itself is the parallelism (a runtime_env would cost a setup per worker instead).
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ.setdefault(var, "1")
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        # Local Ray on a laptop: no metrics export or usage reporting eating the cores the workers need.
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        with quiet_ray_core():
            ray.init(**init_args)
        quiet_engine_loggers()  # ray.init configured Ray's logger for itself
    return started


# The most input blocks (parts) of one phase: a block is the unit an actor takes, so one row per block balances
# songs that differ in length by 100x; past this many rows, blocks hold several rows.
MAX_BLOCKS = 4096


def queue_probe_class() -> type:
    """A Ray Data execution callback class (Ray builds it, without arguments) that keeps, for the driver's progress
    figures, the rows waiting in front of each stage group's operator and its tasks in flight, at most twice a second.
    It reads the streaming executor's operator states, which are Ray internals: whatever it cannot read leaves the
    queues unknown (None), never the job stopped. One dataset runs at a time on the driver; :func:`_drain` sets the
    groups it watches in :data:`_watched`. Built on first use: its base class lives in ``ray.data``, whose import
    costs seconds."""
    global _probe_class
    if _probe_class is None:
        from ray.data._internal.execution.execution_callback import ExecutionCallback

        class QueueProbe(ExecutionCallback):
            last = 0.0

            def on_execution_step(self, executor: Any) -> None:
                watched = _watched.get("groups")
                now = time.monotonic()
                if watched is None or now - self.last < 0.5:
                    return
                self.last = now
                try:
                    states = [s for s in executor._topology.values() if s.op.name.startswith("MapBatches(_GroupActor")]
                    if len(states) != len(watched):  # another dataset (the shard writer's), or fused operators
                        return
                    _watched["queues"] = {name: {"waiting": _waiting_rows(state),
                                                 "running": int(state.op.num_active_tasks())}
                                          for name, state in zip(watched, states, strict=True)}
                except Exception:  # noqa: BLE001 - Ray's internals moved: the queues stay unknown
                    _watched["queues"] = None

        _probe_class = QueueProbe
    return _probe_class


_probe_class: type | None = None


def _waiting_rows(state: Any) -> int:
    """Rows in the operator's input queues (the bundles' row counts; a block's count when a bundle has none)."""
    rows = 0
    for queue in state.input_queues:
        for inner in queue._queues:
            rows += int(inner.num_rows() or 0) or int(inner.num_blocks())
    return rows


# What the queue probe watches (``groups``: the running phase's stage group names) and saw last (``queues``).
_watched: dict[str, Any] = {}


def ray_queues() -> dict[str, dict[str, int]] | None:
    """The rows waiting and tasks in flight per stage group of the running phase, as last seen; None when unknown."""
    queues = _watched.get("queues")
    return dict(queues) if queues is not None else None


def run_ray(rows: Collection[Row], config: PipelineConfig, store_root: str, progress: bool = True,
            phase: str = "analysis") -> Iterator[Row]:
    """Run one phase's stage groups over the rows, yielding results as they come (any order; the driver holds
    one result block, a few rows, at a time); shuts down a Ray it had to start itself once the results are drained.

    Rows in a list (which the caller holds anyway: a samples-phase chunk) are handed to Ray as they are; any other
    collection (file-backed: the analysis phase's ``SpooledRows``) is streamed into part files in the artefact
    store (``JobFolder``) that the workers read, so the driver never lists them and Ray's object store holds only
    the part names."""
    import ray
    import ray.data

    engine = config.engine
    started = start_ray(config)
    quiet_engine_loggers()  # importing ray.data configured its loggers for itself
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    if queue_probe_class() not in ctx.custom_execution_callback_classes:
        ctx.custom_execution_callback_classes.append(queue_probe_class())
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    ctx.enable_auto_log_stats = False
    ctx.enable_get_object_locations_for_metrics = False

    store = ArtefactStore(store_root)
    groups = group_stages(build_stages(config, store, phase))
    n_blocks = part_count(len(rows), 1, 1, MAX_BLOCKS)  # one row per block up to MAX_BLOCKS
    job = None
    if isinstance(rows, list):  # the caller holds these already (a chunk of the samples phase): hand them over
        ds = ray.data.from_items([{"payload": canonical_json(r)} for r in rows], override_num_blocks=n_blocks)
    else:  # file-backed rows of any number: streamed into part files, which the workers read
        job = JobFolder(str(store_root), f"ray-{phase}")
        parts = job.write_inputs((canonical_json(r) for r in rows), len(rows), n_blocks)
        # no read task of its own: the first group's actors read the parts (a task would need a CPU the actor
        # pools hold, and a zero-CPU one was measured to make Ray start a worker process per part)
        ds = ray.data.from_items([{"part": url} for url in parts], override_num_blocks=len(parts))
    config_json = config.model_dump_json()
    rows_per_part = math.ceil(len(rows) / n_blocks)
    for i, group in enumerate(groups):
        res = group.resources
        ds = ds.map_batches(
            _GroupActor,
            fn_constructor_kwargs={"config_json": config_json, "store_root": str(store_root), "phase": phase,
                                   "stage_names": [s.name for s in group.stages]},
            # parts of several rows go to the first group one at a time (its batch: one part's rows)
            batch_size=group.batch_size if i or job is None or rows_per_part == 1 else 1,
            batch_format="numpy",
            # A fixed-size pool: every actor loads its model at start instead of the pool growing one
            # actor at a time while the first one already works (which costs scaling on short jobs).
            compute=ray.data.ActorPoolStrategy(size=engine.workers),
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus or None,
            memory=res.memory_mb * 1024 * 1024,
        )
    return _drain(ds, started, job, [g.name for g in groups])


def _drain(ds: Any, started: bool, job: JobFolder | None, group_names: list[str]) -> Iterator[Row]:
    import ray

    _watched.update(groups=group_names, queues=None)
    try:
        # batch_size None: each block as the last operator yields it (one batch of the last group), not gathered
        # into larger batches first, so results reach the driver (and its progress figures) as songs finish
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for payload in batch["payload"]:
                yield json.loads(payload)
    finally:
        _watched.update(groups=None, queues=None)
        if job is not None:
            job.__exit__()
        if started:
            ray.shutdown()


def _write_shard(item: dict[str, Any], shard_dir: str, store_root: str) -> dict[str, Any]:
    """One planned shard, written on a Ray worker (into the shard folder, or uploaded to the shard URL)."""
    part = write_planned_shard(ShardPlan.from_json(item["plan"]), shard_dir, ArtefactStore(store_root))
    return {"part": canonical_json(part)}


def ray_shard_writer(config: PipelineConfig) -> ShardWriter:
    """A :data:`ShardWriter` that writes the planned shards as Ray tasks, one shard each: the driver sends plans
    (keys, member paths, window fields) and gets catalog parts back, and never reads a sample member. The shard
    folder must be one every worker reaches: this machine's, a shared filesystem, or an object-store URL."""

    def write(plans: list[ShardPlan], shard_dir: str | Path, store: ArtefactStore,
              progress: bool) -> list[dict[str, Any]]:
        if not plans:
            return []
        import ray

        start_ray(config)
        ray.data.DataContext.get_current().enable_progress_bars = progress
        items = [{"plan": plan.to_json()} for plan in plans]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
            _write_shard, fn_kwargs={"shard_dir": str(shard_dir), "store_root": str(store.url)},
            num_cpus=1)
        return [json.loads(r["part"]) for r in ds.iter_rows()]

    return write
