"""The cost of the object store: the same curation from and to a local S3 server, against local disk, in one run.

Why: inputs, the artefact cache and the outputs can all live on object stores (songcorpus/io/storage.py). What does
that cost against local disk, cold (nothing cached) and on a re-run (every stage result cached: a resume), and
what does the loader pay to read its batches from S3 shards by ranged GETs?

What it does, in one process and one run (so both sides see the same machine load):
  1. starts moto's S3 server on 127.0.0.1 (the server the tests use; a Python server on the same cores, so the
     figures are an upper bound on the protocol's overhead, not S3's or MinIO's speed) and uploads the bundled demo
     corpus (11 clips, 5.5 min, with stems) and its manifest;
  2. curates it local -> local (folder in, folder out, cache in OUT/.cache) and s3 -> s3 (manifest, files, cache
     and outputs all on the server), each cold with a fresh cache, then each again (warm: a resume);
  3. checks the two corpora are the same bytes (published.json lists the same objects and checksums, DuckDB's
     file aside) and counts the requests the S3 side made;
  4. reads ``--batches`` loader batches of the train split (f0, tokens, latents) from each.
Results print as a markdown table and go to bench/out/object_store[_s3_first].json.

Run from the repository root:  .venv/bin/python bench/bench_object_store.py [--engine ray --workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s3_server import make_bucket, s3_env, s3_server  # noqa: E402

from songcorpus.io import storage  # noqa: E402
from songcorpus.pipelines.curate import curate  # noqa: E402
from songcorpus.pipelines.sources.demo import demo_manifest  # noqa: E402
from songcorpus.schemas.config import load_config  # noqa: E402


def timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def load_average() -> float:
    return os.getloadavg()[0]


def read_batches(data: str, n: int) -> float:
    from songcorpus.train.data import BatchBuilder, CorpusView, ShardStream, StepOrder

    start = time.perf_counter()
    view = CorpusView(data, "train", ["f0", "vocals_tokens", "accompaniment_latents", "reference_tokens"], window_s=4.0)
    stream = ShardStream(BatchBuilder(view), StepOrder(len(view), seed=0, global_batch=4))
    for step in range(n):
        stream.batch(step)
    return time.perf_counter() - start


@contextmanager
def s3_server_process() -> Iterator[str]:
    """moto's server in its own process on 127.0.0.1 (in a thread it would share this process's GIL with the
    client, so concurrent GETs could not overlap)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def loader_only(corpus: Path, batches: int) -> None:
    """The loader's batches from a local corpus and from its copy on the S3 server (its own process), best of 3."""
    with s3_server_process() as endpoint:
        os.environ.update(s3_env(endpoint))
        bucket = make_bucket("loader")
        for f in storage.list_files(str(corpus)):
            rel = storage.relative_to(f, str(corpus))
            if not rel.startswith("."):
                storage.upload(Path(f), f"{bucket}/corpus/{rel}")
        local = min(read_batches(str(corpus), batches) for _ in range(3))
        remote = min(read_batches(f"{bucket}/corpus", batches) for _ in range(3))
    print(f"| loader, {batches} batches of 4 (best of 3) | {local:.2f} | {remote:.2f} | {remote / local:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="ray", choices=["ray", "beam"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--loader-only", metavar="CORPUS", help="only the loader: upload this local corpus and read "
                                                           "--batches from it and from S3")
    ap.add_argument("--s3-first", action="store_true", help="curate on S3 before local disk (the first run of a "
                                                            "process pays its warm-up: run both orders)")
    args = ap.parse_args()
    if args.loader_only:
        loader_only(Path(args.loader_only), args.batches)
        return
    config = load_config(overrides={"engine": {"name": args.engine, "workers": args.workers}})
    demo = Path(demo_manifest()).parent
    tmp = Path(tempfile.mkdtemp(prefix="bench-object-store-"))
    results: dict[str, object] = {"engine": args.engine, "workers": args.workers, "cpus": os.cpu_count(),
                                  "s3_first": args.s3_first}
    try:
        with s3_server() as endpoint:
            os.environ.update(s3_env(endpoint))
            bucket = make_bucket("bench")
            for f in sorted(demo.rglob("*")):
                if f.is_file():
                    storage.upload(f, f"{bucket}/inputs/{f.relative_to(demo).as_posix()}")
            local_in, s3_in = str(demo / "manifest.jsonl"), f"{bucket}/inputs/manifest.jsonl"
            local_out, s3_out = tmp / "local", f"{bucket}/corpus"
            rows = []
            sides = [("local disk", local_in, local_out), ("S3 (moto, 127.0.0.1)", s3_in, s3_out)]
            for label, inp, out in (sides[::-1] if args.s3_first else sides):
                for run in ("cold", "warm"):
                    load = load_average()
                    wall, cpu, result = timed(lambda inp=inp, out=out: curate([inp], out, config, progress=False))
                    rows.append({"side": label, "run": run, "wall_s": round(wall, 1), "driver_cpu_s": round(cpu, 1),
                                 "load_before": round(load, 1), "counts": result.counts()})
                    print(rows[-1], flush=True)
            results["curate"] = rows
            a, b = storage.read_published(local_out)["objects"], storage.read_published(s3_out)["objects"]
            same = {k for k in a if k != "catalog.duckdb" and k != "state/rows.jsonl" and a[k] == b.get(k)}
            results["identical_objects"] = f"{len(same)} of {len(a) - 2} (catalog.duckdb and rows.jsonl aside)"
            results["s3_objects"] = len(storage.list_files(bucket))
            results["loader"] = {"local_s": round(read_batches(str(local_out), args.batches), 2),
                                 "s3_s": round(read_batches(s3_out, args.batches), 2), "batches": args.batches}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cold = {r["side"]: r["wall_s"] for r in results["curate"] if r["run"] == "cold"}
    warm = {r["side"]: r["wall_s"] for r in results["curate"] if r["run"] == "warm"}
    sides = ["local disk", "S3 (moto, 127.0.0.1)"]
    print(f"\n| run | {sides[0]} (s) | {sides[1]} (s) | ratio |\n|---|---|---|---|")
    for name, d in (("cold (nothing cached)", cold), ("warm (a resume: every stage cached)", warm)):
        print(f"| {name} | {d[sides[0]]} | {d[sides[1]]} | {d[sides[1]] / d[sides[0]]:.2f} |")
    lo = results["loader"]
    print(f"| loader, {lo['batches']} batches of 4 | {lo['local_s']} | {lo['s3_s']} | {lo['s3_s'] / lo['local_s']:.2f} |")
    print(f"\nidentical objects: {results['identical_objects']}; objects on S3: {results['s3_objects']}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"object_store{'_s3_first' if args.s3_first else ''}.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
