"""Cost of the full profile's model stages, one section per model: ``python bench/bench_full_demucs.py NAME [options]``.

Real weights cannot be downloaded here, so each section builds the published architecture at its real
size with random weights (the cost does not depend on the weights), saves it in the published on-disk
layout, loads it through the stage's own loader and times the stage's compute path. On a shared machine
the CPU seconds are the figure to trust (wall time includes waiting for a core).

Sections:
    demucs   StemStage's Demucs separation (transforms/models/demucs_separator.py) of a song, per audio minute.
             .venv/bin/python bench/bench_full_demucs.py demucs --threads 1 --seconds 60
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path


def bench_demucs(argv: list[str] | None = None) -> dict[str, float]:
    """Seconds per audio minute of a real-size htdemucs (42 M parameters, as the published 955717e8 file:
    HTDemucs defaults with dconv_mode=3, bottom_channels=512, t_layers=5, 7.8 s segment; random weights)
    separating a demo song tiled to ``--seconds``, through DemucsSeparator (chunking, run_batched, overlap-add),
    after loading it from a ``<sig>-<sha8>.th`` file written as demucs.states.serialize_model does."""
    p = argparse.ArgumentParser(prog="bench_full_demucs.py demucs", description=bench_demucs.__doc__)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the cost per core)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the separated signal")
    p.add_argument("--batch-size", type=int, default=1, help="separation.batch_size (chunks per forward pass)")
    p.add_argument("--device", default="cpu", help="device.name: cpu, cuda or auto")
    args = p.parse_args(argv)

    import torch
    from full_models import demo_audio, save_htdemucs

    from songcorpus.schemas.config import load_config
    from songcorpus.transforms.models.demucs_separator import DemucsSeparator, load_demucs

    torch.set_num_threads(args.threads)
    mix, rate = demo_audio("mix", args.seconds)
    n = mix.size
    with tempfile.TemporaryDirectory() as tmp:
        path, n_params = save_htdemucs(Path(tmp))
        file_bytes = path.stat().st_size
        t0 = time.perf_counter()
        loaded = load_demucs(Path(tmp), "htdemucs")
        load_s = time.perf_counter() - t0
    config = load_config(overrides={"separation": {"batch_size": args.batch_size}, "device": {"name": args.device}})
    sep = DemucsSeparator(loaded, config)
    sep.separate(mix[: rate], rate)  # warm-up: one chunk
    if sep.device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    vocals, acc = sep.separate(mix, rate)
    if sep.device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    minutes = n / rate / 60
    # the alternative a user already has: the lite profile's REPET-SIM on the same signal, same process
    from songcorpus.transforms.stages.stems import repet_sim

    st = config.stems
    rwall, rcpu = time.perf_counter(), time.process_time()
    repet_sim(mix, rate, st.n_fft, st.hop_length, st.similarity_width_s, st.n_neighbours, st.margin)
    rwall, rcpu = time.perf_counter() - rwall, time.process_time() - rcpu
    out = {"repet_sim_cpu_s_per_min": round(rcpu / minutes, 2), "demucs_over_repet_sim_cpu": round(cpu / rcpu, 1),
           "params_m": round(n_params / 1e6, 2), "file_mb": round(file_bytes / 1e6, 1), "load_s": round(load_s, 2),
           "audio_s": round(n / rate, 1), "wall_s_per_min": round(wall / minutes, 2),
           "cpu_s_per_min": round(cpu / minutes, 2), "x_real_time": round(n / rate / wall, 3)}
    print(f"demucs htdemucs (random weights, {out['params_m']} M params, {out['file_mb']} MB .th), "
          f"device {sep.device}, threads {args.threads}, batch {args.batch_size}, {platform.processor() or platform.machine()}")
    for key, value in out.items():
        print(f"  {key}: {value}")
    assert vocals.shape == acc.shape == mix.shape
    return out


BENCHES = {"demucs": bench_demucs}


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHES:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(BENCHES)}}} [options]   (NAME --help for the options)")
    BENCHES[sys.argv[1]](sys.argv[2:])
