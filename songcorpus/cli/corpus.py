"""The corpus commands: ``curate`` (inputs into shards and a catalog), ``demo`` (the same on the bundled demo corpus),
``rebuild`` (re-decide a curated folder from its stored scores) and ``report`` (print a curated folder's funnel, or
follow a running job's figures with ``--follow``).

Reads the inputs, the config and a curated folder (local or an object-store URL); writes the folder through
pipelines/curate.py, shows the job's progress while it runs and prints the closing summary and the funnel from its
catalog (songcorpus/cli/progress_view.py draws the figures). Needs the curation extras of the chosen engine. Fails
with ``ConfigError`` for a bad config or a folder that holds no corpus (exit 2), and with the job's own errors
(songcorpus/cli/exit_codes.py maps them); ``report --follow`` exits 3 when the job it follows stopped unfinished.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from songcorpus.cli.progress_view import follow, live_view, read_progress, summary_lines
from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.schemas.config import load_config
from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.failures import JOB_FAULT_EXIT


def _config_from_args(args: argparse.Namespace):
    """The profile and config file, with the engine flags of :func:`_add_engine_args` over them."""
    overrides: dict = {"engine": {}}
    if getattr(args, "engine", None):
        overrides["engine"]["name"] = args.engine
    if getattr(args, "workers", None):
        overrides["engine"]["workers"] = args.workers
    if getattr(args, "address", None):
        overrides["engine"]["ray_address"] = args.address
    if getattr(args, "node_ip_address", None):
        overrides["engine"]["ray_node_ip"] = args.node_ip_address
    if getattr(args, "beam_option", None):
        overrides["engine"]["beam_options"] = args.beam_option
    if getattr(args, "cache_dir", None):
        overrides["cache_dir"] = args.cache_dir
    return load_config(args.profile, args.config, overrides)


def print_funnel(out: Path | str) -> None:
    from songcorpus.pipelines.sinks.catalog import read_funnel

    rows = read_funnel(out)
    total = sum(r[3] for r in rows)
    hours = sum(r[4] for r in rows)
    print(f"funnel for {out} ({total} inputs, {hours:.4f} h)")
    print(f"{'status':<9} {'stage':<9} {'reason':<20} {'tracks':>7} {'hours':>9}")
    for status, stage, code, n, h in rows:
        print(f"{status:<9} {stage:<9} {code:<20} {n:>7} {h:>9.4f}")
    import duckdb

    from songcorpus.io.storage import join
    from songcorpus.pipelines.sinks.catalog import local_catalog

    with local_catalog(out) as db:
        con = duckdb.connect(str(db), read_only=True)
        try:
            n_shards, n_windows = con.execute("SELECT (SELECT count(DISTINCT family) FROM shards), "
                                              "(SELECT count(*) FROM windows)").fetchone()
            columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = 'tracks'").fetchall()}
            gated = None
            if "n_f0_gated_windows" in columns:  # catalogs before version 6 have no f0 confidence gate
                gated = con.execute("SELECT coalesce(sum(n_f0_gated_windows), 0), count(*) FILTER "
                                    "(WHERE n_f0_gated_windows > 0), count(*) FILTER (WHERE f0_method LIKE '%:mix%' "
                                    "AND status = 'accepted') FROM tracks").fetchone()
        finally:
            con.close()
    print(f"{n_windows} samples in {n_shards} shards under {join(out, 'shards')}; catalog: {join(out, 'catalog.duckdb')}")
    if gated is not None:
        n_gated, n_songs, n_mix = gated
        if n_gated:
            print(f"f0 trust gate (windows.min_f0_trust): dropped {n_gated} candidate window{'s' * (n_gated != 1)} "
                  f"in {n_songs} song{'s' * (n_songs != 1)} whose f0 could not be trusted")
        if n_mix:
            print(f"f0 read from the mix for {n_mix} accepted song{'s' * (n_mix != 1)} (no real stems: "
                  "f0_method ...:mix-viterbi)")


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="lite", help="config profile to start from (default: lite)")
    p.add_argument("--config", help="YAML file whose keys override the profile (unknown keys are errors)")
    p.add_argument("--engine", choices=["ray", "beam"], help="execution engine (default from config: ray)")
    p.add_argument("--workers", type=int, help="parallel workers: local Ray CPUs or Beam direct workers")
    p.add_argument("--address", help="Ray cluster address, e.g. HEAD:6379 or ray://HEAD:10001 (default: start a "
                                     "private local Ray, whatever other Ray runs on the machine)")
    p.add_argument("--node-ip-address", metavar="IP", help="with --address: this machine's address in the cluster "
                                                           "(default: 127.0.0.1 for a head on 127.0.0.1, else Ray's guess)")
    p.add_argument("--beam-option", action="append", metavar="FLAG",
                   help="Beam pipeline option, repeatable, e.g. --beam-option=--runner=FlinkRunner")
    p.add_argument("--cache-dir", help="content-addressed cache (default OUT/.cache); share it between runs")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


NO_PROGRESS_HELP = "plain progress lines instead of the live display, as when the output is not a terminal (for logs)"


def _print_result(headline: str, result) -> None:
    counts = result.counts()
    print(f"{headline}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("accepted", "rejected", "failed")))
    if result.progress is not None:
        print("\n".join(summary_lines(result.progress)))
    print_funnel(result.out)


def _watching(args: argparse.Namespace, out: str, run):
    """Run ``run(progress, watcher)`` with this command's display: the engines' own progress bars only under
    ``--verbose``, the job's figures in a live line on a terminal, in plain lines elsewhere."""
    view = live_view(out, verbose=args.verbose, no_progress=args.no_progress)
    try:
        return run(args.verbose and not args.no_progress, view)
    finally:
        view.close()


def cmd_curate(args: argparse.Namespace) -> int:
    from songcorpus.pipelines.curate import curate

    config = _config_from_args(args)
    result = _watching(args, str(args.out), lambda progress, view: curate(args.inputs, args.out, config,
                                                                         progress=progress, watcher=view))
    _print_result(f"curated {len(result.decisions)} inputs in {result.seconds:.1f} s", result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.inputs = [demo_manifest()]
    return cmd_curate(args)


def cmd_rebuild(args: argparse.Namespace) -> int:
    from songcorpus.pipelines.curate import load_state, rebuild

    if args.config is None:
        config, _, _ = load_state(args.dir)
    else:
        config = load_config(args.profile, args.config)
    result = _watching(args, str(args.dir), lambda progress, view: rebuild(args.dir, config, progress=progress,
                                                                          watcher=view))
    _print_result(f"rebuilt {args.dir} in {result.seconds:.1f} s without re-running any stage", result)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from songcorpus.io.storage import PUBLISHED, is_url, read_published, redact_url

    out = args.dir if is_url(args.dir) else Path(args.dir)
    last = None
    if args.follow:
        last = follow(out)
        if last is not None and not last["done"]:
            why = last["stopped"] or "no reason recorded (killed?)"
            print(f"the {last['command']} of {redact_url(out)} stopped before it finished ({last['phase']}): {why}; "
                  f"nothing new was published, and the same command resumes it")
            return JOB_FAULT_EXIT
    if is_url(out) and read_published(out) is None:
        raise ConfigError(f"{out} holds no published corpus (no {PUBLISHED}: not curated, or a curate there is "
                          f"running or crashed); run `songcorpus curate ... --out {out}` to finish it, or follow a "
                          f"running one with --follow")
    if not is_url(out) and not (out / "catalog.duckdb").exists():
        raise ConfigError(f"{out} has no catalog.duckdb; run `songcorpus curate ... --out {out}` first, or follow "
                          f"a running one with --follow")
    print_funnel(out)
    last = last or read_progress(out)
    if last is not None and last["done"]:
        print(f"last run: {last['command']}, finished {last['updated']}")
        print("\n".join(summary_lines(last)))
    elif last is not None:
        print(f"a {last['command']} of {redact_url(out)} has not finished ({last['phase']}, last figures "
              f"{last['updated']}); `songcorpus report {redact_url(out)} --follow` follows it")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add curate, rebuild, report and demo to the command's subparsers."""
    p = sub.add_parser("curate", help="curate inputs into shards and a catalog",
                       description="Decode, standardise, score and classify every input, apply the config's gates, "
                                   "and write WebDataset shards plus a Parquet/DuckDB catalog with one row per "
                                   "input. Re-running the same command resumes: finished work is reused from the "
                                   "cache. INPUT may be a folder (scanned recursively), a glob, an audio file, a "
                                   "manifest (.csv/.jsonl/.parquet with a 'path' column) or a saved Hugging Face "
                                   "dataset folder (or hf:PATH).")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", required=True, help="output folder (shards/, catalog/, catalog.duckdb)")
    _add_engine_args(p)
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("rebuild", help="re-apply gates/shard settings from stored scores (no model runs)",
                       description="Re-decide every track of a curated folder with new gate thresholds, shard or "
                                   "split settings, and rewrite shards and catalog. No analysis stage runs: "
                                   "scores come from DIR/state. Changing analysis settings needs `curate`.")
    p.add_argument("dir", metavar="DIR", help="a folder written by `songcorpus curate --out DIR`")
    p.add_argument("--profile", default="lite", help="profile the new config starts from (default: lite)")
    p.add_argument("--config", help="YAML with the new thresholds (default: the folder's own config)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser("report", help="print the funnel of a curated folder (--follow: a running job's figures)",
                       description="Print the funnel of a curated folder: how many inputs, and how many hours of "
                                   "audio, were accepted, rejected (by which stage and gate) or failed (by which "
                                   "error), from DIR/catalog.duckdb, and the last run's timing from "
                                   "DIR/progress.json. With --follow, first print a running job's figures as they "
                                   "change.",
                       epilog="The same table is the DuckDB view `funnel`: "
                              "python -c \"import duckdb; print(duckdb.connect('DIR/catalog.duckdb').sql("
                              "'SELECT * FROM funnel'))\"; every input's row is in the table `tracks`.")
    p.add_argument("dir", metavar="DIR", help="a folder written by `songcorpus curate --out DIR`")
    p.add_argument("--follow", action="store_true",
                   help="print a running job's figures (DIR/progress.json, read every 2 s) as it moves, until it "
                        "is done (then the funnel) or stops unfinished (exit 3)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="curate the bundled demo corpus",
                       description="Curate the bundled demo corpus (songs with ground-truth stems, instrumentals, "
                                   "and speech clips that must be rejected) with the embedded defaults: local Ray, "
                                   "the lite profile, a DuckDB catalog.")
    p.add_argument("--out", default="songcorpus-demo", help="output folder (default: ./songcorpus-demo)")
    _add_engine_args(p)
    p.set_defaults(func=cmd_demo)
