"""Peak memory of the corpus-wide fingerprint join: in memory (``find_matches``, every fingerprint and the whole
index held) against on disk (``find_matches_on_disk``, the curate driver's path: key buckets on scratch disk, one
in memory at a time), on the same synthetic corpus, in one run, each in a fresh process.

Why: a curate driver must not grow with the corpus. The corpus: N random fingerprints of ``--items``
sub-fingerprints on average (240 = 30 s) with 1 % planted copies (bench/bench_near_duplicates.py's
``synthetic``), written one ``.npy`` per track, as the artefact store holds them; each process loads them itself
(the in-memory join all at once, the on-disk one as it goes). Reports per N and join: peak RSS of the process
(``ru_maxrss``), CPU seconds, matches; checks the two joins give the same matches.

    .venv/bin/python bench/bench_fingerprint_join_memory.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from songcorpus.transforms.corpus.fingerprint_index import IndexStats, find_matches, find_matches_on_disk
folder, n, mode, bucket_terms = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
items = json.loads((folder / "items.json").read_text())
load = lambda i: np.load(folder / f"{i:07d}.npy")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c0 = time.process_time()
stats = IndexStats()
if mode == "memory":
    matches = find_matches([load(i) for i in range(n)], 0.2, 80, stats=stats)
else:
    matches = find_matches_on_disk(load, n, 0.2, 80, stats=stats, items_hint=items, bucket_terms=bucket_terms)
print(json.dumps({"cpu_s": round(time.process_time() - c0, 2), "peak_rss_mb": round(resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024), "imports_rss_mb": round(base / 1024), "votes": stats.votes,
    "matches": [[m.a, m.b, m.offset] for m in matches]}))
"""


def write_corpus(folder: Path, n: int, mean_items: int, seed: int) -> tuple[int, set[tuple[int, int]]]:
    """``n`` tracks plus 1 % copies, one .npy each; returns (tracks written, planted pairs)."""
    rng = np.random.default_rng(seed)
    total, items, planted = 0, 0, set()
    for i in range(n):
        fp = rng.integers(0, 2**32, size=int(rng.integers(mean_items // 2, mean_items * 3 // 2 + 1)), dtype=np.uint32)
        np.save(folder / f"{total:07d}.npy", fp)
        total, items = total + 1, items + fp.size
        if i % 100 == 0:  # a copy cut by up to 40 items, 5 % of its bits flipped
            copy = fp[int(rng.integers(0, 41)):]
            copy = copy ^ np.packbits(rng.random((copy.size, 32)) < 0.05, bitorder="little").view("<u4")
            np.save(folder / f"{total:07d}.npy", copy)
            planted.add((total - 1, total))
            total, items = total + 1, items + copy.size
    (folder / "items.json").write_text(json.dumps(items))
    return total, planted


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--items", type=int, default=240)
    p.add_argument("--bucket-terms", type=int, default=1 << 22)
    p.add_argument("--scratch", help="where the synthetic fingerprints go (default the system temp folder)")
    args = p.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
            t0 = time.perf_counter()
            tracks, planted = write_corpus(Path(tmp), n, args.items, n)
            print(f"{tracks} fingerprints written in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            found = {}
            for mode in ("memory", "disk"):
                out = subprocess.run([sys.executable, "-c", CHILD, tmp, str(tracks), mode, str(args.bucket_terms)],
                                     check=True, capture_output=True, text=True).stdout
                found[mode] = json.loads(out.strip().splitlines()[-1])
                print(f"  {mode}: {found[mode]['peak_rss_mb']} MB, {found[mode]['cpu_s']} CPU s", file=sys.stderr)
            same = found["memory"]["matches"] == found["disk"]["matches"]
            hits = {tuple(m[:2]) for m in found["disk"]["matches"]}
            rows.append((tracks, found, same, len(planted & hits), len(planted)))
    print("| tracks | join | peak RSS | after imports | CPU s | matches | planted found | same matches |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for tracks, found, same, hit, planted in rows:
        for mode in ("memory", "disk"):
            r = found[mode]
            print(f"| {tracks} | {mode} | {r['peak_rss_mb']} MB | {r['imports_rss_mb']} MB | {r['cpu_s']} | "
                  f"{len(r['matches'])} | {hit}/{planted} | {'yes' if same else 'NO'} |")
    print(f"(own peak RSS of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB)")


if __name__ == "__main__":
    main()
