"""Two Ray nodes against one on the same inputs, in one run: ``songcorpus curate --address`` on a cluster of
1 node x 1 CPU (1 worker), then on 2 nodes x 1 CPU (2 workers), each with a cold cache; wall time, audio
seconds per wall second, the ratio, and whether both wrote the same bytes.

Both clusters are songcorpus/testing/ray_cluster.py (``ray start`` per node on 127.0.0.1, own temp dirs), so the only
difference is the number of nodes. The machine's load average is recorded before and after each run, since
its cores are shared with other work.

    .venv/bin/python bench/bench_ray_cluster.py [--songs song_00,song_01,...] [--out bench/out/ray_cluster] [--two-first]
    .venv/bin/python bench/bench_ray_cluster.py --manifest /work/data/synth200/manifest.jsonl --limit 40

``--manifest`` takes any curate manifest (its relative paths are read against its folder) instead of demo songs;
``--limit N`` keeps its first N entries. More audio amortises the fixed costs (Ray start, each actor's model
loads, the driver's serial corpus step) that a second node cannot share.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.testing.ray_cluster import LocalCluster

DEMO = Path(demo_manifest()).parent
SONGS = "song_00,song_01,song_03,song_05,song_07"


def output_bytes(out: Path) -> dict[str, bytes]:
    files = {f"{sub}/{p.name}": p.read_bytes() for sub in ("shards", "catalog") for p in sorted((out / sub).iterdir())}
    files["state/rows.jsonl"] = (out / "state" / "rows.jsonl").read_bytes()
    return files


def run(nodes: int, manifest: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    with LocalCluster([1] * nodes) as cluster:
        load0 = os.getloadavg()[0]
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "songcorpus.cli", "curate", str(manifest), "--out",
                               str(out), "--workers", str(nodes), "--address", cluster.address, "--no-progress"],
                              capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        wall = time.monotonic() - t
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return {"nodes": nodes, "cpus_per_node": 1, "workers": nodes, "wall_s": round(wall, 1),
            "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--songs", default=SONGS, help="demo songs to curate (when no --manifest is given)")
    p.add_argument("--manifest", type=Path, help="curate this manifest's entries instead of demo songs")
    p.add_argument("--limit", type=int, help="with --manifest: its first N entries")
    p.add_argument("--out", default="bench/out/ray_cluster")
    p.add_argument("--two-first", action="store_true", help="run the two-node cluster first (order bias check)")
    args = p.parse_args()
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.manifest:
        base = args.manifest.resolve().parent
        keep = [json.loads(line) for line in open(args.manifest) if line.strip()][:args.limit]
    else:
        songs = args.songs.split(",")
        base = DEMO
        keep = [e for e in (json.loads(line) for line in open(demo_manifest())) if e["path"].split("/")[0] in songs]
    for entry in keep:
        for k in ("path", "vocals", "accompaniment"):
            if entry.get(k) and not Path(entry[k]).is_absolute():
                entry[k] = str(base / entry[k])
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in keep))
    audio_s = sum(sf.info(e["path"]).duration for e in keep)
    order = [(2, "two_nodes"), (1, "one_node")] if args.two_first else [(1, "one_node"), (2, "two_nodes")]
    results = sorted((run(n, manifest, root / name) for n, name in order), key=lambda r: r["nodes"])
    for r in results:
        r["audio_s_per_wall_s"] = round(audio_s / r["wall_s"], 3)
    same = output_bytes(root / "one_node") == output_bytes(root / "two_nodes")
    report = {"inputs": len(keep), "audio_s": round(audio_s, 1), "runs": results,
              "speedup_2_vs_1": round(results[0]["wall_s"] / results[1]["wall_s"], 2), "same_bytes": same,
              "order": [name for _, name in order], "machine_cpus": os.cpu_count()}
    (root / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
