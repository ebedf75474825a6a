"""The curation job: sources -> engine (analysis stages) -> stored scores -> corpus (gates, shards, catalog).

State kept in OUT so the job can resume and be re-decided:
  OUT/config.yaml            the full config the corpus was built with
  OUT/state/rows.jsonl       every input's analysis results and outcome (the stored scores)
  OUT/state/lineage.json     stage, version, model, checksum and config hash of each stage
  OUT/shards/, OUT/catalog/, OUT/catalog.duckdb
  OUT/published.json         written last: every object above with its size and sha256 (songcorpus/io/storage.py)
  OUT/progress.json          the running job's figures, rewritten every few seconds and last with done: true
                             (pipelines/job/progress.py; not part of the corpus)
The content-addressed cache (default OUT/.cache) holds per-stage results and standardised audio;
re-running the same command after a crash reuses every finished stage result.

OUT (and the cache) may be an object-store URL: the corpus is then written into a local staging folder, each
shard uploaded as soon as it is written (and removed from staging), the rest at the end, and the marker written
last; a crash leaves no marker, so readers see no corpus, and the re-run finishes it (a shard the store holds
with the bytes its unchanged plan makes is fetched, checked and kept, not re-uploaded).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from songcorpus.io import storage
from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.atomic import atomic_write_bytes
from songcorpus.io.fault_points import passing
from songcorpus.pipelines.build_corpus import build_corpus
from songcorpus.pipelines.corpus.decide import Decision
from songcorpus.pipelines.corpus.planned_shards import SHARD_MANIFEST
from songcorpus.pipelines.corpus.shard_plans import ShardPlan, ShardWriter
from songcorpus.pipelines.job.output_claim import claim_output
from songcorpus.pipelines.job.progress import JobProgress, QueueProbe, Watcher
from songcorpus.pipelines.job.state_rows import (
    SpooledRows,
    iter_state_rows,
    scores_of,
    slim_state_rows,
    write_state_rows,
)
from songcorpus.pipelines.job.temp_dir import job_temp_dir
from songcorpus.pipelines.sinks.catalog import read_funnel
from songcorpus.pipelines.sources.inputs import spool_inputs
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.failures import (
    RESUME_HINT,
    STAGE_FAULT_MARKER,
    JobFault,
    describe,
    exception_chain,
    find_stage_fault,
)
from songcorpus.schemas.progress import Progress
from songcorpus.schemas.row import Row, new_row, rejected_early, set_outcome, source_of, take_stage_seconds
from songcorpus.transforms.registry import build_stages

log = logging.getLogger("songcorpus")

# Config sections that only affect decisions, samples and layout: changing them re-runs no analysis stage
# (rebuild runs the samples phase, which reuses every sample whose inputs did not change).
LATE_BINDING_SECTIONS = ("gates", "shards", "splits", "engine", "cache_dir", "windows", "augment", "models",
                         "near_duplicates")


# What a corpus is, for its publication marker: everything but the cache and temporary files.
CORPUS_PARTS = ("shards", "catalog", "catalog.duckdb", "codec", "state", "config.yaml")
STATE_ROWS = "state/rows.jsonl"
STATE_FILES = ("config.yaml", STATE_ROWS, "state/lineage.json")


@dataclass(frozen=True)
class CurateResult:
    out: Path | str  # a local folder, or the URL it was published to
    decisions: dict[str, Decision]
    seconds: float
    progress: Progress | None = None  # the job's final figures, as OUT/progress.json holds them

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.decisions.values():
            out[d.status] = out.get(d.status, 0) + 1
        return out


def store_for(config: PipelineConfig, out: Path | str) -> ArtefactStore:
    return ArtefactStore(config.cache_dir if config.cache_dir else storage.join(out, ".cache"))


def run_engine(rows: Collection[Row], config: PipelineConfig, store: ArtefactStore, progress: bool,
               phase: str = "analysis", tracker: JobProgress | None = None) -> Iterator[Row]:
    """The phase's results as the engine yields them (any order): the caller streams them, never a list. Each row's
    stage timings are taken off it here (and counted by ``tracker``), so no row the job keeps holds them."""
    if not rows:
        return iter(())
    if config.engine.name == "ray":
        from songcorpus.pipelines.engines.ray_runner import ray_queues, run_ray

        return _timings_taken(run_ray(rows, config, store.url, progress=progress, phase=phase), len(rows), tracker,
                              ray_queues)
    run_beam = beam_runner().run_beam
    return _timings_taken(run_beam(rows, config, store.url, progress=progress, phase=phase), len(rows), tracker, None)


def beam_runner() -> ModuleType:
    """The Beam runner module, imported without the warnings Beam logs on import unless the engines' logs are
    wanted (``pipelines/engines/engine_logs.py``)."""
    from songcorpus.pipelines.engines.engine_logs import quiet_engine_import

    with quiet_engine_import():
        from songcorpus.pipelines.engines import beam_runner as module
    return module


def _timings_taken(results: Iterator[Row], n: int, tracker: JobProgress | None,
                   queues: QueueProbe | None) -> Iterator[Row]:
    if tracker is not None:
        tracker.handed(n)
        tracker.watch_queues(queues)
    try:
        for row in results:
            spent = take_stage_seconds(row)
            if tracker is not None:
                tracker.row_back(row, spent)
            yield row
    finally:
        if tracker is not None:
            tracker.watch_queues(None)


@contextmanager
def engine_session(config: PipelineConfig) -> Iterator[None]:
    """One engine start for both phases (local Ray costs seconds to start); stopped at the end if started here.
    numba's kernel cache is filled here, before any worker exists (pipelines/engines/jit_cache.py says why)."""
    from songcorpus.pipelines.engines.jit_cache import warm_jit_cache

    warm_jit_cache()
    if config.engine.name != "ray":
        yield
        return
    import ray

    from songcorpus.pipelines.engines.ray_runner import start_ray

    started = start_ray(config)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def samples_runner(config: PipelineConfig, store: ArtefactStore, progress: bool,
                   tracker: JobProgress | None = None) -> Callable[[list[Row]], Iterator[Row]]:
    def run(rows: list[Row]) -> Iterator[Row]:
        return run_engine(rows, config, store, progress, phase="samples", tracker=tracker)

    return run


def shard_writer(config: PipelineConfig) -> ShardWriter:
    """Who writes the shards: the engine's workers (Ray tasks, Beam DoFns), never the driver (design.md: the
    driver plans and merges small metadata)."""
    if config.engine.name == "ray":
        from songcorpus.pipelines.engines.ray_runner import ray_shard_writer

        return ray_shard_writer(config)
    return beam_runner().beam_shard_writer(config)


def output_shard_writer(target: storage.OutputDir, config: PipelineConfig) -> ShardWriter:
    """The engine's shard writer (:func:`shard_writer`); for an object-store output its workers are given the
    output URL and upload each shard as they write it (a shard an earlier run stored from the same plan is
    fetched and checked instead: ``corpus.write_planned_shard``); the driver records what they stored."""
    inner = shard_writer(config)
    if not target.remote:
        return inner

    def write(plans: list[ShardPlan], shard_dir: Path, store: ArtefactStore, progress: bool) -> list[dict[str, Any]]:
        parts = inner(plans, target.target("shards"), store, progress)
        for part in parts:
            for f in part["files"]:
                target.keep(f"shards/{f['file']}", f["sha256"], f["bytes"])
        return parts

    return write


def counted_shards(writer: ShardWriter, tracker: JobProgress) -> ShardWriter:
    """``writer``, with the plans it is handed and the catalog parts it returns counted by ``tracker``."""

    def write(plans: list[ShardPlan], shard_dir: Path, store: ArtefactStore, progress: bool) -> list[dict[str, Any]]:
        tracker.handed(len(plans))
        parts = writer(plans, shard_dir, store, progress)
        for _ in parts:
            tracker.part_back()
        return parts

    return write


def preflight(stages: list) -> None:
    """Every stage's model checks before any data is read; all problems in one error, so a user fetches
    every missing model in one go instead of one per attempt."""
    from songcorpus.transforms.models.registry import ModelError

    problems: list[str] = []
    for stage in stages:
        try:
            stage.preflight()
        except ModelError as exc:
            problems += [p for p in exc.problems if p not in problems]
    if problems:
        raise ModelError.of(problems)


@contextmanager
def job_faults() -> Iterator[None]:
    """Whatever stops a running job leaves as one :class:`JobFault` saying what failed and that nothing was
    published (``schemas/failures.py``): a stage's fault found in whatever the engine wrapped it in, a full,
    read-only or failing disk by its errno and path, anything else by its type and the line that raised it."""
    try:
        yield
    except (JobFault, ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise JobFault(job_fault_message(exc)) from exc


def job_fault_message(exc: BaseException) -> str:
    fault = find_stage_fault(exc)
    if fault is not None:
        what = fault.removeprefix(STAGE_FAULT_MARKER + ": ")
        return (f"the job stopped: {what}. This is a fault of the machine or of songcorpus, not of the input "
                f"(a bad input gets its row and the job goes on); {RESUME_HINT}")
    chain = exception_chain(exc)
    for node in chain:  # the store's own one line names the endpoint and the object
        if isinstance(node, storage.StorageError):
            return f"the job stopped: {str(node).split(' [while running')[0]}; {RESUME_HINT}"
    for node in chain:
        if isinstance(node, OSError) and node.errno is not None:
            return f"the job stopped: {describe(node)}; {RESUME_HINT}"
    return f"the job stopped: {describe(exc)}; {RESUME_HINT} (--verbose prints the traceback)"


def curate(inputs: list[str], out: str | Path, config: PipelineConfig, progress: bool = True,
           watcher: Watcher | None = None) -> CurateResult:
    """Curate ``inputs`` into ``out``, which must be new, empty or songcorpus's own, and is locked for the run
    (``pipelines/job/output_claim.py``). ``progress``: the engine's own progress bars; ``watcher`` gets the job's
    figures every few seconds and at each phase change (``OUT/progress.json`` holds the same)."""
    with claim_output(out, "curate"), job_temp_dir():
        return _curate(inputs, out, config, progress, watcher)


def _curate(inputs: list[str], out: str | Path, config: PipelineConfig, progress: bool,
            watcher: Watcher | None) -> CurateResult:
    start = time.monotonic()
    target = storage.OutputDir(out)
    try:
        with JobProgress(target.url, "curate", config, watcher) as tracker:
            out = target.local  # the output folder itself, or the staging folder of a URL
            store = store_for(config, target.url)
            stages = build_stages(config, store)
            preflight([*stages, *build_stages(config, store, "samples")])
            records = spool_inputs(inputs, storage.join(store.url, "inputs"),  # on local disk, in source order
                                   exclude=(target.url, store.url))  # no scan enters what this curate writes
            n_inputs = len(records)
            log.info("%d inputs", n_inputs)
            tracker.inputs(n_inputs)
            rows = SpooledRows(new_row(r.to_dict()) for r in records.iter_values())  # the engine streams them to parts
            records.close()
            with job_faults():
                target.begin()
                stage_prior_manifest(target)
                tracker.phase("start")
                with engine_session(config):
                    lineages = {s.name: s.lineage() for s in stages}
                    tracker.phase("analysis", n_inputs)
                    slim = analyse_into_state(rows, out, config, store, lineages, progress, tracker)
                    rows.close()
                    if len(slim) != n_inputs:
                        raise RuntimeError(f"engine returned {len(slim)} rows for {n_inputs} inputs")
                    decisions = build_corpus(slim, config, out, store, lineages,
                                             samples_runner(config, store, progress, tracker), progress=progress,
                                             write_shards=counted_shards(output_shard_writer(target, config), tracker),
                                             full_rows=lambda: iter_state_rows(out / STATE_ROWS), on_phase=tracker.phase)
                funnel = read_funnel(out)  # the catalog just written (staged, for an object store)
                tracker.phase("publish")
                publish(target)
            figures = tracker.finish(funnel)
    finally:
        target.close()
    return CurateResult(target.url if target.remote else target.local, decisions, time.monotonic() - start, figures)


def stage_prior_manifest(target: storage.OutputDir) -> None:
    """On an object store: stage the shard manifest of an earlier run, so the shard planner knows which stored
    shards an unchanged plan made (:func:`output_shard_writer` fetches those to check them)."""
    if target.remote:
        target.fetch(f"shards/{SHARD_MANIFEST}")


def publish(target: storage.OutputDir) -> None:
    """Upload what is staged and write the publication marker last; shard checksums come from the manifest the
    shard writer just wrote (no shard is read again)."""
    manifest = target.local / "shards" / SHARD_MANIFEST
    known = json.loads(manifest.read_text()) if manifest.exists() else {}
    target.publish(CORPUS_PARTS, {f"shards/{f}": sha for e in known.values() for f, sha in e["files"].items()})


def analyse_into_state(rows: Collection[Row], out: Path, config: PipelineConfig, store: ArtefactStore,
                       lineages: dict, progress: bool, tracker: JobProgress | None = None) -> SpooledRows:
    """Run the analysis phase, streaming every result into ``state/rows.jsonl`` (sorted by source) as it comes
    back; return the rows slimmed to what decisions read (``state_rows.slim_row``), sorted by source."""
    write_state_rows(out / STATE_ROWS, passing(run_engine(rows, config, store, progress, tracker=tracker),
                                               "analysis-row"))
    save_state(out, config, lineages)
    return slim_state_rows(out / STATE_ROWS)


def save_state(out: Path, config: PipelineConfig, lineages: dict) -> None:
    """The state files besides ``rows.jsonl`` (:func:`analyse_into_state` streams that one in)."""
    state = out / "state"
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(state / "lineage.json", (json.dumps(lineages, indent=1, sort_keys=True) + "\n").encode())
    if config.cache_dir:  # a cache URL given with a credential is recorded without it (songcorpus/io/storage.py)
        config = config.model_copy(update={"cache_dir": storage.redact_url(config.cache_dir)})
    atomic_write_bytes(out / "config.yaml", config.to_yaml().encode())


def load_state(out: Path | str, slim: bool = False) -> tuple[PipelineConfig, SpooledRows, dict]:
    """Config, rows (full, or with ``slim`` what decisions read: ``state_rows.slim_row``; on local scratch disk,
    read as they are iterated) and lineages of a corpus."""
    if storage.is_url(out):  # the published state, checked against the marker's checksums
        import tempfile

        with tempfile.TemporaryDirectory(prefix="songcorpus-state-") as tmp:
            try:
                storage.fetch_published(out, STATE_FILES, Path(tmp))
            except FileNotFoundError as exc:
                raise ConfigError(str(exc)) from None
            return load_state(Path(tmp), slim)
    out = Path(out)
    state = out / "state"
    if not (out / STATE_ROWS).exists():
        raise ConfigError(f"{out} holds no curated corpus (no state/rows.jsonl); run `songcorpus curate` first")
    import yaml

    config = PipelineConfig.model_validate(yaml.safe_load((out / "config.yaml").read_text()))
    rows = slim_state_rows(out / STATE_ROWS) if slim else SpooledRows(iter_state_rows(out / STATE_ROWS))
    lineages = json.loads((state / "lineage.json").read_text())
    return config, rows, lineages


def reopen_early_rejections(rows: Iterable[Row], config: PipelineConfig) -> SpooledRows:
    """Rows an early gate rejected were never fully analysed: the new gates re-decide them only while they
    still reject them; one they would now accept needs the missing analysis, so ``curate`` again."""
    from songcorpus.transforms.corpus.gates import apply_gates

    out, reopened = SpooledRows(), []
    for row in rows:
        if rejected_early(row):
            gate = apply_gates(config.gates, scores_of(row))
            if gate is None:
                reopened.append(source_of(row))
            else:
                row = {**row}  # the new gate's outcome on a copy
                set_outcome(row, "rejected", gate.stage, gate.code, gate.reason, early=True)
        out.append(row)
    if reopened:
        raise ConfigError(f"the new gates would accept {len(reopened)} input(s) that an early gate rejected before "
                          f"their analysis finished (first: {reopened[0]}); run `songcorpus curate` with the new "
                          f"config instead (it reuses every cached result)")
    return out


def rebuild(out: str | Path, new_config: PipelineConfig, progress: bool = True,
            watcher: Watcher | None = None) -> CurateResult:
    """Re-decide and rewrite shards and catalog from stored scores; no analysis stage runs (the samples
    phase does, for songs whose samples are not in the cache yet). ``progress`` and ``watcher``: as for
    :func:`curate` (the rebuild rewrites ``OUT/progress.json`` too)."""
    start = time.monotonic()
    with claim_output(out, "rebuild"), job_temp_dir():
        target = storage.OutputDir(out)
        try:
            with JobProgress(target.url, "rebuild", new_config, watcher) as tracker, job_faults():
                return _rebuild(target, new_config, progress, start, tracker)
        finally:
            target.close()


def _rebuild(target: storage.OutputDir, new_config: PipelineConfig, progress: bool, start: float,
             tracker: JobProgress) -> CurateResult:
    out = target.local
    if target.remote:  # stage the published state (checked), so the new marker lists it again
        try:
            storage.fetch_published(target.url, STATE_FILES, out)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
        for rel in STATE_FILES:
            target.fetch(rel)
    old_config, rows, lineages = load_state(out, slim=True)
    old, new = old_config.model_dump(), new_config.model_dump()
    changed = sorted(k for k in new if k not in LATE_BINDING_SECTIONS and old.get(k) != new.get(k))
    if changed:
        raise ConfigError(f"rebuild only re-applies {', '.join(LATE_BINDING_SECTIONS)}; the new config also "
                          f"changes {', '.join(changed)}, which needs `songcorpus curate` (it reuses the cache)")
    rows = reopen_early_rejections(rows, new_config)
    tracker.count_decided(rows)
    store = store_for(old_config, target.url)
    target.begin()
    stage_prior_manifest(target)
    merged = new_config.model_copy(update={"cache_dir": old_config.cache_dir})
    atomic_write_bytes(out / "config.yaml", merged.to_yaml().encode())
    tracker.phase("start")
    with engine_session(merged):
        decisions = build_corpus(rows, merged, out, store, lineages, samples_runner(merged, store, progress, tracker),
                                 progress=progress, write_shards=counted_shards(output_shard_writer(target, merged),
                                                                                tracker),
                                 full_rows=lambda: iter_state_rows(out / STATE_ROWS), on_phase=tracker.phase)
    funnel = read_funnel(out)
    tracker.phase("publish")
    publish(target)
    return CurateResult(target.url if target.remote else target.local, decisions, time.monotonic() - start,
                        tracker.finish(funnel))
