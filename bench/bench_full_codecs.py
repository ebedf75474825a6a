"""Cost of the full profile's neural codecs on one CPU thread: seconds to encode and decode a minute of audio.

Why: every sample of the full profile carries each configured codec's tokens/latents for each stem, so
the codec pass sizes the CPU fallback (and tells whether a GPU is needed at all). Weights do not change
the cost, only the architecture does, so the models here are REAL-SIZE architectures with random
weights: ``EncodecConfig()`` (the defaults are facebook/encodec_24khz's config), ``DacConfig`` with
``sampling_rate=44100`` (its other defaults are descript/dac_44khz's), and ``AutoencoderOobleck()``
(the defaults are Stable Audio Open 1.0's vae/config.json), built by bench/full_models.py ``build_codec``.
Each model is saved in its published layout to a temporary folder and loaded through the codec classes of
transforms/models/neural_codecs.py, so the timed path is the pipeline's (soxr resampling included).

What is timed: ``encode`` of ``--seconds`` (default 10, 10-20 advised) of the demo song at 44.1 kHz
and ``decode`` of the result, after one untimed 1 s warm-up of each; wall time (``time.perf_counter``),
best of ``--repeats``, and this process's CPU time (``time.process_time``: on a shared, loaded machine
wall time includes waiting for a core, CPU time does not). The per-minute figures are scaled linearly
(x 60 / seconds): the models are convolutional (EnCodec adds an LSTM), so cost is linear in length.
``torch.set_num_threads(1)``.
On a shared machine the figures are noisy; the load average is printed next to them.

Run from the repository root:  .venv/bin/python bench/bench_full_codecs.py --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from full_models import build_codec  # noqa: E402

from songcorpus.pipelines.sources.demo import demo_manifest  # noqa: E402
from songcorpus.transforms.models.neural_codecs import DacCodec, EncodecCodec, NeuralCodec, OobleckVae  # noqa: E402

CLASSES: dict[str, type[NeuralCodec]] = {"encodec": EncodecCodec, "dac": DacCodec, "oobleck": OobleckVae}


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best (wall, CPU) seconds of ``repeats`` calls; CPU time is this process's (one thread)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def embedded_row(audio, rate: int, args: argparse.Namespace) -> dict:
    """The embedded mel codec (lite profile) on the same audio: latents plus tokens with a corpus-sized
    codebook, and its Griffin-Lim decode."""
    import numpy as np

    from songcorpus.schemas.config import CodecConfig
    from songcorpus.transforms.models.embedded_codec import EmbeddedCodec, encode_tokens

    cfg = CodecConfig()
    codec = EmbeddedCodec(cfg, rate)
    latents = codec.encode_latents(audio)
    codebook = np.random.default_rng(0).standard_normal((cfg.codebook_size, latents.shape[1])).astype(np.float32)
    enc = timed(lambda: encode_tokens(codec.encode_latents(audio), codebook), args.repeats)
    dec = timed(lambda: codec.decode_latents(latents, audio.size), args.repeats)
    scale = 60.0 / args.seconds
    return {"codec": "embedded (lite)", "params_m": 0.0, "frame_rate": round(codec.latent_rate, 3),
            "frames_shape_per_min": [latents.shape[1], round(60 * codec.latent_rate)], "load_s": 0.0,
            "encode_s_per_min": round(enc[0] * scale, 1), "decode_s_per_min": round(dec[0] * scale, 1),
            "encode_cpu_s_per_min": round(enc[1] * scale, 2), "decode_cpu_s_per_min": round(dec[1] * scale, 1),
            "encode_x_realtime": round(args.seconds / enc[0], 2), "decode_x_realtime": round(args.seconds / dec[0], 2),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="audio length timed (scaled to one minute)")
    ap.add_argument("--repeats", type=int, default=1, help="best of this many timed runs")
    ap.add_argument("--kinds", nargs="+", default=list(CLASSES), choices=list(CLASSES))
    args = ap.parse_args()
    torch.set_num_threads(1)

    mix, rate = sf.read(str(Path(demo_manifest()).parent / "song_00" / "mix.flac"), dtype="float32")
    mix = mix.mean(axis=1) if mix.ndim == 2 else mix
    audio = mix[int(5 * rate): int((5 + args.seconds) * rate)]
    assert audio.size == int(args.seconds * rate), "the demo song is shorter than --seconds + 5"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_codecs_") as tmp:
        for kind in args.kinds:
            folder = Path(tmp) / kind
            n_params = build_codec(kind, folder)
            t0 = time.perf_counter()
            codec = CLASSES[kind](kind, folder, torch.device("cpu"))
            load_s = time.perf_counter() - t0
            codec.decode(codec.encode(audio[:rate], rate))  # warm-up
            frames = codec.encode(audio, rate)
            enc = timed(lambda c=codec: c.encode(audio, rate), args.repeats)
            dec = timed(lambda c=codec, f=frames: c.decode(f), args.repeats)
            scale = 60.0 / args.seconds
            rows.append({"codec": kind, "params_m": round(n_params / 1e6, 1), "frame_rate": round(codec.frame_rate, 3),
                         "frames_shape_per_min": [*codec.frame_shape, codec.frames_for(60.0)], "load_s": round(load_s, 2),
                         "encode_s_per_min": round(enc[0] * scale, 1), "decode_s_per_min": round(dec[0] * scale, 1),
                         "encode_cpu_s_per_min": round(enc[1] * scale, 1), "decode_cpu_s_per_min": round(dec[1] * scale, 1),
                         "encode_x_realtime": round(args.seconds / enc[0], 2),
                         "decode_x_realtime": round(args.seconds / dec[0], 2),
                         "loadavg_1m": round(os.getloadavg()[0], 2)})
            print(f"{kind}: done ({rows[-1]})", file=sys.stderr, flush=True)
            del codec
        rows.append(embedded_row(audio, rate, args))

    base = rows[-1]["encode_cpu_s_per_min"]
    for r in rows:  # the alternative a user already has, same run: the lite profile's embedded mel codec
        r["encode_cpu_vs_embedded"] = round(r["encode_cpu_s_per_min"] / base, 1)

    print(f"\n1 CPU thread, {args.seconds:g} s of audio timed (best of {args.repeats}), scaled to 60 s; "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| codec | params (M) | frame rate (Hz) | frame shape x frames/min | load (s) | encode s/min (wall / CPU) | "
          "decode s/min (wall / CPU) | encode x RT | decode x RT | load avg | encode CPU / embedded |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['codec']} | {r['params_m']} | {r['frame_rate']} | {r['frames_shape_per_min']} | {r['load_s']} | "
              f"{r['encode_s_per_min']} / {r['encode_cpu_s_per_min']} | {r['decode_s_per_min']} / "
              f"{r['decode_cpu_s_per_min']} | {r['encode_x_realtime']} | {r['decode_x_realtime']} | {r['loadavg_1m']} | "
              f"{r['encode_cpu_vs_embedded']} |")
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_full_codecs-{time.strftime('%Y-%m-%dT%H%M%S')}.json"
    path.write_text(json.dumps({"seconds": args.seconds, "repeats": args.repeats, "threads": 1, "rows": rows}, indent=2))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
