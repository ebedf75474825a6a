"""Benchmark of the songcorpus ingest path: per-stage cost per core, and end-to-end engine scaling.

Why: the ingest path (decode + standardise + quality scores + shard write) must run at >= 100x real
time per CPU core, and adding a second engine worker must pay off (>= 1.6x from 1 to 2 workers).
This script measures both on one machine in one run, next to the baseline a user would write by hand
(a plain single-process loop calling the stages directly), so the numbers can be compared side by side.

What it does:
  1. builds >= ``--hours`` of input audio by repeating the bundled demo corpus (11 clips, ~5 min):
     copy k of every clip gets k samples of leading digital silence, so no two files decode to the same
     audio (the pipeline's exact-duplicate check would otherwise reject the copies) while the mix of
     songs / instrumentals / speech and every clip's content stay as they are;
  2. plain loop: IngestStage, QualityStage and YamnetContentClassifier ``process_one`` on every file,
     each timed on its own (wall with ``time.perf_counter``, CPU with ``time.process_time``), then
     ``build_corpus`` (decisions, WebDataset shards, Parquet + DuckDB catalog) on the resulting rows;
  3. end to end: ``curate()`` with the Ray engine at 1 and then 2 workers (and Beam at 2 workers unless
     ``--no-beam``), each into a fresh output folder with a fresh cache, so nothing is reused.

Throughput is reported as "x real time per core" = audio seconds / CPU seconds of the stage (for the
single-process loop) and as "x real time" = audio seconds / wall seconds for whole runs. The machine's
total CPU use during each phase (from /proc/stat) is reported too, since another process on a shared
machine makes wall-clock figures noisy. Results print as markdown tables and go to a JSON file under
bench/out/ (gitignored).

Run from the repository root:  .venv/bin/python bench/bench_ingest.py --hours 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Ray reads these when it starts; set them before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
# One BLAS/OpenMP thread, as the Ray and Beam workers run: the figures are per core.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from songcorpus.io.artefacts import ArtefactStore  # noqa: E402
from songcorpus.io.audio import DecodeError, shared_decodes  # noqa: E402
from songcorpus.pipelines import curate as curate_mod  # noqa: E402
from songcorpus.pipelines.build_corpus import build_corpus  # noqa: E402
from songcorpus.pipelines.corpus.decide import Decision  # noqa: E402
from songcorpus.pipelines.engines.executor import run_stage  # noqa: E402
from songcorpus.pipelines.sources.inputs import expand_inputs  # noqa: E402
from songcorpus.schemas.config import PipelineConfig, load_config  # noqa: E402
from songcorpus.schemas.row import Row, new_row, outcome_of, results_of, set_outcome, set_result, source_of  # noqa: E402
from songcorpus.transforms.base import Rejection, Stage  # noqa: E402
from songcorpus.transforms.registry import build_stages  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "pipelines" / "demo"
TARGET_PER_CORE = 100.0  # x real time per core, ingest path without classification (decode ... quality)
TARGET_WHOLE_PER_CORE = 4.0  # x real time per core, the whole lite profile (every stage, samples, shards)
TARGET_SPEEDUP = 1.6  # Ray 2 workers over 1 worker


# --------------------------------------------------------------------------------------------------
# Machine facts and load
# --------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


@dataclass
class Timing:
    """Wall and CPU seconds of one phase (accumulated over every ``timed`` block that feeds it).

    ``cpu_s`` is this process (all its threads, from ``time.process_time``) plus the child processes it
    waited for during the block (``RUSAGE_CHILDREN``: the augmentation's ``rubberband`` runs); ``tree_cpu_s`` is
    this process and every process it started (Ray and Beam workers), sampled from /proc, when known.
    The whole machine's busy jiffies over the same blocks give the mean load of everything else.
    """

    wall_s: float = 0.0
    cpu_s: float = 0.0
    tree_cpu_s: float | None = None
    busy_jiffies: int = 0
    total_jiffies: int = 0

    @property
    def machine_busy_cores(self) -> float | None:
        if self.total_jiffies <= 0:
            return None
        return (os.cpu_count() or 1) * self.busy_jiffies / self.total_jiffies

    @property
    def own_cores(self) -> float:
        own = self.tree_cpu_s if self.tree_cpu_s is not None else self.cpu_s
        return own / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def others_cores(self) -> float | None:
        """Mean cores used by processes that are not part of this benchmark (the noise on a shared machine)."""
        busy = self.machine_busy_cores
        return None if busy is None else max(0.0, busy - self.own_cores)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "machine_busy_cores": self.machine_busy_cores, "own_cores": self.own_cores,
                "others_cores": self.others_cores}


def children_cpu_s() -> float:
    """CPU seconds of this process's finished, waited-for children (subprocess runs)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@contextlib.contextmanager
def timed(into: Timing) -> Iterator[Timing]:
    busy0, total0 = busy_jiffies()
    w0, c0 = time.perf_counter(), time.process_time() + children_cpu_s()
    try:
        yield into
    finally:
        into.wall_s += time.perf_counter() - w0
        into.cpu_s += time.process_time() + children_cpu_s() - c0
        busy1, total1 = busy_jiffies()
        into.busy_jiffies += busy1 - busy0
        into.total_jiffies += total1 - total0


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, utime + stime jiffies) of a process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[11]) + int(fields[12])


class ProcessTreeCpu:
    """CPU seconds of this process plus every descendant (Ray raylet, GCS, actors; Beam workers).

    A background thread samples /proc every ``interval`` s; each process counts with the last value
    seen, so a process's final fraction of an interval, and processes living less than one interval,
    are missed: the figure is a slight under-estimate. Descendants stay tracked after being re-parented
    (Ray workers outlive ``ray.shutdown`` by a few seconds).
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._seen: dict[int, int] = {}
        self._start: dict[int, int] = {}
        self._alive: set[int] = set()
        self._baseline = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-tree-cpu", daemon=True)

    def _sample(self) -> None:
        root = os.getpid()
        stats: dict[int, tuple[str, int, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                st = _proc_stat(int(entry))
                if st is not None:
                    stats[int(entry)] = st
        children: dict[int, list[int]] = {}
        for pid, (_, ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        tree, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree.add(pid)
                todo.extend(children.get(pid, ()))
        tracked = tree | (self._seen.keys() & stats.keys())
        for pid in tracked:
            jiffies = stats[pid][2]
            if pid not in self._seen:
                # A process already running at start counts from there; a new one from zero.
                self._start[pid] = jiffies if self._baseline else 0
            self._seen[pid] = max(self._seen.get(pid, 0), jiffies)
        self._alive = {pid for pid in tracked if stats[pid][0] != "Z"}
        self._baseline = False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ProcessTreeCpu:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def wait_descendants_gone(self, timeout_s: float = 30.0) -> float:
        """Keep sampling until every process this run started has exited (engines tear down
        asynchronously), so their last CPU counts here and not as load on the next phase."""
        t0 = time.perf_counter()
        while self._alive - {os.getpid()} and time.perf_counter() - t0 < timeout_s:
            time.sleep(self.interval)  # the sampling thread refreshes _alive
        return time.perf_counter() - t0

    @property
    def cpu_s(self) -> float:
        return sum(v - self._start.get(pid, 0) for pid, v in self._seen.items()) / _CLK_TCK


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.3, window_s: float = 3.0) -> float:
    """Wait (at most ``max_wait_s``) until the machine's load over ``window_s`` is below ``threshold_cores``.

    Returns the seconds waited. On a shared machine this keeps phases from starting in the middle of
    someone else's burst; it cannot stop a burst that begins later.
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        busy0, total0 = busy_jiffies()
        time.sleep(window_s)
        busy1, total1 = busy_jiffies()
        if total1 > total0 and (os.cpu_count() or 1) * (busy1 - busy0) / (total1 - total0) < threshold_cores:
            break
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# 1. Input corpus
# --------------------------------------------------------------------------------------------------


def build_synth_corpus(dest: Path, hours: float, synth: Path, mixes_only: bool) -> tuple[Path, list[Path], float]:
    """Distinct ``songcorpus synth`` songs (mix plus stems, or the mix alone with ``mixes_only``) up to ``hours``,
    plus every demo clip that is not a song (instrumentals, speech) once, listed in ``dest/manifest.jsonl`` with
    their metadata: every stage sees distinct songs, so the near-duplicate stage rejects none of them and the samples
    stage sees them all.

    Returns the manifest, the written mixes and their total duration in seconds."""
    listed = synth / "manifest.jsonl"
    if not listed.is_file():
        raise SystemExit(f"--synth {synth}: no manifest.jsonl (a folder written by `songcorpus synth N --out DIR`)")
    songs = [json.loads(line) for line in listed.read_text().splitlines() if line.strip()]
    demo = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines() if line.strip()]
    if dest.exists():
        shutil.rmtree(dest)
    records: list[dict[str, Any]] = []
    total_s = 0.0

    def take(record: dict[str, Any], root: Path, prefix: str) -> None:
        nonlocal total_s
        record = dict(record)
        if mixes_only or record.get("kind") != "song":
            record.pop("vocals", None)
            record.pop("accompaniment", None)
        for key in ("path", "vocals", "accompaniment"):
            if record.get(key):
                (dest / prefix / record[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / record[key], dest / prefix / record[key])
                record[key] = f"{prefix}/{record[key]}"
        records.append(record)
        total_s += sf.info(str(root / record["path"].split("/", 1)[1])).duration

    for record in demo:
        if record.get("kind") != "song":
            take(record, DEMO, "demo")
    for record in songs:
        if total_s >= hours * 3600.0:
            break
        take(record, synth, "synth")
    if total_s < hours * 3600.0:
        raise SystemExit(f"--synth {synth}: its {len(songs)} songs make {total_s / 3600:.3f} h, under --hours "
                         f"{hours:g}; make more with `songcorpus synth N --out {synth}` or lower --hours")
    manifest = dest / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest, [dest / r["path"] for r in records], total_s


def build_input_corpus(dest: Path, hours: float) -> tuple[list[Path], float]:
    """Write enough whole copies of the demo mixes to reach ``hours``; copy k has k leading zero samples.

    Returns the written files and their total duration in seconds.
    """
    clips = sorted(DEMO.glob("*/mix.flac"))
    if not clips:
        raise SystemExit(f"no demo clips under {DEMO}")
    audio = [(clip.parent.name, *sf.read(str(clip), dtype="int16", always_2d=True)) for clip in clips]
    demo_s = sum(x.shape[0] / rate for _, x, rate in audio)
    n_copies = max(1, math.ceil(hours * 3600.0 / demo_s))
    if dest.exists():
        shutil.rmtree(dest)
    paths: list[Path] = []
    total_s = 0.0
    for k in range(n_copies):
        for name, x, rate in audio:
            y = np.concatenate([np.zeros((k, x.shape[1]), dtype=np.int16), x]) if k else x
            path = dest / f"copy{k:03d}" / name / "mix.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), y, rate, format="FLAC", subtype="PCM_16")
            paths.append(path)
            total_s += y.shape[0] / rate
    return paths, total_s


# --------------------------------------------------------------------------------------------------
# 2. Plain single-process loop
# --------------------------------------------------------------------------------------------------


@dataclass
class LoopResult:
    setup: dict[str, Timing] = field(default_factory=dict)
    stages: dict[str, Timing] = field(default_factory=dict)
    shard_write: Timing = field(default_factory=Timing)
    total: Timing = field(default_factory=Timing)
    rows: list[Row] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)


def run_plain_loop(corpus: Path, out: Path, overrides: dict[str, Any] | None = None) -> LoopResult:
    """What a user would write: build the stages, set them up once, call process_one file by file."""
    res = LoopResult()
    with timed(res.total):
        config = load_config(overrides=overrides or None)
        store = ArtefactStore(out / ".cache")
        stages: list[Stage] = build_stages(config, store, "analysis")
        for stage in stages:
            with timed(res.setup.setdefault(stage.name, Timing())):
                stage.setup()
            res.stages[stage.name] = Timing()
        rows = [new_row(rec.to_dict()) for rec in expand_inputs([str(corpus)], store.root / "inputs")]
        for row in rows:
            with shared_decodes():  # as the engines do (StageGroup): a row's mix and stems decoded once
                for stage in stages:
                    if outcome_of(row) is not None:
                        break
                    with timed(res.stages[stage.name]):
                        try:
                            set_result(row, stage.name, stage.process_one(row))
                        except Rejection as rej:
                            set_outcome(row, "rejected", stage.name, rej.code, rej.reason)
                        except DecodeError as exc:
                            set_outcome(row, "failed", stage.name, exc.code, str(exc))
        lineages = {s.name: s.lineage() for s in stages}
        (sampler,) = build_stages(config, store, "samples")
        res.stages["samples"] = Timing()

        def run_samples(sample_rows: list[Row]) -> list[Row]:
            ready = [False]
            with timed(res.stages["samples"]):
                for row in sample_rows:
                    run_stage(sampler, row, ready)
            return sample_rows

        with timed(res.shard_write):
            res.decisions = build_corpus(rows, config, out, store, lineages, run_samples, progress=False)
        for key in ("wall_s", "cpu_s", "busy_jiffies", "total_jiffies"):  # shard write = build_corpus minus samples
            setattr(res.shard_write, key, getattr(res.shard_write, key) - getattr(res.stages["samples"], key))
        res.rows = rows
    return res


# --------------------------------------------------------------------------------------------------
# 3. End to end with curate()
# --------------------------------------------------------------------------------------------------


@dataclass
class E2EResult:
    name: str
    engine: str
    workers: int
    total: Timing = field(default_factory=Timing)
    engine_wall_s: float = 0.0  # analyse_into_state: all analysis stages, their results streamed into state
    corpus_wall_s: float = 0.0  # build_corpus: decisions, shards, catalog
    teardown_wait_s: float = 0.0  # after curate() returned, until the engine's processes had exited
    waited_for_quiet_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    decisions_match_loop: bool | None = None
    results_mismatch_vs_loop: int | None = None
    ray_left_running: bool | None = None


@contextlib.contextmanager
def patched_timer(name: str, sink: Callable[[float], None]) -> Iterator[None]:
    """Wrap ``songcorpus.pipelines.curate.<name>`` to time it (the module is not edited)."""
    original = getattr(curate_mod, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink(time.perf_counter() - t0)

    setattr(curate_mod, name, wrapper)
    try:
        yield
    finally:
        setattr(curate_mod, name, original)


def ray_initialized() -> bool | None:
    if "ray" not in sys.modules:
        return None
    import ray

    return bool(ray.is_initialized())


def run_curate(corpus: Path, out: Path, engine: str, workers: int, loop: LoopResult) -> E2EResult:
    """``curate()`` into a fresh folder (its cache, OUT/.cache, is fresh too), timed with all its processes."""
    if out.exists():
        raise SystemExit(f"{out} exists; every end-to-end run needs a fresh output folder and cache")
    res = E2EResult(name=f"curate {engine}, {workers} worker{'s' if workers > 1 else ''}", engine=engine, workers=workers)
    config: PipelineConfig = load_config(overrides={"engine": {"name": engine, "workers": workers}})

    def add_engine(s: float) -> None:
        res.engine_wall_s += s

    def add_corpus(s: float) -> None:
        res.corpus_wall_s += s

    with ProcessTreeCpu() as tree:
        with patched_timer("analyse_into_state", add_engine), patched_timer("build_corpus", add_corpus), timed(res.total):
            result = curate_mod.curate([str(corpus)], out, config, progress=False)
        res.teardown_wait_s = tree.wait_descendants_gone()
    res.total.tree_cpu_s = tree.cpu_s
    res.counts = result.counts()
    res.decisions_match_loop = result.decisions == loop.decisions
    res.results_mismatch_vs_loop = compare_rows(out / "state" / "rows.jsonl", loop.rows)
    if engine == "ray":
        res.ray_left_running = ray_initialized()
        if res.ray_left_running:  # run_ray should shut down the Ray it started; never let it leak into the next run
            import ray

            ray.shutdown()
    return res


def compare_rows(rows_jsonl: Path, loop_rows: list[Row]) -> int:
    """Sources whose stored stage results or outcome differ from the plain loop's."""
    with open(rows_jsonl, encoding="utf-8") as fh:
        stored = {source_of(r): r for r in map(json.loads, fh) if r}
    mismatches = 0
    for row in loop_rows:
        other = stored.get(source_of(row))
        ours = json.loads(json.dumps({"results": results_of(row), "outcome": outcome_of(row)}))
        if other is None or {"results": results_of(other), "outcome": outcome_of(other)} != ours:
            mismatches += 1
    return mismatches + len(set(stored) - {source_of(r) for r in loop_rows})


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def rt(audio_s: float, seconds: float) -> float:
    return audio_s / seconds if seconds > 0 else float("inf")


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def stage_table(audio_s: float, loop: LoopResult) -> tuple[str, list[dict[str, Any]]]:
    ing, qual, cls = (loop.stages[n] for n in ("ingest", "quality", "classify"))
    shard = loop.shard_write

    def combined(parts: list[Timing]) -> Timing:
        return Timing(wall_s=sum(t.wall_s for t in parts), cpu_s=sum(t.cpu_s for t in parts),
                      busy_jiffies=sum(t.busy_jiffies for t in parts), total_jiffies=sum(t.total_jiffies for t in parts))

    labels = {"ingest": "ingest (decode, standardise, hash, FLAC write, loudness)",
              "quality": "quality (silence, bandwidth, DC, WADA-SNR)",
              "classify": "classify (YAMNet int8 ONNX, 1 thread)",
              "stems": "stems (given stems standardised, or REPET-SIM; separator scored vs given stems)",
              "vad": "vad (Silero VAD + singing gate on the vocal stem)",
              "f0": "f0 (torchcrepe tiny, 100 Hz, inside VAD segments)",
              "structure": "structure (librosa beats, downbeat estimate, Laplacian sections)",
              "codec_frames": "codec_frames (embedded-codec frames for the codebook fit)",
              "samples": "samples (windows, augmentation, embedded codec latents + tokens, FLAC, alignment checks)"}
    lines: list[tuple[str, Timing]] = [(labels.get(n, n), t) for n, t in loop.stages.items()]
    lines += [
        ("shard write (build_corpus minus samples: decide, codebook fit, shards, Parquet + DuckDB catalog)", shard),
        ("**ingest path excl. classification** (ingest + quality)", combined([ing, qual])),
        ("**ingest path incl. classification** (ingest + quality + classify)", combined([ing, qual, cls])),
        ("**whole lite profile** (every stage above + shard write)", combined([*loop.stages.values(), shard])),
    ]
    out = ["| stage (plain single-process loop) | wall s | CPU s | x real time per core (audio s / CPU s) "
           "| others' load (cores) |",
           "|---|---:|---:|---:|---:|"]
    records = []
    for label, t in lines:
        out.append(f"| {label} | {fmt(t.wall_s, 2)} | {fmt(t.cpu_s, 2)} | {fmt(rt(audio_s, t.cpu_s))} | "
                   f"{fmt(t.others_cores, 2)} |")
        records.append({"stage": label.replace("*", ""), **t.to_dict(), "x_realtime_per_core": rt(audio_s, t.cpu_s)})
    setup = ", ".join(f"{n} {t.wall_s:.2f} s" for n, t in loop.setup.items() if t.wall_s >= 0.005) or "none"
    out.append("")
    out.append(f"Audio: {audio_s / 3600:.3f} h in {len(loop.rows)} files. One-off setup, not in the rows above: {setup}. "
               "Others' load: mean cores used by processes outside this benchmark during the phase (2 = fully loaded).")
    return "\n".join(out), records


def side_by_side(audio_s: float, before: LoopResult, after: LoopResult) -> str:
    """x real time per core per stage, before and after, and the ratio (one run, so the same machine load)."""
    out = ["| stage | before: x real time per core | after | after / before |", "|---|---:|---:|---:|"]
    names = list(dict.fromkeys([*before.stages, *after.stages]))
    pairs = [(n, before.stages.get(n), after.stages.get(n)) for n in names]
    pairs.append(("shard write", before.shard_write, after.shard_write))
    whole = [sum(t.cpu_s for t in r.stages.values()) + r.shard_write.cpu_s for r in (before, after)]
    for name, b, a in pairs:
        if b is None or a is None:
            continue
        ratio = b.cpu_s / max(a.cpu_s, 1e-9)
        out.append(f"| {name} | {fmt(rt(audio_s, b.cpu_s))} | {fmt(rt(audio_s, a.cpu_s))} | {ratio:.2f}x |")
    out.append(f"| **whole lite profile** | {fmt(rt(audio_s, whole[0]))} | {fmt(rt(audio_s, whole[1]))} "
               f"| {whole[0] / max(whole[1], 1e-9):.2f}x |")
    counts = [counts_str(loop_counts(r)) for r in (before, after)]
    out.append(f"\nOutcomes before: {counts[0]}; after: {counts[1]}.")
    return "\n".join(out)


def e2e_table(audio_s: float, loop: LoopResult, runs: list[E2EResult]) -> tuple[str, list[dict[str, Any]]]:
    by_key = {(r.engine, r.workers): r for r in runs}
    ray1 = by_key.get(("ray", 1))
    lw = loop.total.wall_s
    out = ["| run | wall s | x real time (audio h / wall h) | speed-up vs plain loop | speed-up vs Ray 1 worker "
           "| CPU s, all its processes | x real time per core | engine s | corpus s | others' load (cores) "
           "| accepted / rejected / failed | same decisions + scores as loop |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    loop_cpu = loop.total.cpu_s
    out.append(f"| plain loop (1 process, baseline) | {fmt(lw, 1)} | {fmt(rt(audio_s, lw))} | 1.00x | "
               f"{fmt(ray1.total.wall_s / lw, 2) + 'x' if ray1 else '-'} | {fmt(loop_cpu, 1)} | {fmt(rt(audio_s, loop_cpu))} | "
               f"{fmt(lw - loop.shard_write.wall_s, 1)} | {fmt(loop.shard_write.wall_s, 1)} | "
               f"{fmt(loop.total.others_cores, 2)} | {counts_str(loop_counts(loop))} | (reference) |")
    records = [{"run": "plain loop", **loop.total.to_dict(), "x_realtime": rt(audio_s, lw),
                "x_realtime_per_core": rt(audio_s, loop_cpu)}]
    for r in runs:
        w = r.total.wall_s
        cpu = r.total.tree_cpu_s
        vs_ray1 = f"{ray1.total.wall_s / w:.2f}x" if ray1 else "-"
        same = "yes" if r.decisions_match_loop and r.results_mismatch_vs_loop == 0 else \
            f"NO ({r.results_mismatch_vs_loop} rows differ)"
        out.append(f"| {r.name} | {fmt(w, 1)} | {fmt(rt(audio_s, w))} | {lw / w:.2f}x | {vs_ray1} | {fmt(cpu, 1)} | "
                   f"{fmt(rt(audio_s, cpu) if cpu else None)} | {fmt(r.engine_wall_s, 1)} | {fmt(r.corpus_wall_s, 1)} | "
                   f"{fmt(r.total.others_cores, 2)} | {counts_str(r.counts)} | {same} |")
        records.append({"run": r.name, **asdict(r), "total": r.total.to_dict(), "x_realtime": rt(audio_s, w),
                        "x_realtime_per_core": rt(audio_s, cpu) if cpu else None, "speedup_vs_loop": lw / w,
                        "speedup_vs_ray_1_worker": (ray1.total.wall_s / w) if ray1 else None})
    out.append("")
    out.append("Speed-ups are wall-time ratios (the other run's wall / this run's wall). CPU s: this process and every "
               "process it started (Ray's raylet, GCS, agents and actors; Beam's workers), sampled from /proc, including "
               "their exit after the run. engine s: analyse_into_state (the analysis phase; for the loop, "
               "everything but build_corpus). corpus s: build_corpus.")
    return "\n".join(out), records


def loop_counts(loop: LoopResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in loop.decisions.values():
        counts[d.status] = counts.get(d.status, 0) + 1
    return counts


def counts_str(counts: dict[str, int]) -> str:
    return " / ".join(str(counts.get(k, 0)) for k in ("accepted", "rejected", "failed"))


def verdicts(audio_s: float, loop: LoopResult, runs: list[E2EResult]) -> dict[str, Any]:
    # decode, standardise, hash, quality: the original ingest path (its shard write then packed one FLAC per
    # track; it now packs windows of three stems and arrays and fits the codebook, reported on its own row)
    excl_cpu = loop.stages["ingest"].cpu_s + loop.stages["quality"].cpu_s
    per_core = rt(audio_s, excl_cpu)
    whole_cpu = sum(t.cpu_s for t in loop.stages.values()) + loop.shard_write.cpu_s
    by_key = {(r.engine, r.workers): r for r in runs}
    speedup = None
    if ("ray", 1) in by_key and ("ray", 2) in by_key:
        speedup = by_key[("ray", 1)].total.wall_s / by_key[("ray", 2)].total.wall_s
    return {
        "ingest_path_excl_classification_x_realtime_per_core": per_core,
        "meets_per_core_target": per_core >= TARGET_PER_CORE,
        "whole_lite_profile_x_realtime_per_core": rt(audio_s, whole_cpu),
        "meets_whole_profile_target": rt(audio_s, whole_cpu) >= TARGET_WHOLE_PER_CORE,
        "ray_speedup_2_over_1_workers": speedup,
        "meets_speedup_target": None if speedup is None else speedup >= TARGET_SPEEDUP,
    }


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the songcorpus ingest path: per-stage x real time per core in a plain loop, "
                    "then curate() end to end with Ray at 1 and 2 workers (and Beam at 2).",
    )
    p.add_argument("--hours", type=float, default=1.0,
                   help="hours of input audio to build from the demo corpus (default: 1.0)")
    p.add_argument("--synth", type=Path, default=None, metavar="DIR",
                   help="build the input from distinct `songcorpus synth` songs in DIR (with their stems) plus the demo's "
                        "instrumentals and speech clips, instead of repeating the demo clips")
    p.add_argument("--after", type=json.loads, default=None, metavar="JSON",
                   help="config overrides for the main plain loop (default: none, the shipped defaults); to try a "
                        "setting before making it the default")
    p.add_argument("--mixes-only", action="store_true", help="with --synth: give the songs as mixes only (no stems)")
    p.add_argument("--before", type=json.loads, default=None, metavar="JSON",
                   help="config overrides of a 'before' configuration, run in the same plain loop first, e.g. "
                        "'{\"f0\": {\"without_stems\": \"separated\"}}': the stage table then shows both, side by side")
    p.add_argument("--scratch", type=Path, default=None,
                   help="scratch folder; its corpus/ and runs/ subfolders are replaced (default: a temp dir, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the default temp scratch folder")
    p.add_argument("--no-beam", action="store_true", help="skip the Beam (DirectRunner, 2 workers) end-to-end run")
    p.add_argument("--no-e2e", action="store_true", help="only the plain loop (no curate() runs)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each phase, wait up to SECONDS for the machine to be idle (< 0.3 cores busy over 3 s); "
                        "useful on a shared machine (default: 0, no wait)")
    p.add_argument("--json", type=Path, default=None,
                   help="where to write the JSON results (default: bench/out/bench_ingest-<hours>h-<time>.json)")
    args = p.parse_args(argv)
    if args.hours <= 0:
        p.error("--hours must be > 0")
    if args.mixes_only and args.synth is None:
        p.error("--mixes-only needs --synth")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    facts = machine_facts()
    own_scratch = args.scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="songcorpus-bench-")) if own_scratch else args.scratch.resolve()
    runs_dir = scratch / "runs"
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    runs_dir.mkdir(parents=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        print(f"# building >= {args.hours:g} h of input under {scratch / 'corpus'}", file=sys.stderr)
        t0 = time.perf_counter()
        if args.synth:
            corpus_input, paths, audio_s = build_synth_corpus(scratch / "corpus", args.hours, args.synth, args.mixes_only)
        else:
            paths, audio_s = build_input_corpus(scratch / "corpus", args.hours)
            corpus_input = scratch / "corpus"
        print(f"#   {len(paths)} files, {audio_s / 3600:.3f} h, {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        waited: dict[str, float] = {}
        before = None
        if args.before is not None:
            print(f"# plain single-process loop, before: {json.dumps(args.before)}", file=sys.stderr)
            before = run_plain_loop(corpus_input, runs_dir / "loop-before", args.before)
            print(f"#   {before.total.wall_s:.1f} s", file=sys.stderr)
        print("# plain single-process loop", file=sys.stderr)
        waited["plain loop"] = wait_for_quiet(args.wait_quiet)
        loop = run_plain_loop(corpus_input, runs_dir / "loop", args.after)
        print(f"#   {loop.total.wall_s:.1f} s", file=sys.stderr)

        runs: list[E2EResult] = []
        if not args.no_e2e:
            plan = [("ray", 1), ("ray", 2)] + ([] if args.no_beam else [("beam", 2)])
            for engine, workers in plan:
                print(f"# curate engine={engine} workers={workers}", file=sys.stderr)
                quiet_s = wait_for_quiet(args.wait_quiet)
                r = run_curate(corpus_input, runs_dir / f"{engine}-w{workers}", engine, workers, loop)
                r.waited_for_quiet_s = waited[r.name] = quiet_s
                print(f"#   {r.total.wall_s:.1f} s, {r.counts}", file=sys.stderr)
                runs.append(r)

        stages_md, stage_records = stage_table(audio_s, loop)
        if before is not None:
            before_md, before_records = stage_table(audio_s, before)
            after_label = f"After ({json.dumps(args.after)})" if args.after else "After (the defaults)"
            stages_md = "\n\n".join([f"Before ({json.dumps(args.before)}):", before_md, f"{after_label}:", stages_md,
                                      side_by_side(audio_s, before, loop)])
            stage_records = {"before": before_records, "after": stage_records}
        e2e_md, e2e_records = e2e_table(audio_s, loop, runs)
        verdict = verdicts(audio_s, loop, runs)
        command = " ".join([sys.executable, *sys.argv])
        summary = [
            f"Target: ingest path excl. classification (ingest + quality) >= {TARGET_PER_CORE:g}x real time per core: "
            f"{verdict['ingest_path_excl_classification_x_realtime_per_core']:.1f}x -> "
            f"{'MET' if verdict['meets_per_core_target'] else 'NOT MET'}",
            f"Target: whole lite profile >= {TARGET_WHOLE_PER_CORE:g}x real time per core (plain loop CPU): "
            f"{verdict['whole_lite_profile_x_realtime_per_core']:.2f}x -> "
            f"{'MET' if verdict['meets_whole_profile_target'] else 'NOT MET'}",
        ]
        if verdict["ray_speedup_2_over_1_workers"] is not None:
            summary.append(f"Target: Ray 2 workers / 1 worker >= {TARGET_SPEEDUP:g}x: "
                           f"{verdict['ray_speedup_2_over_1_workers']:.2f}x -> "
                           f"{'MET' if verdict['meets_speedup_target'] else 'NOT MET'}")
        report = "\n\n".join([
            f"Machine: {facts['nproc']} CPUs ({facts['cpu_model']}), load average at start "
            f"{', '.join(f'{v:.2f}' for v in facts['loadavg_at_start'])}",
            stages_md, e2e_md, "\n".join(summary)])
        print(report)

        json_path = args.json or REPO / "bench" / "out" / f"bench_ingest-{args.hours:g}h-{started.replace(':', '')}.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({
            "started": started, "command": command, "machine": facts,
            "input": {"files": len(paths), "audio_s": audio_s, "audio_h": audio_s / 3600, "hours_requested": args.hours},
            "plain_loop": {"setup": {k: v.to_dict() for k, v in loop.setup.items()},
                           "stages": {k: v.to_dict() for k, v in loop.stages.items()},
                           "shard_write": loop.shard_write.to_dict(), "total": loop.total.to_dict(),
                           "counts": loop_counts(loop)},
            "waited_for_quiet_s": waited,
            "stage_table": stage_records, "end_to_end": e2e_records, "verdict": verdict,
            "markdown": report,
        }, indent=1, default=str) + "\n")
        print(f"\nJSON: {json_path}", file=sys.stderr)
    finally:
        if own_scratch and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        elif own_scratch:
            print(f"scratch kept: {scratch}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
