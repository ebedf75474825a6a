"""Duration-bucketed batching with out-of-memory back-off, and GPU placement of model stages."""

from __future__ import annotations

import pytest
import torch

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.engines.executor import group_stages, stage_resources
from songcorpus.schemas.config import load_config
from songcorpus.transforms.models.accelerator import chunks, duration_buckets, pick_device, run_batched


def test_buckets_group_similar_lengths_and_respect_both_limits() -> None:
    durations = [30.0, 2.0, 29.0, 3.0, 31.0, 2.5]
    batches = duration_buckets(durations, max_items=2)
    assert batches == [[1, 5], [3, 2], [0, 4]]  # sorted by length, then cut every 2
    assert duration_buckets(durations, max_items=8, max_total_s=40.0) == [[1, 5, 3], [2], [0], [4]]
    assert sorted(i for b in duration_buckets(durations, 3) for i in b) == list(range(6))


def test_out_of_memory_halves_the_batch_and_keeps_order() -> None:
    seen: list[int] = []

    def square(batch: list[int]) -> list[int]:
        seen.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * x for x in batch]

    items = list(range(7))
    assert run_batched(items, square, max_items=8) == [x * x for x in items]
    assert seen == [7, 3, 1, 2, 4, 2, 2]  # 7 -> 3 + 4 -> (1 + 2) + (2 + 2)

    def always_oom(batch: list[int]) -> list[int]:
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(MemoryError, match="single item"):
        run_batched([1, 2], always_oom)

    def other_error(batch: list[int]) -> list[int]:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):  # only OOM is retried
        run_batched([1, 2], other_error)


def test_chunks_cover_the_signal_with_overlap() -> None:
    spans = list(chunks(10, 4, 1))
    assert spans == [(0, 4), (3, 7), (6, 10)]
    assert list(chunks(3, 4, 1)) == [(0, 3)]
    with pytest.raises(ValueError):
        list(chunks(10, 2, 2))


def test_model_stages_declare_a_gpu_share_only_when_they_will_run_on_cuda(tmp_path) -> None:
    from songcorpus.transforms.stages.classify_ast import AstContentClassifier
    from songcorpus.transforms.stages.ingest import IngestStage
    from songcorpus.transforms.stages.stems import StemStage

    store = ArtefactStore(tmp_path)
    cpu = load_config("full", overrides={"device": {"name": "cpu"}})
    gpu = load_config("full", overrides={"device": {"name": "cuda", "gpu_share": 0.25}})
    assert stage_resources(AstContentClassifier(cpu, store)).num_gpus == 0
    assert stage_resources(AstContentClassifier(gpu, store)).num_gpus == 0.25
    assert stage_resources(IngestStage(gpu, store)).num_gpus == 0  # not a model stage
    groups = group_stages([IngestStage(gpu, store), AstContentClassifier(gpu, store), StemStage(gpu, store)])
    assert [g.name for g in groups] == ["ingest", "classify+stems"]
    assert groups[1].resources.num_gpus == 0.25
    assert [g.name for g in group_stages([IngestStage(cpu, store), AstContentClassifier(cpu, store)])] == [
        "ingest+classify"]
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")
    assert pick_device("cpu").type == "cpu"
