"""Apache Beam runner: the same stage groups as Ray, as ParDos, on any Beam runner.

What a job looks like, on every runner (DirectRunner, PortableRunner, Flink, Spark, Dataflow, Dask):

  driver: write the rows (or shard plans) as JSON-lines part files into a job folder in the artefact store
  Create(part file names) | FlatMap(read part) | Reshuffle | ParDo(stage group) ... | ParDo(write results)
  driver: read the result files back (small metadata: scores, sample entries, shard catalog parts)

The graph holds only part file names (a few per worker), never the rows: Dataflow caps a job graph's size.
Workers read their inputs and write their outputs themselves (the artefact store, the shard folder, the job
folder), so every worker must reach those paths: a shared filesystem today, an object store URL through the
storage layer once the paths are URLs. The pipeline is one straight chain ending in a DoFn that writes its own
files, because that is what Beam's Dask runner runs (it computes only the last transform of the graph, so a
second branch never runs, and a ``WriteToText`` ends with an empty file: its finalize step sees nothing).

``engine.beam_options`` pass through to Beam unchanged (``--runner=PortableRunner --job_endpoint=...``,
``--runner=FlinkRunner``, ``--runner=DataflowRunner --project=...``); ``--runner=DaskRunner`` is accepted as a
short name. With no ``--runner`` it is Beam's local FnApiRunner (what the DirectRunner itself runs a batch
pipeline on, named directly: the DirectRunner first tries its Prism runner, whose binary it downloads from the
network into ``~/.apache_beam``, and falls back once that fails) in multi-processing mode with ``engine.workers``
processes; with one worker, in memory in the driver's process (each of a job's three pipelines would otherwise
start a worker that imports torch and the stages again: a 12 s song took 57 s that way against 15 s in
memory, with the same bytes). ``DoFn.setup`` builds the stages once per worker (per worker thread on Dask, whose tasks call setup
once per partition); model weights load on the first cache miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from songcorpus.io import storage
from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.disk_map import DiskMap
from songcorpus.pipelines.corpus.planned_shards import write_planned_shard
from songcorpus.pipelines.corpus.shard_plans import ShardPlan, ShardWriter
from songcorpus.pipelines.engines.engine_logs import quiet_beam_workers, quiet_engine_loggers
from songcorpus.pipelines.engines.executor import StageGroup, group_stages
from songcorpus.pipelines.job.exchange_folder import JobFolder, part_count, read_part
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, canonical_json, source_of
from songcorpus.transforms.base import Resources
from songcorpus.transforms.registry import build_stages

RUNNER_ALIASES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}
DASK_RUNNER = RUNNER_ALIASES["DaskRunner"]
MAX_LINES_PER_PART = 256  # a part is read by one worker; more parts than workers balance uneven songs
MIN_PARTS_PER_WORKER = 4


LOCAL_RUNNER = "FnApiRunner"  # the runner of a job given no --runner (see the module docstring)


def pipeline_flags(config: PipelineConfig) -> list[str]:
    """The Beam options of a job: the config's, with the Dask runner's short name expanded and one Create
    element per Dask partition (its default packs 128 elements into one partition, i.e. one worker)."""
    flags = []
    for flag in config.engine.beam_options:
        name, eq, value = flag.partition("=")
        flags.append(f"{name}={RUNNER_ALIASES.get(value, value)}" if name == "--runner" and eq else flag)
    runner = runner_of(flags)
    if runner is None:
        mode = "multi_processing" if config.engine.workers > 1 else "in_memory"
        flags += [f"--runner={LOCAL_RUNNER}", f"--direct_running_mode={mode}",
                  f"--direct_num_workers={config.engine.workers}"]
    elif runner == DASK_RUNNER and not any(f.startswith(("--dask_npartitions", "--dask_partition_size"))
                                           for f in flags):
        flags.append("--dask_partition_size=1")
    return flags


def runner_of(flags: list[str]) -> str | None:
    runners = [f.partition("=")[2] for f in flags if f.startswith("--runner=")]
    return runners[-1] if runners else None


# ---- worker side ------------------------------------------------------------------------------------------

_local = threading.local()


def _stage_group(config_json: str, store_root: str, phase: str, stage_names: list[str]) -> StageGroup:
    """The stage group for these parameters, built once per worker thread and kept for its next bundles (Dask
    calls ``DoFn.setup`` for every partition; reloading models each time would dominate short partitions)."""
    cache: dict[str, StageGroup] = _local.__dict__.setdefault("groups", {})
    key = hashlib.sha256("\x1f".join([config_json, store_root, phase, *stage_names]).encode()).hexdigest()
    if key not in cache:
        config = PipelineConfig.model_validate_json(config_json)
        stages = [s for s in build_stages(config, ArtefactStore(store_root), phase) if s.name in stage_names]
        while len(cache) >= 4:  # a long-lived worker serves several jobs; keep only the recent groups' models
            cache.pop(next(iter(cache)))
        cache[key] = StageGroup(stages)
    return cache[key]


class GroupDoFn(beam.DoFn):
    """One stage group over rows given as canonical JSON; built from the config, not pickled stage objects."""

    def __init__(self, config_json: str, store_root: str, phase: str, stage_names: list[str]) -> None:
        self.config_json, self.store_root, self.phase, self.stage_names = config_json, store_root, phase, stage_names
        self.group: StageGroup | None = None

    def setup(self) -> None:
        self.group = _stage_group(self.config_json, self.store_root, self.phase, self.stage_names)

    def process(self, payload: str) -> Iterator[str]:
        assert self.group is not None
        (row,) = self.group([json.loads(payload)])
        yield canonical_json(row)


class WriteLinesDoFn(beam.DoFn):
    """The sink: each bundle's lines go to one file in ``folder``, named by its content, written atomically,
    so a retried bundle rewrites the same file and the driver never reads half of one. Yields nothing, so no
    runner gathers rows back to the driver."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.lines: list[str] = []

    def start_bundle(self) -> None:
        self.lines = []

    def process(self, line: str) -> Iterator[Any]:
        self.lines.append(line)
        return iter(())

    def finish_bundle(self) -> None:
        if self.lines:
            data = "".join(line + "\n" for line in sorted(self.lines)).encode()
            storage.write_bytes(storage.join(self.folder, f"part-{hashlib.sha256(data).hexdigest()[:32]}.jsonl"), data)
        self.lines = []


class WriteShardDoFn(beam.DoFn):
    """Writes one planned shard on the worker (into the shard folder, or uploaded to the shard URL) and its
    catalog part (``results/<shard>.json`` in the job folder)."""

    def __init__(self, shard_dir: str, store_root: str, folder: str) -> None:
        self.shard_dir, self.store_root, self.folder = shard_dir, store_root, folder
        self.store: ArtefactStore | None = None

    def setup(self) -> None:
        self.store = ArtefactStore(self.store_root)

    def process(self, line: str) -> Iterator[Any]:
        assert self.store is not None
        plan = ShardPlan.from_json(line)
        part = write_planned_shard(plan, self.shard_dir, self.store)
        storage.write_bytes(storage.join(self.folder, f"{plan.name}.json"), canonical_json(part).encode())
        return iter(())


# ---- driver side ------------------------------------------------------------------------------------------


def run_pipeline(flags: list[str], parts: list[str], build: Callable[[beam.PCollection], object]) -> None:
    """Run ``Create(part names) | read | Reshuffle | build(...)`` to the end; a failed job raises."""
    runner = runner_of(flags)
    quiet_engine_loggers()  # Beam's runner logs only under --verbose (pipelines/engines/engine_logs.py)
    if runner == DASK_RUNNER:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    pipeline = beam.Pipeline(options=PipelineOptions(flags))
    lines = (pipeline
             | "Parts" >> beam.Create(parts)
             | "Read" >> beam.FlatMap(read_part)
             | "Spread" >> beam.Reshuffle())
    build(lines)
    # the local runner's worker processes share the job's stderr: their logs only under --verbose
    with quiet_beam_workers(f"--runner={LOCAL_RUNNER}" in flags and "--direct_running_mode=multi_processing" in flags):
        result = pipeline.run()
        try:
            state = result.wait_until_finish()
        finally:
            client = getattr(result, "client", None)  # the Dask runner leaves its client open
            if client is not None:
                client.close()
    if state != "DONE":
        raise RuntimeError(f"the Beam job ended {state} (runner {runner or LOCAL_RUNNER})")


def resource_hints(res: Resources) -> dict[str, str]:
    """A stage group's declared resources as Beam resource hints: the RAM a worker needs and the CPUs one
    element uses (a runner that places workers, such as Dataflow, reads them; the local runners ignore them).
    GPU placement on Beam is the runner's worker configuration, not a per-transform hint."""
    return {"min_ram": f"{res.memory_mb}MiB", "cpu_count": str(max(1, math.ceil(res.num_cpus)))}


def run_beam(rows: Collection[Row], config: PipelineConfig, store_root: str, progress: bool = True,
             phase: str = "analysis") -> Iterator[Row]:
    """Run one phase's stage groups over the rows on the configured Beam runner; rows come back in any order,
    streamed from the workers' result parts. The driver holds one row (and one input part) at a time: the sources
    it has seen are kept in a scratch file (``songcorpus/io/disk_map.py``), ``rows`` may be a file-backed collection."""
    store = ArtefactStore(store_root)
    groups = group_stages(build_stages(config, store, phase))
    config_json = config.model_dump_json()
    flags = pipeline_flags(config)
    with JobFolder(store_root, f"beam-{phase}") as job:
        parts = job.write_inputs((canonical_json(r) for r in rows), len(rows),
                                 part_count(len(rows), MIN_PARTS_PER_WORKER * config.engine.workers, MAX_LINES_PER_PART))

        def build(pcoll: beam.PCollection) -> None:
            for group in groups:
                pcoll = pcoll | group.name >> beam.ParDo(
                    GroupDoFn(config_json, str(store_root), phase, [s.name for s in group.stages])
                ).with_resource_hints(**resource_hints(group.resources))
            pcoll | "Collect" >> beam.ParDo(WriteLinesDoFn(str(job.results)))

        run_pipeline(flags, parts, build)
        seen: DiskMap[int] = DiskMap()
        for path in job.result_files("part-*.jsonl"):
            for line in read_part(path):
                row = json.loads(line)
                if source_of(row) not in seen:  # a retried bundle may have written a row twice
                    seen[source_of(row)] = 1
                    yield row
    missing = sorted(src for src in map(source_of, rows) if src not in seen)
    seen.close()
    if missing:
        raise RuntimeError(f"the Beam job returned no result for {len(missing)} of {len(rows)} rows "
                           f"(first: {missing[0]})")


def store_url(store: ArtefactStore) -> str:
    """What workers are given for the store: its URL on an object store, else its folder."""
    return str(getattr(store, "url", None) or store.root)


def beam_shard_writer(config: PipelineConfig) -> ShardWriter:
    """A :data:`ShardWriter` that writes the planned shards on the Beam runner's workers."""

    def write(plans: list[ShardPlan], shard_dir: str | Path, store: ArtefactStore,
              progress: bool) -> list[dict[str, Any]]:
        if not plans:
            return []
        with JobFolder(store_url(store), "beam-shards") as job:
            parts = job.write_inputs((p.to_json() for p in plans), len(plans),
                                     part_count(len(plans), MIN_PARTS_PER_WORKER * config.engine.workers,
                                                MAX_LINES_PER_PART))
            run_pipeline(pipeline_flags(config), parts, lambda pcoll: pcoll | "WriteShards" >> beam.ParDo(
                WriteShardDoFn(str(shard_dir), store_url(store), job.results)))
            written = [json.loads(storage.read_bytes(p)) for p in job.result_files("*.json")]
        missing = sorted({p.name for p in plans} - {w["shard"] for w in written})
        if missing:
            raise RuntimeError(f"the Beam job wrote no catalog part for {len(missing)} shards (first: {missing[0]})")
        return written

    return write

