"""What the embedded codec keeps of pitch, harmony and rhythm, per codec setting: the ceiling any model trained
on its latents can reach on the evaluator's melody, chroma and onset metrics (the evaluation's `codec_ceiling` row).

Reads: song folders holding ``vocals.flac`` and ``accompaniment.flac`` (``songcorpus synth`` writes them; any
folder of stems works). Each stem's excerpt is encoded to latents and decoded back (Griffin-Lim), then scored
against the original with the evaluator's own functions: raw pitch accuracy of the f0 stage's tracker on the
vocals (mir_eval, 50 cents), audiocraft's chroma cosine and onset F1 (50 ms) on the accompaniment.
Writes: a Markdown table on stdout (mean and range over songs per setting); nothing on disk.

    .venv/bin/python bench/bench_codec_ceiling.py /work/data/synth200 --songs 10 --start 150
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from songcorpus.schemas.config import CodecConfig
from songcorpus.train.eval.metrics.harmony import chroma_cosine_similarity
from songcorpus.train.eval.metrics.melody import f0_of_vocals, melody_accuracy
from songcorpus.train.eval.metrics.rhythm import onset_f1_audio
from songcorpus.transforms.models.embedded_codec import EmbeddedCodec

SETTINGS = [  # (label, CodecConfig overrides); the first is the default of codec versions before 2026-12-02
    ("64 mels, 0-20 kHz (old default)", {"n_mels": 64, "fmax_hz": 20000.0}),
    ("64 mels, 0-20 kHz, 50 Hz frames", {"n_mels": 64, "fmax_hz": 20000.0, "latent_rate_hz": 50.0}),
    ("96 mels, 0-11 kHz", {"n_mels": 96, "fmax_hz": 11025.0}),
    ("128 mels, 0-8 kHz", {"n_mels": 128, "fmax_hz": 8000.0}),
    ("128 mels, 0-11 kHz", {"n_mels": 128, "fmax_hz": 11025.0}),
    ("128 mels, 0-16 kHz (default)", {"n_mels": 128, "fmax_hz": 16000.0}),
]


def mono_excerpt(path: Path, start_s: float, seconds: float) -> tuple[np.ndarray, int]:
    x, sr = sf.read(path, dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    return x[int(start_s * sr): int((start_s + seconds) * sr)], sr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a folder of song folders with vocals.flac and accompaniment.flac")
    p.add_argument("--songs", type=int, default=10, help="songs scored (sorted by name)")
    p.add_argument("--start", type=int, default=0, help="index of the first song in name order")
    p.add_argument("--excerpt", type=float, default=10.0, help="seconds per stem, from --offset")
    p.add_argument("--offset", type=float, default=5.0, help="excerpt start, seconds")
    args = p.parse_args()
    songs = sorted(d for d in Path(args.folder).iterdir() if (d / "vocals.flac").exists())
    songs = songs[args.start: args.start + args.songs]
    if not songs:
        p.error(f"no song folder with vocals.flac under {args.folder} from index {args.start}")
    stems = {d: {s: mono_excerpt(d / f"{s}.flac", args.offset, args.excerpt) for s in ("vocals", "accompaniment")}
             for d in songs}
    reference_f0 = {d: f0_of_vocals(*stems[d]["vocals"]) for d in songs}
    print(f"{len(songs)} songs ({songs[0].name} .. {songs[-1].name}), {args.excerpt:g} s excerpts from "
          f"{args.offset:g} s\n")
    print("| codec setting | latent floats / s per stem | vocal RPA | accompaniment chroma cosine | "
          "accompaniment onset F1 | encode + decode s |")
    print("|---|---:|---|---|---|---:|")

    def cell(v: list[float]) -> str:
        return f"{np.mean(v):.3f} ({np.min(v):.2f}-{np.max(v):.2f})"

    for label, over in SETTINGS:
        cfg = CodecConfig(**over)
        rpa, chroma, onset, spent = [], [], [], 0.0
        for d in songs:
            for stem, (x, sr) in stems[d].items():
                codec = EmbeddedCodec(cfg, sr)
                t0 = time.perf_counter()
                y = codec.decode_latents(codec.encode_latents(x), x.size)
                spent += time.perf_counter() - t0
                if stem == "vocals":
                    rpa.append(melody_accuracy(reference_f0[d], f0_of_vocals(y, sr))["rpa"].value)
                else:
                    chroma.append(chroma_cosine_similarity(x, sr, y, sr))
                    onset.append(onset_f1_audio(x, sr, y, sr))
        per_s = cfg.n_mels * cfg.latent_rate_hz
        print(f"| {label} | {per_s:,.0f} | {cell(rpa)} | {cell(chroma)} | {cell(onset)} | {spent:.1f} |", flush=True)


if __name__ == "__main__":
    main()
