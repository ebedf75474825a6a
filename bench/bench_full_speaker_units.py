"""Cost of the full profile's speaker embedding (ECAPA-TDNN) and content features (HuBERT base) per audio minute.

Why: the samples phase embeds one reference window per sample and computes HuBERT features for every
window's vocals (and the unit_frames analysis stage for every accepted song's whole vocal stem); this
says what that costs per minute of audio, so a run can be sized before it starts.

What it does: builds the real-size architectures with random weights (the published sizes:
ECAPA_TDNN with channels [1024, 1024, 1024, 1024, 3072], attention 128, 192-d embeddings, 80 mels, as in
speechbrain/spkrec-ecapa-voxceleb; transformers' default HubertConfig = hubert-base-ls960), saves them in
the published file layouts, registers them in a temporary model store and loads them through
``load_speaker_encoder`` / ``load_content_encoder``, the calls the stages make. Random weights cost
the same compute as trained ones. Then it times ``embed`` / ``features`` (and the batched
``embed_many`` / ``features_many``) on windows of the demo vocals (44.1 kHz, so the soxr resampling to
16 kHz is included), after one warm-up call, and a k-means fit of ``--units`` centroids on
``--kmeans-frames`` 768-d frames (``fit_unit_codebook``, one thread) plus the unit assignment.

Reported: wall and CPU (process) seconds per minute of audio, and x real time, median of ``--repeats``
runs. On a shared machine the CPU column is the steadier per-core figure.
``--threads 1`` (the default) pins torch and BLAS to one thread: figures per CPU core.

Run from the repository root:  .venv/bin/python bench/bench_full_speaker_units.py
(``--device cuda`` on a GPU machine; ``--quick`` for a fast smoke run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--device", default="cpu")
ap.add_argument("--windows", type=float, nargs="+", default=[3.0, 10.0], help="window lengths (s)")
ap.add_argument("--audio-s", type=float, default=60.0, help="audio per window length and model")
ap.add_argument("--repeats", type=int, default=2)
ap.add_argument("--batch", type=int, default=8, help="clips per batch in the batched rows")
ap.add_argument("--layer", type=int, default=9)
ap.add_argument("--units", type=int, default=500)
ap.add_argument("--kmeans-frames", type=int, default=20_000)
ap.add_argument("--quick", action="store_true", help="20 s of audio, 1 repeat, 2000 k-means frames")
args = ap.parse_args()
if args.quick:
    args.audio_s, args.repeats, args.kmeans_frames = 20.0, 1, 2000

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)

from songcorpus.pipelines.sources.demo import demo_manifest  # noqa: E402
from songcorpus.transforms.models.content_units import assign_units, fit_unit_codebook, load_content_encoder  # noqa: E402
from songcorpus.transforms.models.speaker import load_speaker_encoder  # noqa: E402
from songcorpus.transforms.models.store import load_registry, register_model  # noqa: E402

HPARAMS = """\
n_mels: 80
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [1024, 1024, 1024, 1024, 3072]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192
"""


def build_store(root: Path) -> dict[str, Path]:
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    ecapa = root / "src" / "ecapa"
    ecapa.mkdir(parents=True)
    (ecapa / "hyperparams.yaml").write_text(HPARAMS)
    model = ECAPA_TDNN(80, channels=[1024, 1024, 1024, 1024, 3072], attention_channels=128, lin_neurons=192)
    torch.save(model.state_dict(), ecapa / "embedding_model.ckpt")
    torch.save({"count": 1, "glob_mean": torch.zeros(192), "glob_std": torch.ones(192)}, ecapa / "mean_var_norm_emb.ckpt")
    hubert = root / "src" / "hubert"
    HubertModel(HubertConfig()).save_pretrained(hubert)
    store = root / "store"
    register_model("bench-ecapa", ecapa, store, kind="ecapa", version="random")
    register_model("bench-hubert", hubert, store, kind="hubert", version="random")
    return {"store": store}


def vocals_windows(length_s: float, total_s: float) -> tuple[list[np.ndarray], int]:
    """Consecutive windows of the demo vocal stems, ``total_s`` of audio in all."""
    demo = Path(demo_manifest()).parent
    clips = [sf.read(str(p), dtype="float32") for p in sorted(demo.glob("song_*/vocals.flac"))]
    rate = clips[0][1]
    n = int(round(length_s * rate))
    pool = [x[i:i + n] for x, _ in clips for i in range(0, len(x) - n + 1, n)]
    count = max(1, int(round(total_s / length_s)))
    return [pool[i % len(pool)] for i in range(count)], rate


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``fn`` after one warm-up call (allocator, first-call overheads)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus))


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build_store(Path(tmp))["store"]
        registry = load_registry(store)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        spk = load_speaker_encoder(registry["bench-ecapa"], registry["bench-ecapa"].verified_folder(store), args.device)
        t_spk = time.perf_counter() - t0
        t0 = time.perf_counter()
        hub = load_content_encoder(registry["bench-hubert"], registry["bench-hubert"].verified_folder(store),
                                   args.device, args.layer)
        t_hub = time.perf_counter() - t0
        n_params = {"ECAPA-TDNN (C=1024)": sum(p.numel() for p in spk.model.parameters()),
                    f"HuBERT base (layers 1..{args.layer})": sum(p.numel() for p in hub.model.parameters())}
        for length in args.windows:
            wins, rate = vocals_windows(length, args.audio_s)
            audio_min = len(wins) * length / 60.0
            cases = [
                ("ECAPA-TDNN (C=1024)", "embed, one at a time", lambda w=wins, rate=rate: [spk.embed(x, rate) for x in w]),
                ("ECAPA-TDNN (C=1024)", f"embed_many, batch {args.batch}",
                 lambda w=wins, rate=rate: spk.embed_many([(x, rate) for x in w], max_items=args.batch)),
                (f"HuBERT base L{args.layer}", "features, one at a time",
                 lambda w=wins, rate=rate: [hub.features(x, rate) for x in w]),
                (f"HuBERT base L{args.layer}", f"features_many, batch {args.batch}",
                 lambda w=wins, rate=rate: hub.features_many([(x, rate) for x in w], max_items=args.batch)),
            ]
            for model, how, fn in cases:
                wall, cpu = timed(fn, args.repeats)
                rows.append((model, how, length, len(wins), wall / audio_min, cpu / audio_min, audio_min * 60 / wall))
        rng = np.random.default_rng(0)
        frames = rng.standard_normal((args.kmeans_frames, 768)).astype(np.float32)
        t0 = time.perf_counter()
        cents = fit_unit_codebook([frames], args.units, seed=0)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        assign_units(frames, cents)
        t_assign = time.perf_counter() - t0

    print(f"\ndevice {args.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}, random weights, demo vocals at 44.1 kHz (resampling included), "
          f"median of {args.repeats}")
    print(f"build + register {t_build:.1f} s; load: ECAPA {t_spk:.2f} s, HuBERT {t_hub:.2f} s; parameters: "
          + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in n_params.items()))
    print("\n| model | call | window (s) | windows | wall s per audio minute | CPU s per audio minute | x real time (wall) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model, how, length, count, spm, cpm, xrt in rows:
        print(f"| {model} | {how} | {length:g} | {count} | {spm:.2f} | {cpm:.2f} | {xrt:.1f} |")
    print(f"\nk-means: {args.units} units on {args.kmeans_frames} x 768 frames (fit_unit_codebook, 1 thread): "
          f"{t_fit:.1f} s; assign_units over the same frames: {t_assign:.2f} s "
          f"({t_assign / (args.kmeans_frames / 50 / 60):.3f} s per audio minute at 50 Hz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
