"""Does a trained SAMUeL or LaDA-Band run read its vocals, and their timing? Prints the paired held-out loss
(train/eval/condition_use.py) with the true vocals, another song's vocals, the vocals moved by half a second and
(SAMUeL) nulled, for the latest checkpoint of each run or for every kept checkpoint.

    .venv/bin/python bench/condition_use.py /work/data/gen7a/samuel /work/data/gen7b/lada_band --threads 1

Reads the runs and their corpus (or `--data`); writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from songcorpus.train.checkpoint import list_checkpoints
from songcorpus.train.eval.condition_use import condition_use
from songcorpus.train.eval.f0_use import F0UseError


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="training run folders (SAMUeL or LaDA-Band)")
    p.add_argument("--data", help="corpus to draw held-out windows from (default: the run's own)")
    p.add_argument("--split", default="test")
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--every-checkpoint", action="store_true", help="probe every kept checkpoint, not the latest")
    p.add_argument("--threads", type=int, help="torch threads (default torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for run in args.runs:
        steps = [str(s) for s, _ in list_checkpoints(Path(run))] if args.every_checkpoint else [None]
        for step in steps:
            try:
                use = condition_use(run, args.data, args.split, step, args.batches, args.batch_size)
            except F0UseError as exc:
                raise SystemExit(str(exc)) from None
            print(f"== {run} step {use.step}\n{use.table().replace('f0 given', 'vocals given')}\n", flush=True)


if __name__ == "__main__":
    main()
