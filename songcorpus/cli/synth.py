"""``songcorpus synth``: render synthetic songs with stems and ground truth (pipelines/sources/synth.py), then a
curate-ready manifest.

Reads a GM soundfont; writes OUT/song_NNNN/ and OUT/manifest.jsonl. Needs Festival and fluidsynth (Debian
packages). Fails with ``SynthError`` (a missing program or soundfont, or a render that fails: exit 2).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def cmd_synth(args: argparse.Namespace) -> int:
    from songcorpus.pipelines.sources.synth import synthesize

    t0 = time.perf_counter()
    rows = synthesize(args.n, Path(args.out), seed=args.seed, workers=args.workers, soundfont=args.soundfont,
                      start=args.start)
    wall = time.perf_counter() - t0
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")}
    print(f"synthesised {len(rows)} songs (seed {args.seed}) in {wall:.1f} s ({wall / max(len(rows), 1):.2f} s per "
          f"song on {args.workers} worker(s)); splits {splits}; manifest: {Path(args.out) / 'manifest.jsonl'}")
    return 0


def synth_input_errors() -> tuple[type[Exception], ...]:
    from songcorpus.pipelines.sources.synth import SynthError

    return (SynthError,)


def register(sub: argparse._SubParsersAction) -> None:
    """Add synth to the command's subparsers."""
    p = sub.add_parser("synth", help="render synthetic songs with stems and ground truth",
                       description="Render N synthetic songs (key, tempo, chords, a melody on chord tones, lyrics, "
                                   "bass, a chord instrument, drums on the beat) into OUT/song_NNNN/ (vocal score, "
                                   "MIDI, vocals/accompaniment/mix FLAC, song.json ground truth) and OUT/manifest.jsonl "
                                   "for `songcorpus curate`. Same seed, same files. Needs the Debian packages "
                                   "festival, festvox-kallpc16k, festvox-kdlpc16k, fluidsynth and "
                                   "musescore-general-soundfont-small.")
    p.add_argument("n", type=int, metavar="N", help="how many songs")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="song i is drawn from (seed, i) (default 0)")
    p.add_argument("--start", type=int, default=0, help="index of the first song (default 0): extend a set")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    p.add_argument("--soundfont", metavar="FILE", help="a GM .sf2/.sf3 (default: $SONGCORPUS_SOUNDFONT or Debian's)")
    p.set_defaults(func=cmd_synth, input_errors=synth_input_errors)
