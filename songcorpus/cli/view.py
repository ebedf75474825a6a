"""``songcorpus view``: browse, filter and listen to a curated corpus and its evaluations in a browser, served
read-only on this machine (songcorpus/view/), or written as static pages with ``--static DIR``.

Reads OUT (a local folder or an object-store URL) and each ``--eval`` folder; writes nothing but the one line with
the URL (and, with ``--static``, the pages under DIR). Fails with ``ViewError`` (exit 2): a folder that holds no
corpus or evaluation, a busy port, a refused export folder.
"""

from __future__ import annotations

import argparse


def cmd_view(args: argparse.Namespace) -> int:
    from songcorpus.view.corpus import Corpus
    from songcorpus.view.evaluations import Evaluation
    from songcorpus.view.server import serve
    from songcorpus.view.static_export import export

    corpus = Corpus.open(args.dir)
    evals: list[Evaluation] = []
    try:
        for i, folder in enumerate(args.eval or []):
            evals.append(Evaluation.open(folder, i))
        if args.static:
            done = export(corpus, evals, args.static, clips=args.clips)
            print(f"wrote {done['files']} files under {done['folder']} ({done['samples']} samples with audio, "
                  f"{done['tracks']} track pages, {done['evaluations']} evaluations); open "
                  f"{done['folder']}/index.html in a browser")
            return 0
        try:
            serve(corpus, evals, args.host, args.port)
        except KeyboardInterrupt:
            pass
        print("songcorpus view: stopped")
        return 0
    finally:
        for ev in evals:
            ev.close()
        corpus.close()


def view_input_errors() -> tuple[type[Exception], ...]:
    from songcorpus.view.errors import ViewError

    return (ViewError,)


def register(sub: argparse._SubParsersAction) -> None:
    """Add view to the command's subparsers."""
    from songcorpus.view import DEFAULT_HOST, DEFAULT_PORT  # the package's __init__: constants only, nothing heavy

    p = sub.add_parser("view", help="see and hear a corpus (and its evaluations) in a browser",
                       description="Serve a read-only web view of a curated corpus on this machine: the funnel, score "
                                   "distributions with the gates' thresholds, balance by split, language, genre, "
                                   "duration and method; tracks and samples filterable, sortable and paged (the "
                                   "filters stay in the URL, to share a view); a page per sample with the "
                                   "spectrograms, f0, beats, sections and vocal activity that `inspect` draws, and "
                                   "players for the mix, vocals and accompaniment. With --eval, each evaluation's "
                                   "systems side by side with their intervals and paired differences, metrics "
                                   "against the checkpoint step, and per-window scores linking to the window's page, "
                                   "where the generated audio plays next to the real one.",
                       epilog="Examples: songcorpus view songcorpus-demo;  songcorpus view s3://bucket/corpus --port 0;"
                              "  songcorpus view songcorpus-demo --eval eval/samuel --static share/  "
                              "(open share/index.html; no server needed)")
    p.add_argument("dir", metavar="OUT", help="a corpus written by `songcorpus curate --out OUT` (a folder, or an "
                                              "s3:// or gs:// URL)")
    p.add_argument("--eval", action="append", metavar="EVAL",
                   help="a folder written by `songcorpus evaluate ... --out EVAL`; repeat for several (checkpoints "
                        "of one run draw a curve)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="N",
                   help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port, printed)")
    p.add_argument("--host", default=DEFAULT_HOST, metavar="H",
                   help=f"address to listen on (default {DEFAULT_HOST}, this machine only; another address makes "
                        f"the corpus visible to the network)")
    p.add_argument("--static", metavar="DIR", help="write the pages as static HTML under DIR instead of serving "
                                                   "(a new or empty folder, or one this command wrote before)")
    p.add_argument("--clips", type=int, default=50, metavar="N",
                   help="with --static: samples whose audio and drawing are included (default 50)")
    p.set_defaults(func=cmd_view, input_errors=view_input_errors)
