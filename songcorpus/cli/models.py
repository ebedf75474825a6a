"""``songcorpus models``: list, verify, pull or add weights in the model store (transforms/models/store.py).

Reads and writes the store folder (``--store``, else $SONGCORPUS_MODELS, else ~/.cache/songcorpus/models); ``pull``
needs the network. ``verify`` exits 1 when a model is missing or altered; a missing NAME or PATH is a
``ConfigError`` and an unknown or mismatching model a ``ModelError`` (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from songcorpus.schemas.config_base import ConfigError


def cmd_models(args: argparse.Namespace) -> int:
    from songcorpus.transforms.models import store as ms

    root = ms.store_root(args.store)
    if args.action in ("list", "verify"):
        rows = ms.list_models(root)
        print(f"model store: {root}")
        for r in rows:
            print(f"  {r['name']:<26} {r['version']:<20} {r['where']:<28} {r['state']}")
        bad = [r for r in rows if r["state"] != "verified" and (args.action == "verify" or r["where"] != "store")]
        if args.action == "verify" and bad:
            print(f"songcorpus: {len(bad)} model(s) missing or not matching their checksums", file=sys.stderr)
            return 1
        return 0
    if not args.name:
        raise ConfigError(f"`songcorpus models {args.action}` needs a model NAME")
    if args.action == "pull":
        folder = ms.pull_model(args.name, root)
    else:
        if not args.path:
            raise ConfigError("`songcorpus models add NAME PATH`: PATH (the folder holding the files) is missing")
        if args.kind:
            folder = ms.register_model(args.name, Path(args.path), root, kind=args.kind, version=args.version,
                                       licence=args.licence)
        else:
            folder = ms.add_model(args.name, Path(args.path), root)
    print(f"{args.name}: verified and installed in {folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add models to the command's subparsers."""
    p = sub.add_parser("models", help="list, verify, pull or add model weights in the model store",
                       description="The model store holds weights that do not ship in a package, each checked "
                                   "against the registry's sha256. list: every known model and its state; verify: "
                                   "the same, exit 1 if any is missing or altered; pull NAME: download where the "
                                   "network allows; add NAME PATH: install files copied in by hand (air-gapped); "
                                   "add NAME PATH --kind K --version V: register weights the registry does not know "
                                   "(a fine-tune), pinned by their sha256. Stages never download anything while "
                                   "they run.")
    p.add_argument("action", choices=["list", "verify", "pull", "add"])
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("path", nargs="?", metavar="PATH")
    p.add_argument("--store", metavar="DIR",
                   help="the model store (default: $SONGCORPUS_MODELS, else ~/.cache/songcorpus/models)")
    p.add_argument("--kind", help="with add: register a new model of this architecture family (htdemucs, "
                                  "ct2-whisper, encodec, dac, oobleck, ast, songeval, audiobox-aesthetics, ecapa, hubert)")
    p.add_argument("--version", default="1", help="with add --kind: the new model's version (default 1)")
    p.add_argument("--licence", default="unknown", help="with add --kind: the weights' licence")
    p.set_defaults(func=cmd_models)
