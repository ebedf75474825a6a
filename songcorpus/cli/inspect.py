"""``songcorpus inspect``: print one sample of a curated folder, and draw it (``--png``) or write it as audio
(``--listen``) through pipelines/readers/inspect_sample.py.

Reads the folder's catalog and the sample's shard; writes only the files asked for. Fails with ``SampleNotFound``
for a folder with no catalog or a key its catalog does not hold (exit 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_inspect(args: argparse.Namespace) -> int:
    from songcorpus.pipelines.readers.inspect_sample import inspect_sample

    meta = inspect_sample(Path(args.dir), args.key, Path(args.png) if args.png else None,
                          Path(args.listen) if args.listen else None)
    shown = {k: meta.get(k) for k in ("key", "source", "split", "start_s", "duration_s", "reference_key",
                                      "augmentation", "stems_method", "fields")}
    print(json.dumps(shown, indent=1, ensure_ascii=False))
    if args.png:
        print(f"wrote {args.png}")
    if args.listen:
        print(f"wrote WAVs (stems, and the embedded codec's decodes of latents and tokens) under {args.listen}")
    return 0


def inspect_input_errors() -> tuple[type[Exception], ...]:
    from songcorpus.pipelines.readers.inspect_sample import SampleNotFound

    return (SampleNotFound,)


def register(sub: argparse._SubParsersAction) -> None:
    """Add inspect to the command's subparsers."""
    p = sub.add_parser("inspect", help="show one sample (and draw it with --png)",
                       description="Read sample KEY of a curated folder straight from its shard (offsets from the "
                                   "catalog) and print its metadata; with --png, draw spectrograms of the mix and "
                                   "stems with the vocal f0, VAD segments, beats, downbeats and sections over them.")
    p.add_argument("dir", metavar="DIR", help="a folder written by `songcorpus curate --out DIR`")
    p.add_argument("key", metavar="KEY", help="a sample key (the `key` column of the catalog's windows table)")
    p.add_argument("--png", metavar="FILE", help="write the picture here")
    p.add_argument("--listen", metavar="DIR", help="write the stems as WAV, and the embedded codec's latents and tokens "
                                                    "decoded back to audio (Griffin-Lim), into DIR")
    p.set_defaults(func=cmd_inspect, input_errors=inspect_input_errors)
