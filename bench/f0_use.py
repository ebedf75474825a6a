"""Does a trained SongEcho stage-B or UniSinger run use the pitch it is given, or only the voicing? Prints the
paired held-out loss (train/eval/probes/f0_use.py) with the true f0, transposed +4 semitones, voicing only and
nulled, for the latest checkpoint of each run or for every checkpoint (`--every-checkpoint`: the curve against the
step).

    .venv/bin/python bench/f0_use.py /work/data/gen4b/songecho_b_ia_eilm --every-checkpoint --threads 1

`--explained` also prints how much of the run's loss target pitch can explain at all
(train/eval/probes/linear_read.py `pitch_share`: held-out R² of the normalised vocal latents read linearly from
voicing, and from voicing plus pitch bins), so a small use of pitch can be read against a small available share.
`--content` prints how much pitch UniSinger's lite SVC content carries, unliftered and liftered (`content_pitch`).
`--alignment` prints, per MM-DiT block, the attention mass UniSinger's audio frames put on their own content (+ f0)
token, against uniform attention (train/eval/probes/content_alignment.py): whether a frame-wise pitch can be read
at all.

Reads the runs and their corpus (or `--data`); writes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import torch

from songcorpus.train.checkpoint import list_checkpoints
from songcorpus.train.eval.probes.content_alignment import content_alignment
from songcorpus.train.eval.probes.f0_use import f0_use, modality_use
from songcorpus.train.eval.probes.linear_read import content_pitch, pitch_share
from songcorpus.train.eval.probes.paired_loss import ProbeError


def probe_parser(description: str, runs_help: str = "training run folders") -> argparse.ArgumentParser:
    """The options every paired-loss probe script takes (this one and bench/condition_use.py)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("runs", nargs="+", help=runs_help)
    p.add_argument("--data", help="corpus to draw held-out windows from (default: the run's own)")
    p.add_argument("--split", default="test")
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--every-checkpoint", action="store_true", help="probe every kept checkpoint, not the latest")
    p.add_argument("--threads", type=int, help="torch threads (default torch's)")
    return p


def probed_checkpoints(args: argparse.Namespace) -> Iterator[tuple[str, list[str | None]]]:
    """(run, its checkpoint steps: [None] = the latest, every kept one with ``--every-checkpoint``) for each run
    of ``args``; sets torch's threads first."""
    if args.threads:
        torch.set_num_threads(args.threads)
    for run in args.runs:
        yield run, [str(s) for s, _ in list_checkpoints(Path(run))] if args.every_checkpoint else [None]


def main() -> None:
    p = probe_parser(__doc__.splitlines()[0])
    p.add_argument("--explained", action="store_true",
                   help="also print the share of the vocal latents' variance that voicing and pitch explain")
    p.add_argument("--modalities", action="store_true",
                   help="UniSinger runs: also print the paired loss with each SVC condition nulled (content, f0, "
                        "speaker, text): which conditions the model reads (train/eval/probes/f0_use.py modality_use)")
    p.add_argument("--content", action="store_true",
                   help="also print how much pitch and voicing a linear read finds in UniSinger's lite SVC content, "
                        "unliftered and liftered (train/eval/probes/linear_read.py content_pitch)")
    p.add_argument("--alignment", action="store_true",
                   help="UniSinger runs: also print the attention mass from each audio frame to its own content "
                        "token, per block (train/eval/probes/content_alignment.py)")
    args = p.parse_args()
    for run, steps in probed_checkpoints(args):
        for step in steps:
            try:
                use = f0_use(run, args.data, args.split, step, args.batches, args.batch_size)
            except ProbeError as exc:
                raise SystemExit(str(exc)) from None
            print(f"== {run} step {use.step}\n{use.table()}\n", flush=True)
            if args.modalities:
                used = modality_use(run, args.data, args.split, step, args.batches, args.batch_size)
                print(f"-- SVC conditions nulled, step {used.step}\n{used.table().replace('f0 given', 'SVC with')}\n",
                      flush=True)
            if args.alignment:
                found = content_alignment(run, args.data, args.split, step, args.batches, args.batch_size)
                print(f"-- attention to the frame's own content token, step {found.step}\n{found.table()}\n",
                      flush=True)
        if args.explained or args.content:
            from songcorpus.train.run import load_run

            loaded = load_run(run)
        if args.explained:
            share = pitch_share(args.data or str(loaded.corpus), loaded.stats, loaded.window_s)
            print(f"explained (held-out R², linear): voicing {share.voicing:.3f}, voicing + pitch "
                  f"{share.voicing_and_pitch:.3f}, pitch adds {share.pitch:.3f} ({share.frames[0]} fitted / "
                  f"{share.frames[1]} held-out frames)\n", flush=True)
        if args.content:
            lifters = tuple(sorted({0, 20, getattr(loaded.model.config, "content_lifter", 0)}))
            found = content_pitch(args.data or str(loaded.corpus), loaded.stats, loaded.window_s, lifters)
            print(f"UniSinger's content input, linear read (held-out R², {found.frames[0]} fitted / "
                  f"{found.frames[1]} held-out frames):\n{found.table()}\n", flush=True)


if __name__ == "__main__":
    main()
