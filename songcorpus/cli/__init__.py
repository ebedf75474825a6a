"""The ``songcorpus`` command: its parser, gathered from one module per command family, and its entry point.

The families: corpus.py (curate, rebuild, report, demo), synth.py, inspect.py, models.py (the model store),
training.py (train, generate, train-report, evaluate) and view.py (the corpus viewer); each adds its subparsers and
names its handler, and exit_codes.py turns what a handler raises into one line and an exit code. Reads the command
line and sets the logging levels and two environment defaults; everything else is the commands'. Fails as the
command does: exit 2 for the command's fault, 3 for the job's, 1 (a traceback) for a bug.
"""

from __future__ import annotations

import argparse
import logging
import os

from songcorpus.cli import corpus, inspect, models, synth, training, view
from songcorpus.cli.exit_codes import no_input_errors, run_command

FAMILIES = (corpus, synth, inspect, models, training, view)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="songcorpus",
        description="Turn raw songs into WebDataset shards and a DuckDB catalog for music-generation training.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, single-user Ray: no token prompt in logs
    for noisy in ("apache_beam", "ray", "ray.data"):
        # a worker's error reaches the user once, as the job's own message (schemas/failures.py), not also as
        # the engine's logged traceback
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    return run_command(args.func, args, getattr(args, "input_errors", no_input_errors))
