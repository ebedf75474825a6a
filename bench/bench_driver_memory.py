"""Driver memory: the curate driver's own peak RSS and throughput on N short synthetic inputs, for several N in
one run (the driver should not grow with the corpus).

    .venv/bin/python bench/bench_driver_memory.py [--sizes 2000,20000] [--engine ray] [--workers 2]

Each input is a distinct 1 s tone (WAV, 16 kHz; frequency and phase from its index, so no two are duplicates),
rejected by an early duration gate right after ingest: every input makes a row the driver plans, decides and
records (tracks table, state), while no analysis stage or shard costs CPU. Each N runs ``curate`` in its own
Python process; its peak RSS (``getrusage(RUSAGE_SELF)``: the driver process alone, not Ray's workers) and
wall time are printed. Inputs are written once under bench/out/driver_inputs/ and kept for reruns.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16_000


def make_inputs(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(RATE) / RATE
    for i in range(n):
        path = folder / f"tone_{i:06d}.wav"
        if not path.exists():
            freq = 110.0 * 2 ** ((i % 600) / 100)
            x = 0.3 * np.sin(2 * np.pi * freq * t + (i // 600) * 0.01)
            sf.write(path, x.astype(np.float32), RATE, subtype="PCM_16")
    return folder


# With --phases: the driver's resident and peak memory (VmRSS / VmHWM, MB) before and after these steps.
PHASES = (("songcorpus.pipelines.curate", "analyse_into_state"), ("songcorpus.pipelines.corpus.decide", "decide"),
          ("songcorpus.pipelines.corpus.catalog_rows", "write_catalog_tables"))
PHASE_PROBE = """
import importlib
def _mem():
    d = {k: int(v.split()[0]) // 1024 for k, v in (l.split(":", 1) for l in open("/proc/self/status"))
         if k in ("VmRSS", "VmHWM")}
    return f"rss {d['VmRSS']} MB, peak {d['VmHWM']} MB"
def _wrap(mod, name):
    mod = importlib.import_module(mod); f = getattr(mod, name)
    def w(*a, **k):
        print(f"  before {name}: {_mem()}", flush=True); r = f(*a, **k)
        print(f"  after  {name}: {_mem()}", flush=True); return r
    setattr(mod, name, w)
for _m, _n in PHASES: _wrap(_m, _n)
"""


def run_one(inputs: Path, engine: str, workers: int, phases: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="driver-mem-") as tmp:
        cfg = {"engine": {"name": engine, "workers": workers}, "early_gates": True,
               "gates": [{"name": "long_enough", "score": "duration_s", "min": 5.0}]}
        probe = f"PHASES = {PHASES!r}\n{PHASE_PROBE}\n" if phases else ""
        code = (probe + "import json, resource, time, yaml; from songcorpus.schemas.config import load_config; "
                "from songcorpus.pipelines import curate as cm; "
                f"c = load_config(overrides=json.loads({json.dumps(json.dumps(cfg))})); t0 = time.perf_counter(); "
                f"r = cm.curate([{str(inputs)!r}], {tmp + '/out'!r}, c, progress=False); "
                "print(json.dumps({'wall_s': time.perf_counter() - t0, 'counts': r.counts(), "
                "'maxrss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if phases:
            print("\n".join(line for line in out.stdout.splitlines() if line.startswith("  ")), flush=True)
        if out.returncode:
            raise SystemExit(f"curate failed on {inputs}:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--engine", default="ray", choices=["ray", "beam"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--phases", action="store_true", help="also print the driver's memory around its main steps")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(__file__).parent / "out" / "driver_inputs"
    print("| inputs | driver peak RSS (MB) | wall (s) | inputs/s | outcome |")
    results = {}
    for n in sizes:
        t0 = time.perf_counter()
        folder = make_inputs(root / f"n{n}", n)
        made = time.perf_counter() - t0
        r = run_one(folder, args.engine, args.workers, args.phases)
        results[n] = r
        print(f"| {n} | {r['maxrss_mb']:.0f} | {r['wall_s']:.1f} | {n / r['wall_s']:.1f} | {r['counts']} |"
              f"  (inputs written in {made:.1f} s)", flush=True)
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"peak RSS at {hi} / at {lo} inputs: {results[hi]['maxrss_mb'] / results[lo]['maxrss_mb']:.2f}x "
              f"for {hi / lo:.0f}x the inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
