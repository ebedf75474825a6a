"""A capacity plan from measured per-stage costs: core-hours, storage and shard counts to curate Suno70k's source
(659K songs) and LaDA-Band's 100k hours, with the lite and the full profile.

What it measures, here and now, on one thread: every lite analysis stage's ``process_one`` over mix-only copies of
the demo (no stems given, as in a scraped corpus: the separator runs on every song), then ``build_corpus`` with
the samples phase timed apart. From that run it takes, per input audio second, each stage's CPU seconds; per
accepted audio second, the samples phase's CPU seconds and the window seconds it makes; per window second, the
shard bytes; per input audio second, the artefact-cache bytes. The full profile's model stages cannot run at
their real size here with real weights, so their one-thread costs come from ``bench/full_profile_costs.json``
(the published architectures at published size, measured by ``bench/bench_full_*.py``; see RESULTS.md).

What it assumes (flags): the mean song length of Suno70k's source, the fraction of it accepted (Suno70k kept 70K
of 659K), and that LaDA-Band's 100k hours are the curated output. Every input pays the whole analysis (late
gates, the lite default): an upper bound where early gates reject before the expensive stages. GPU-hours are
not given: no GPU was measured (the device tool lent none).

    .venv/bin/python bench/capacity_plan.py --copies 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import duckdb  # noqa: E402
import soundfile as sf  # noqa: E402

from songcorpus.io.artefacts import ArtefactStore  # noqa: E402
from songcorpus.pipelines.build_corpus import build_corpus  # noqa: E402
from songcorpus.pipelines.engines.executor import run_stage  # noqa: E402
from songcorpus.pipelines.sources.inputs import expand_inputs  # noqa: E402
from songcorpus.schemas.config import load_config  # noqa: E402
from songcorpus.schemas.row import new_row, track_of  # noqa: E402
from songcorpus.transforms.registry import build_stages  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest import DEMO, build_input_corpus  # noqa: E402

HERE = Path(__file__).parent
GIB = 1 << 30


def cpu_s() -> float:
    """This process plus the children it waited for (the augmentation's ``rubberband`` runs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_lite(inputs: Path, work: Path) -> dict[str, Any]:
    """Per-unit costs of the lite profile on ``inputs``, one thread, from a cold cache."""
    import torch

    torch.set_num_threads(1)
    config = load_config()
    store = ArtefactStore(work / ".cache")
    stages = build_stages(config, store, "analysis")
    rows = [new_row(r.to_dict()) for r in expand_inputs([str(inputs)], store.root / "inputs")]
    input_s = sum(sf.info(track_of(r)["path"]).duration for r in rows)
    stage_cpu = {s.name: 0.0 for s in stages}
    for stage in stages:  # setup is once per worker, not per input: timed apart
        stage.setup()
    for row in rows:
        for stage in stages:
            start = cpu_s()
            run_stage(stage, row, [True])
            stage_cpu[stage.name] += cpu_s() - start
    (sampler,) = build_stages(config, store, "samples")
    sampled = {"cpu_s": 0.0}
    ready = [False]

    def run_samples(todo: list) -> list:
        start = cpu_s()
        for row in todo:
            run_stage(sampler, row, ready)
        sampled["cpu_s"] += cpu_s() - start
        return todo

    start = cpu_s()
    decisions = build_corpus(rows, config, work / "corpus", store, {s.name: s.lineage() for s in stages}, run_samples,
                             progress=False)
    corpus_cpu = cpu_s() - start - sampled["cpu_s"]
    con = duckdb.connect(str(work / "corpus" / "catalog.duckdb"), read_only=True)
    window_s, shard_bytes = con.execute("SELECT sum(duration_s), (SELECT sum(bytes) FROM shards) FROM windows").fetchone()
    accepted_s = con.execute("SELECT sum(duration_s) FROM tracks WHERE status = 'accepted'").fetchone()[0] or 0.0
    con.close()
    return {"inputs": len(rows), "input_s": input_s, "accepted_s": accepted_s, "window_s": window_s or 0.0,
            "accepted": sum(d.status == "accepted" for d in decisions.values()),
            "stage_cpu_s": stage_cpu, "samples_cpu_s": sampled["cpu_s"], "corpus_cpu_s": corpus_cpu,
            "shard_bytes": shard_bytes or 0, "cache_bytes": du(work / ".cache")}


def unit_costs(m: dict[str, Any], full: dict[str, Any] | None) -> dict[str, Any]:
    """Core-seconds per input second (analysis), per accepted second (samples + corpus), bytes per window second."""
    analysis = {k: v / m["input_s"] for k, v in m["stage_cpu_s"].items()}
    samples = m["samples_cpu_s"] / m["accepted_s"]
    bytes_per_window_s = m["shard_bytes"] / m["window_s"]
    if full is not None:
        for name, entry in full["analysis_s_per_audio_min"].items():
            analysis[name] = entry["s"] / 60.0  # replaces the lite stage of that name, or adds one
        windows_per_accepted = m["window_s"] / m["accepted_s"]
        samples += windows_per_accepted * sum(e["s"] for e in full["samples_s_per_window_min"].values()) / 60.0
        bytes_per_window_s += sum(e["bytes"] for e in full["samples_bytes_per_window_s"].values())
    return {"analysis": analysis, "samples": samples, "corpus": m["corpus_cpu_s"] / m["accepted_s"],
            "window_per_accepted": m["window_s"] / m["accepted_s"], "bytes_per_window_s": bytes_per_window_s,
            "cache_per_input_s": m["cache_bytes"] / m["input_s"]}


def plan(input_h: float, accepted_h: float, u: dict[str, Any], shard_bytes: int) -> dict[str, float]:
    analysis_ch = sum(u["analysis"].values()) * input_h  # core-s per audio s == core-h per audio h
    samples_ch = (u["samples"] + u["corpus"]) * accepted_h
    window_h = u["window_per_accepted"] * accepted_h
    shards_b = u["bytes_per_window_s"] * window_h * 3600
    return {"input_h": input_h, "accepted_h": accepted_h, "analysis_core_h": analysis_ch, "samples_core_h": samples_ch,
            "total_core_h": analysis_ch + samples_ch, "window_h": window_h, "shard_tb": shards_b / 1e12,
            "shards": shards_b / shard_bytes, "cache_tb": u["cache_per_input_s"] * input_h * 3600 / 1e12}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=1, help="copies of the demo's 11 mixes to measure on (5 min each)")
    p.add_argument("--work", help="scratch folder (default a temporary one, removed)")
    p.add_argument("--song-minutes", type=float, default=3.0, help="mean length of a song of Suno70k's source")
    p.add_argument("--suno-songs", type=int, default=659_000)
    p.add_argument("--suno-accept", type=float, default=70_000 / 659_000, help="fraction of the source accepted")
    p.add_argument("--lada-hours", type=float, default=100_000, help="LaDA-Band's curated hours")
    p.add_argument("--lada-accept", type=float, default=1.0,
                   help="fraction of LaDA-Band's raw pool accepted (1.0: plan the 100k hours as the input; unknown)")
    p.add_argument("--cores", type=int, default=256, help="cluster size for the wall-clock column")
    p.add_argument("--full-costs", default=str(HERE / "full_profile_costs.json"))
    args = p.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="capacity-"))
    try:
        inputs = work / "inputs"
        demo_s = sum(sf.info(str(c)).duration for c in DEMO.glob("*/mix.flac"))
        build_input_corpus(inputs, args.copies * demo_s / 3600 * 0.999)
        t0 = time.perf_counter()
        m = measure_lite(inputs, work)
        m["wall_s"] = time.perf_counter() - t0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    full = json.loads(Path(args.full_costs).read_text())
    shard_bytes = load_config().shards.max_bytes
    suno_in = args.suno_songs * args.song_minutes / 60.0
    lada_in = args.lada_hours / args.lada_accept
    rows = []
    for profile, costs in (("lite", None), ("full", full)):
        u = unit_costs(m, costs)
        for corpus, input_h, accepted_h in (("Suno70k source", suno_in, suno_in * args.suno_accept),
                                            ("LaDA-Band", lada_in, args.lada_hours)):
            rows.append({"profile": profile, "corpus": corpus, **plan(input_h, accepted_h, u, shard_bytes),
                         "analysis_per_stage": {k: v * input_h for k, v in u["analysis"].items()}})
    print(f"measured: {m['inputs']} inputs, {m['input_s'] / 60:.1f} min of audio, {m['accepted']} accepted "
          f"({m['accepted_s'] / 60:.1f} min), {m['window_s'] / 60:.1f} min of windows, {m['shard_bytes'] / 1e6:.1f} MB of "
          f"shards, {m['cache_bytes'] / 1e6:.1f} MB of cache, {m['wall_s']:.0f} s wall on one thread\n")
    print("per input second (core-s): " + ", ".join(f"{k} {v / m['input_s']:.4f}" for k, v in m["stage_cpu_s"].items()))
    print(f"per accepted second: samples {m['samples_cpu_s'] / m['accepted_s']:.4f}, corpus "
          f"{m['corpus_cpu_s'] / m['accepted_s']:.4f} core-s; {m['window_s'] / m['accepted_s']:.2f} window-s; "
          f"{m['shard_bytes'] / m['window_s'] / 1e3:.1f} KB of shards per window-s\n")
    print(f"| profile | corpus | input h | accepted h | analysis core-h | samples core-h | total core-h | days on "
          f"{args.cores} cores | window h | shards TB | shards of 1 GiB | cache TB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['profile']} | {r['corpus']} | {r['input_h']:,.0f} | {r['accepted_h']:,.0f} | "
              f"{r['analysis_core_h']:,.0f} | {r['samples_core_h']:,.0f} | {r['total_core_h']:,.0f} | "
              f"{r['total_core_h'] / args.cores / 24:,.1f} | {r['window_h']:,.0f} | {r['shard_tb']:,.2f} | "
              f"{r['shards']:,.0f} | {r['cache_tb']:,.2f} |")
    print("\nGPU-hours: not measured (no GPU was lent); the full profile's model stages are GPU stages "
          "(transforms/models/accelerator.py batches them), so its CPU figures are the upper bound a CPU-only cluster pays.")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "capacity_plan.json").write_text(json.dumps({"measured": m, "args": vars(args), "plan": rows}, indent=1))


if __name__ == "__main__":
    main()
