"""Cost of the full profile's aesthetics stage: SongEval and Audiobox-Aesthetics, seconds per minute of audio.

Why: the stage runs two large models on every track (SongEval: MuQ-large's conv front end and 6 of its 12
1024-wide conformer layers, then a small attention head; Audiobox-Aesthetics: WavLM base+, 95 M parameters,
over 10 s windows), and a corpus run must budget them per core (CPU) or per GPU. Real weights cannot be
downloaded here, so both are the published architectures with random weights (the cost does not depend
on the weights): MuQ-large-msd-iter's settings (1024 wide, 12 layers, 16 heads, FFN 4096, depthwise
kernel 31, rotary positions, conv_dim 512, 25 Hz) with SongEval's head (1024 -> 4096, 4 attention layers),
and the audiobox_aesthetics package's default WavLM (its checkpoint carries no WavLM settings).

What it does: writes both models in the published layouts to a temporary folder (SongEval: config.yaml,
model.safetensors, muq_config.json, muq_model.safetensors with all 12 conformer layers; Audiobox:
checkpoint.pt with state_dict / model_cfg / target_transform), loads them through the stage's loaders
(``SongEvalScorer.from_folder``, ``AudioboxAestheticsScorer.from_folder``), then for each ``--lengths``
(seconds) scores that much of a demo song (tiled) after a 2 s warm-up: the stage's own resampling
(``to_rate``, soxr HQ from 44.1 kHz) and ``score``. SongEval scores a clip in one pass (attention over the
whole excerpt, as the reference does), so its cost per minute grows with the excerpt; Audiobox's is linear
(10 s windows). Reported: wall and CPU seconds per audio minute and x real time; on a shared machine the
CPU figure is the one to trust.

Run from the repository root (one CPU thread, 60 s and 180 s = the default aesthetics.max_analysis_s):
    .venv/bin/python bench/bench_full_aesthetics.py --threads 1 --lengths 60 180
On a GPU:  .venv/bin/python bench/bench_full_aesthetics.py --device cuda --threads 4 --lengths 60 180
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

import numpy as np

MUQ_LARGE_W2V2 = {  # the Wav2Vec2-Conformer settings MuQ-large trains with (hidden size / depth set by MuQ)
    "position_embeddings_type": "rotary", "rotary_embedding_base": 10000, "hidden_act": "swish",
    "num_attention_heads": 16, "intermediate_size": 4096, "conv_depthwise_kernel_size": 31,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "layer_norm_eps": 1e-5,
    "do_stable_layer_norm": True, "hidden_size": 1024, "num_hidden_layers": 24, "model_type": "wav2vec2-conformer",
}
MUQ_LARGE = {"label_rate": 25, "num_codebooks": 1, "codebook_dim": 16, "codebook_size": 4096,
             "features": ["melspec_2048"], "hop_length": 240, "n_mels": 128, "conv_dim": 512, "encoder_dim": 1024,
             "encoder_depth": 12, "is_flash": False, "w2v2_config": MUQ_LARGE_W2V2,
             "stat": {"melspec_2048_mean": 6.768444971712967, "melspec_2048_std": 18.417922652295623}}
SONGEVAL_HEAD = {"in_features": 1024, "ffd_hidden_size": 4096, "num_classes": 5, "attn_layer_num": 4}
AES_CFG = {"proj_num_layer": 1, "proj_ln": False, "proj_act_fn": "gelu", "proj_dropout": 0.0, "nth_layer": 13,
           "use_weighted_layer_sum": True, "precision": "32", "normalize_embed": True, "output_dim": 1}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the cost per core)")
    p.add_argument("--lengths", type=float, nargs="+", default=[60.0, 180.0], help="seconds of audio scored")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (as device.name)")
    p.add_argument("--no-mixed-precision", action="store_true", help="fp32 on CUDA too")
    p.add_argument("--only", choices=("songeval", "audiobox"), help="time one scorer")
    return p.parse_args()


def write_songeval(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import Wav2Vec2ConformerConfig
    from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

    from songcorpus.transforms.models.songeval import SongEvalHead, _ConvSubsampling

    cfg = Wav2Vec2ConformerConfig(**MUQ_LARGE_W2V2)
    cfg.hidden_size, cfg.num_hidden_layers = MUQ_LARGE["encoder_dim"], MUQ_LARGE["encoder_depth"]
    state = {f"model.conv.{k}": v for k, v in _ConvSubsampling(512, 1024, (2, 2), 128).state_dict().items()}
    state |= {f"model.conformer.{k}": v for k, v in Wav2Vec2ConformerEncoder(cfg).state_dict().items()}
    state |= {"model.linear.weight": torch.randn(4096, 1024) * 0.02, "model.linear.bias": torch.zeros(4096),
              "model.cls_token": torch.randn(1024)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "muq_model.safetensors"))
    del state
    (folder / "muq_config.json").write_text(json.dumps(MUQ_LARGE, indent=2))
    head = SongEvalHead(**SONGEVAL_HEAD)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text("generator:\n  _target_: model.Generator\n"
                                        + "".join(f"  {k}: {v}\n" for k, v in SONGEVAL_HEAD.items()))


def write_audiobox(folder: Path) -> None:
    import torch

    from songcorpus.transforms.models.audiobox_aesthetics import AUDIOBOX_AXES, build_aes_model

    targets = {a: {"mean": 5.5, "std": 1.6} for a in AUDIOBOX_AXES}
    model = build_aes_model(AES_CFG, targets)  # no WavLM settings: the package's base+, as published
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "model_cfg": AES_CFG,
                "target_transform": targets}, folder / "checkpoint.pt")


def main() -> int:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import soundfile as sf
    import torch

    from songcorpus.pipelines.sources.demo import demo_manifest
    from songcorpus.transforms.models.accelerator import pick_device
    from songcorpus.transforms.models.aesthetic_inputs import to_rate
    from songcorpus.transforms.models.audiobox_aesthetics import AudioboxAestheticsScorer
    from songcorpus.transforms.models.songeval import SongEvalScorer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = pick_device(args.device)
    mixed = not args.no_mixed_precision
    song, rate = sf.read(Path(demo_manifest()).parent / "song_00" / "mix.flac", dtype="float32", always_2d=True)
    mono = song.mean(axis=1)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    scorers = {}
    info = []
    with tempfile.TemporaryDirectory(prefix="bench-aesthetics-") as tmp:
        for name, write, cls in (("songeval", write_songeval, SongEvalScorer),
                                 ("audiobox", write_audiobox, AudioboxAestheticsScorer)):
            if args.only and args.only != name:
                continue
            folder = Path(tmp) / name
            folder.mkdir()
            write(folder)
            size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
            t0 = time.perf_counter()
            scorer = cls.from_folder(folder, device, mixed)
            load_s = time.perf_counter() - t0
            modules = [scorer.head, scorer.features] if name == "songeval" else [scorer.model]
            n_params = sum(p.numel() for m in modules for p in m.parameters())
            info.append(f"{name}: {n_params / 1e6:.1f} M parameters in use ({size_mb:.0f} MB on disk), "
                        f"loaded in {load_s:.1f} s")
            scorers[name] = scorer

    rows = []
    for name, scorer in scorers.items():
        scorer.score(to_rate(mono[: 2 * rate], rate, scorer.rate))  # warm-up (imports, allocator, kernels)
        for length in args.lengths:
            n = int(length * rate)
            audio = np.tile(mono, n // mono.size + 1)[:n]
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            scores = scorer.score(to_rate(audio, rate, scorer.rate))
            sync()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert all(np.isfinite(v) for v in scores.values())
            rows.append((name, length, wall, cpu))

    precision = "fp32" if device.type == "cpu" or args.no_mixed_precision else "autocast bf16/fp16"
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print("; ".join(info))
    print(f"device {device} ({hardware}), {args.threads} torch thread(s), {precision}; torch {torch.__version__}, "
          f"python {sys.version.split()[0]}\n")
    print("| scorer | audio s | wall s | CPU s | wall s per audio minute | CPU s per audio minute | x real time (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, length, wall, cpu in rows:
        minutes = length / 60
        print(f"| {name} | {length:.0f} | {wall:.2f} | {cpu:.2f} | {wall / minutes:.2f} | {cpu / minutes:.2f} "
              f"| {length / wall:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
