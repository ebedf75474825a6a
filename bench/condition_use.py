"""Does a trained SAMUeL or LaDA-Band run read its vocals, and their timing? Prints the paired held-out loss
(train/eval/probes/condition_use.py) with the true vocals, another song's vocals, the vocals moved by half a second and
(SAMUeL) nulled, for the latest checkpoint of each run or for every kept checkpoint.

    .venv/bin/python bench/condition_use.py /work/data/gen7a/samuel /work/data/gen7b/lada_band --threads 1

Reads the runs and their corpus (or `--data`); writes nothing.
"""

from __future__ import annotations

from f0_use import probe_parser, probed_checkpoints  # bench/, on the path when this script runs

from songcorpus.train.eval.probes.condition_use import condition_use
from songcorpus.train.eval.probes.paired_loss import ProbeError


def main() -> None:
    args = probe_parser(__doc__.splitlines()[0], "training run folders (SAMUeL or LaDA-Band)").parse_args()
    for run, steps in probed_checkpoints(args):
        for step in steps:
            try:
                use = condition_use(run, args.data, args.split, step, args.batches, args.batch_size)
            except ProbeError as exc:
                raise SystemExit(str(exc)) from None
            print(f"== {run} step {use.step}\n{use.table().replace('f0 given', 'vocals given')}\n", flush=True)


if __name__ == "__main__":
    main()
