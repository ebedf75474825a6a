"""Catalog memory: peak RSS of ``pipelines.sinks.catalog.write_catalog`` with N streamed ``tracks`` rows, for several N in one
run (what the catalog sink adds to the driver at Suno70k's 659K songs, without curating them).

    .venv/bin/python bench/bench_catalog_memory.py [--sizes 2000,20000,200000,660000]

Each N runs in its own Python process: it imports the sink (pyarrow, DuckDB), notes its RSS, then writes
``tracks.parquet`` (rows from a generator: a rejected track's fields, 200-byte reason and lineage strings) and
builds ``catalog.duckdb`` from it; peak RSS (VmHWM) and the growth over the post-import RSS are printed, with the
time. The other tables are empty.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from songcorpus.pipelines.sinks.catalog import TABLES, write_catalog
from songcorpus.schemas.catalog import TRACKS_SCHEMA
import duckdb, pyarrow  # noqa: F401 (imported before the baseline is read)

def vm(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

n = int(sys.argv[1])
def tracks():
    blank = {f.name: None for f in TRACKS_SCHEMA}
    for i in range(n):
        yield {**blank, "track_id": f"{i:032x}", "source": f"tone_{i:07d}.wav", "status": "rejected",
               "stage": "early", "reason_code": "long_enough", "has_stems": False, "n_windows": 0, "extra_json": "{}",
               "reason": f"duration_s {1 + i % 4}.0 is below the minimum 5.0 of the gate long_enough " * 3,
               "lineage_json": json.dumps({"ingest": {"version": 3, "model": None, "checksum": f"{i:064x}"}})}
base = vm("VmRSS")
t0 = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    write_catalog(Path(tmp), {"tracks": tracks(), **{k: [] for k in TABLES if k != "tracks"}})
print(json.dumps({"base_mb": base, "peak_mb": vm("VmHWM"), "wall_s": time.perf_counter() - t0}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,20000,200000,660000")
    args = ap.parse_args()
    print("| tracks | RSS after imports (MB) | peak RSS (MB) | growth (MB) | wall (s) |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"write_catalog failed at {n} tracks:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {n:,} | {r['base_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} | "
              f"{r['wall_s']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
