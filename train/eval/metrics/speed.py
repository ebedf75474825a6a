"""Speed: the real-time factor of a whole generation (encode + sample + decode) over the audio it made.

Reads: nothing; times the caller's code. Use :class:`GenerationTimer` around each phase of one generation
(``with timer.phase("encode"): ...``), then :meth:`GenerationTimer.result` with the generated duration.
CUDA work is asynchronous, so each phase synchronises the device when it ends (the wall time then counts
the kernels, not only their launch).
Unavailable (MetricUnavailable): no phase timed, or a generated duration that is not positive.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from songcorpus.train.eval.metrics.common import MetricUnavailable


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_description(device: Any = "cpu") -> str:
    """The device a generation ran on, in words: the torch device string plus the GPU's name (CUDA) or
    the CPU model and the torch thread count, e.g. ``cuda:0 (NVIDIA H200)``, ``cpu (AMD EPYC 7B13, 2 threads)``."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if dev.type == "mps":
        return f"mps ({cpu_model()})"
    return f"{dev.type} ({cpu_model()}, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class RealTimeFactor:
    """Wall seconds of the whole generation per second of generated audio (< 1: faster than real time)."""

    rtf: float
    wall_s: float
    audio_s: float
    phases: dict[str, float]
    device: str


@dataclass
class GenerationTimer:
    """Times the phases of one generation on ``device`` (wall clock, ``time.perf_counter``)."""

    device: Any = "cpu"
    phases: dict[str, float] = field(default_factory=dict)

    def _sync(self) -> None:
        import torch

        dev = torch.device(self.device)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Adds the wall time of the block to phase ``name`` (a phase may be entered several times)."""
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def result(self, audio_s: float) -> RealTimeFactor:
        """RTF (LaDA-Band, SAMUeL: full generation time / generated audio duration) of the timed phases."""
        if not self.phases:
            raise MetricUnavailable("rtf", "no generation phase was timed")
        if not audio_s > 0:
            raise MetricUnavailable("rtf", f"the generated audio lasts {audio_s} s")
        wall = sum(self.phases.values())
        return RealTimeFactor(wall / audio_s, wall, float(audio_s), dict(self.phases), device_description(self.device))
