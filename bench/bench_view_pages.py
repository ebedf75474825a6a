"""``songcorpus view`` at scale: the time of a tracks or windows table page on a synthetic catalog of N tracks (and
their windows, in the real schema, songcorpus/testing/synthetic_catalog.py), served by the real app over HTTP,
against what an analyst would do instead: pandas reading the catalog's Parquet and filtering, sorting, slicing.

    .venv/bin/python bench/bench_view_pages.py [--tracks 100000] [--repeat 7] [--keep DIR]

Pages timed (each the median of --repeat requests after one warm-up, HTML rendered and received): the first page,
a filtered page (rejected tracks of one reason), a deep page (page 1,000), a page sorted by a score, a text search,
and the windows table's first, filtered and deep pages; plus the view's start (open the catalog, read the allow-
lists) and its overview (funnel, 30-odd histograms, balance; computed once, then kept). The alternative: pandas
``read_parquet`` of the table, then the same filter, sort and slice; "cold" re-reads the file as a script does,
"warm" has the frame in memory as a notebook does. Prints a Markdown table; writes nothing but the catalog (in a
temporary folder unless --keep).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", metavar="DIR", help="write the catalog here and keep it (default: a temporary folder)")
    args = ap.parse_args()

    import duckdb

    from songcorpus.testing.synthetic_catalog import write_synthetic_catalog
    from songcorpus.view.app import create_app
    from songcorpus.view.corpus import Corpus
    from songcorpus.view.server import running

    tmp = tempfile.TemporaryDirectory(prefix="bench-view-")
    out = Path(args.keep) if args.keep else Path(tmp.name) / "corpus"
    t0 = time.perf_counter()
    if not (out / "catalog.duckdb").exists():
        write_synthetic_catalog(out, args.tracks)
    made = time.perf_counter() - t0
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    n_tracks, n_windows = con.execute("SELECT (SELECT count(*) FROM tracks), (SELECT count(*) FROM windows)").fetchone()
    con.close()
    print(f"catalog: {n_tracks:,} tracks, {n_windows:,} windows ({made:.1f} s to write) in {out}", file=sys.stderr)

    t0 = time.perf_counter()
    corpus = Corpus.open(out)
    create_app(corpus, [])  # what `songcorpus view` does before it listens (the allow-lists from the catalog)
    start_s = time.perf_counter() - t0
    with running(corpus, []) as base:
        measure(base, out, corpus, start_s, n_tracks, n_windows, args.repeat)
    corpus.close()
    return 0


def measure(base: str, out: Path, corpus, start_s: float, n_tracks: int, n_windows: int, repeat: int) -> None:
    import pandas as pd

    def get(path: str) -> bytes:
        with urllib.request.urlopen(base + path) as r:
            assert r.status == 200, (path, r.status)
            return r.read()

    t0 = time.perf_counter()
    get("/")
    overview_s = time.perf_counter() - t0

    tracks_pq, windows_pq = out / "catalog" / "tracks.parquet", out / "catalog" / "windows.parquet"
    frames = {"tracks": pd.read_parquet(tracks_pq), "windows": pd.read_parquet(windows_pq)}
    per = 50

    def first(df):
        return df.sort_values(["source", "track_id"]).iloc[:per] if "status" in df else \
            df.sort_values("key").iloc[:per]

    def rejected(df):
        hit = df[(df.status == "rejected") & (df.reason_code == "low_snr")]
        return hit.sort_values(["source", "track_id"]).iloc[:per]

    def deep(df):
        page = 1000 if "status" in df else 5000
        order = ["source", "track_id"] if "status" in df else ["key"]
        return df.sort_values(order).iloc[(page - 1) * per: page * per]

    def by_score(df):
        return df.sort_values(["snr_db", "track_id"], ascending=[False, True], na_position="last").iloc[:per]

    def text(df):
        mask = df.title.str.contains("river", case=False, na=False) | \
            df.caption.str.contains("river", case=False, na=False) | df.lyrics.str.contains("river", case=False, na=False)
        return df[mask].sort_values(["source", "track_id"]).iloc[:per]

    def windows_split(df):
        return df[df.split == "test"].sort_values("key").iloc[:per]

    cases = [("tracks, first page", "/tracks", "tracks", first),
             ("tracks, rejected by low_snr", "/tracks?status=rejected&reason=low_snr", "tracks", rejected),
             ("tracks, page 1,000", "/tracks?page=1000", "tracks", deep),
             ("tracks, sorted by snr_db", "/tracks?sort=snr_db&order=desc", "tracks", by_score),
             ("tracks, text search 'river'", "/tracks?q=river", "tracks", text),
             ("windows, first page", "/windows", "windows", first),
             ("windows, split test", "/windows?split=test", "windows", windows_split),
             ("windows, page 5,000", "/windows?page=5000", "windows", deep)]
    print(f"view start (open catalog, allow-lists): {start_s * 1000:.0f} ms; overview (first, then kept): "
          f"{overview_s * 1000:.0f} ms; {n_tracks:,} tracks, {n_windows:,} windows")
    print()
    print("| page | view (ms) | pandas warm (ms) | pandas cold: read + op (ms) | cold / view |")
    print("|---|---:|---:|---:|---:|")
    for name, path, table, op in cases:
        view_s = timed(lambda path=path: get(path), repeat)
        pq = tracks_pq if table == "tracks" else windows_pq
        warm_s = timed(lambda op=op, table=table: op(frames[table]), repeat)
        cold_s = timed(lambda op=op, pq=pq: op(pd.read_parquet(pq)), max(3, repeat // 2))
        print(f"| {name} | {view_s * 1000:.0f} | {warm_s * 1000:.0f} | {cold_s * 1000:.0f} | "
              f"{cold_s / view_s:.1f}x |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
