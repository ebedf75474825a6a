"""Engine-agnostic execution of stages over rows, shared by the Ray and Beam runners.

Both engines call :class:`StageGroup` on batches of rows, so they run the very same code and produce
the same results. Each stage result goes through the content-addressed artefact store: a hit skips
the work (resume, re-runs), a miss computes and stores atomically. The input's fault (an ``InputError``, or a
:class:`Rejection`) becomes the row's outcome (``failed`` / ``rejected``) and later stages skip that row; any
other exception is the job's fault and raises :class:`StageFault`, which stops the job (``schemas/failures.py``).
Each row comes back carrying the seconds each stage spent on it (``stage_seconds``, which the driver takes off for
its progress figures: ``schemas/row.py``); stages never see it, so it cannot reach a result or a cache key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from songcorpus.io.audio import shared_decodes
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.failures import InputError, StageFault
from songcorpus.schemas.row import (
    Row,
    TrackDict,
    add_stage_seconds,
    has_result,
    outcome_of,
    set_outcome,
    set_result,
    source_of,
    take_stage_seconds,
    track_of,
)
from songcorpus.transforms.base import Rejection, Resources, Stage


def stage_resources(stage: Stage) -> Resources:
    """A model stage declares its GPU share (``device.gpu_share``) when it will run on CUDA, so Ray gives it
    a GPU actor pool; on a CPU-only run it is a CPU stage like any other."""
    res = stage.resources
    if stage.uses_gpu:
        import torch

        name = stage.config.device.name
        if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()):
            return Resources(num_cpus=res.num_cpus, num_gpus=stage.config.device.gpu_share, memory_mb=res.memory_mb)
    return res


def located(reason: str, track: TrackDict) -> str:
    """A reason names the input by its source, not by where its file sits on this machine (the catalog is the
    same wherever the corpus is curated from)."""
    path = track.get("path")
    return reason.replace(path, track["source"]) if path and path != track["source"] else reason


def run_stage(stage: Stage, row: Row, ready: list[bool]) -> None:
    """Apply one stage to one row in place (cache first; setup on the first miss)."""
    if outcome_of(row) is not None:
        return
    try:
        _run_stage(stage, row, ready)
    finally:
        outcome = outcome_of(row)
        if outcome is not None and outcome.get("reason"):
            outcome["reason"] = located(outcome["reason"], track_of(row))


def _run_stage(stage: Stage, row: Row, ready: list[bool]) -> None:
    try:
        key = stage.cache_key(row)
        result = stage.store.get_result(stage.name, key)
        if result is None:
            if not ready[0]:
                stage.setup()
                ready[0] = True
            result = stage.process_one(row)
            stage.store.put_result(stage.name, key, result)
        set_result(row, stage.name, result)
    except Rejection as rej:
        set_outcome(row, "rejected", stage.name, rej.code, rej.reason)
    except InputError as exc:
        set_outcome(row, "failed", stage.name, exc.code, str(exc))
    except MemoryError:  # one input too large for this worker's memory: the input's row, not the job's end
        set_outcome(row, "failed", stage.name, "out_of_memory",
                    "out of memory (lower ingest.max_duration_s or give workers more memory)")
    except Exception as exc:  # a bug, a full disk, a lost connection: stop the job (schemas/failures.py)
        raise StageFault.of(stage.name, source_of(row), exc) from exc


@dataclass
class StageGroup:
    """Consecutive stages with the same resource shape, run as one engine operator."""

    stages: list[Stage]

    def __post_init__(self) -> None:
        self._ready = [[False] for _ in self.stages]

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.stages)

    @property
    def resources(self) -> Resources:
        res = [stage_resources(s) for s in self.stages]
        return Resources(num_cpus=max(r.num_cpus for r in res), num_gpus=max(r.num_gpus for r in res),
                         memory_mb=max(r.memory_mb for r in res))

    @property
    def batch_size(self) -> int:
        return min(s.batch_size for s in self.stages)

    def __call__(self, rows: list[Row]) -> list[Row]:
        for row in rows:
            spent = take_stage_seconds(row)  # earlier groups' timings: off the row while its stages run
            with shared_decodes():  # the row's stages read its mix and stems: each decoded once
                for stage, ready in zip(self.stages, self._ready, strict=True):
                    if outcome_of(row) is not None:  # decided: no later stage (nor gate) runs on it
                        continue
                    start = time.perf_counter()
                    run_stage(stage, row, ready)
                    if stage.config.early_gates:
                        early_gate(stage.config, row)
                    spent[stage.name] = spent.get(stage.name, 0.0) + time.perf_counter() - start
            for name, seconds in spent.items():
                add_stage_seconds(row, name, seconds)
        return rows


def early_gate(config: PipelineConfig, row: Row) -> None:
    """With ``early_gates``: reject the row as soon as a gate fails on the scores computed so far (scores
    of stages not run yet are None and pass), so no later stage spends time on it. The decision is the
    one the late gates would make; ``early`` marks that the row's analysis is incomplete."""
    from songcorpus.pipelines.job.state_rows import scores_of
    from songcorpus.transforms.corpus.gates import apply_gates

    if outcome_of(row) is not None or not has_result(row, "ingest"):
        return
    gate = apply_gates(config.gates, scores_of(row))
    if gate is not None:
        set_outcome(row, "rejected", gate.stage, gate.code, gate.reason, early=True)


def group_stages(stages: list[Stage]) -> list[StageGroup]:
    """Fuse neighbours that need the same kind of worker (CPU-only vs GPU): a CPU model stage shares
    the worker with decoding instead of pinning an idle CPU, while a GPU stage gets its own pool."""
    groups: list[list[Stage]] = []
    for stage in stages:
        if groups and (stage_resources(groups[-1][-1]).num_gpus > 0) == (stage_resources(stage).num_gpus > 0):
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return [StageGroup(g) for g in groups]
