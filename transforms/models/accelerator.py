"""Device choice, mixed precision and duration-bucketed batching with out-of-memory back-off.

Model stages of the full profile share this: one place decides CUDA vs CPU (``device.name``), and
one batcher turns a list of variable-length items into batches of similar length (less padding),
halving the batch when the accelerator runs out of memory instead of failing the track. Results
come back in input order, and the batching never changes what a single item computes, so outputs
are the same for any batch size that fits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def pick_device(setting: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when one is visible, else the CPU; ``cuda`` without one is an error."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device.name is {setting!r} but no CUDA device is visible (use 'auto' or 'cpu')")
    return torch.device(setting)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA when enabled; a no-op on CPU (CPU results stay bit-stable)."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def duration_buckets(durations: Sequence[float], max_items: int, max_total_s: float | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar duration: sorted by length (stable), then cut when a
    batch reaches ``max_items`` or its padded length (items x longest) would pass ``max_total_s``."""
    order = sorted(range(len(durations)), key=lambda i: (durations[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        padded = (len(current) + 1) * durations[i]  # sorted ascending: the new item is the longest
        if current and (len(current) >= max_items or (max_total_s is not None and padded > max_total_s)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def run_batched(items: Sequence[T], fn: Callable[[list[T]], list[R]], durations: Sequence[float] | None = None,
                max_items: int = 8, max_total_s: float | None = None) -> list[R]:
    """``fn`` over duration-bucketed batches of ``items``; on out-of-memory the failing batch is split
    in halves and retried, down to one item (whose OOM is raised as MemoryError). Input order kept."""
    durations = [1.0] * len(items) if durations is None else list(durations)
    if len(durations) != len(items):
        raise ValueError(f"{len(items)} items but {len(durations)} durations")
    out: list[Any] = [None] * len(items)
    pending = duration_buckets(durations, max(1, max_items), max_total_s)
    while pending:
        batch = pending.pop(0)
        try:
            results = fn([items[i] for i in batch])
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not is_oom(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(batch) == 1:
                raise MemoryError(f"out of memory on a single item of {durations[batch[0]]:.1f} s") from exc
            half = len(batch) // 2
            log.warning("out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half)
            pending[:0] = [batch[:half], batch[half:]]
            continue
        if len(results) != len(batch):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        for i, r in zip(batch, results, strict=True):
            out[i] = r
    return out


def equal_length_groups(arrays: Sequence[Any]) -> list[list[int]]:
    """Indices of ``arrays`` grouped by length, in first-seen order: each group stacks into one batch with
    no padding, so a clip's result never depends on the clips it was batched with."""
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(len(a), []).append(i)
    return list(groups.values())


def map_equal_length(arrays: Sequence[T], fn: Callable[[list[T]], list[R]]) -> list[R]:
    """``fn`` once per equal-length group (see :func:`equal_length_groups`), results in input order."""
    out: list[Any] = [None] * len(arrays)
    for idx in equal_length_groups(arrays):
        for i, r in zip(idx, fn([arrays[i] for i in idx]), strict=True):
            out[i] = r
    return out


def chunks(n_samples: int, chunk: int, overlap: int) -> Iterator[tuple[int, int]]:
    """(start, end) of overlapping chunks covering ``n_samples`` (the last one may be shorter)."""
    if chunk <= overlap:
        raise ValueError(f"chunk ({chunk}) must be longer than its overlap ({overlap})")
    start = 0
    while True:
        end = min(n_samples, start + chunk)
        yield start, end
        if end >= n_samples:
            return
        start += chunk - overlap
