"""What Beam's Dask runner runs, probed on a two-process dask.distributed LocalCluster (127.0.0.1).

  .venv/bin/python bench/beam_dask_limits.py

Each probe is a tiny pipeline whose DoFns leave marker files; the output says, per Beam feature, what
happened. bench/RESULTS.md ("Beam's Dask runner") records a run; the README's Beam section cites it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"


class Mark(beam.DoFn):
    """Writes one file per element (and one per setup call) under ``folder/tag``."""

    def __init__(self, folder: str, tag: str) -> None:
        self.folder, self.tag = folder, tag

    def setup(self) -> None:
        Path(self.folder, self.tag).mkdir(parents=True, exist_ok=True)
        Path(self.folder, self.tag, f"setup-{os.getpid()}-{id(self)}").touch()

    def process(self, x):
        Path(self.folder, self.tag, f"el-{x}-{os.getpid()}").touch()
        yield x


class EmitInFinishBundle(beam.DoFn):
    def process(self, x):
        return iter(())

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        yield WindowedValue("from-finish-bundle", 0, [GlobalWindow()])


def count(folder: str, tag: str, prefix: str) -> int:
    d = Path(folder, tag)
    return sum(1 for p in d.iterdir() if p.name.startswith(prefix)) if d.exists() else 0


def run(flags: list[str], build) -> str:
    p = beam.Pipeline(options=PipelineOptions(flags))
    build(p)
    try:
        result = p.run()
        state = result.wait_until_finish()
        result.client.close()
        return str(state)
    except Exception as exc:  # noqa: BLE001 - the probe reports what failed
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


def main() -> None:
    from dask.distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    work = tempfile.mkdtemp(prefix="dask-probe-")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.WARNING) as cluster:
        flags = [f"--runner={DASK}", f"--dask_client_address={cluster.scheduler_address}", "--dask_partition_size=1"]
        rows = []

        state = run(flags, lambda p: p | beam.Create(list(range(8))) | beam.Reshuffle() | beam.ParDo(Mark(work, "chain")))
        pids = {n.rsplit("-", 1)[1] for n in os.listdir(Path(work, "chain")) if n.startswith("el-")}
        rows.append(("straight chain Create|Reshuffle|ParDo", state,
                     f"{count(work, 'chain', 'el-')}/8 elements, {len(pids)} worker processes, "
                     f"setup called {count(work, 'chain', 'setup-')} times"))

        def two_branches(p):
            xs = p | beam.Create(list(range(4)))
            xs | "A" >> beam.ParDo(Mark(work, "branch_a"))
            xs | "B" >> beam.ParDo(Mark(work, "branch_b"))
        state = run(flags, two_branches)
        rows.append(("two branches from one Create", state,
                     f"first branch {count(work, 'branch_a', 'el-')}/4, last {count(work, 'branch_b', 'el-')}/4"))

        out = Path(work, "text", "out")
        state = run(flags, lambda p: p | beam.Create(["a", "b", "c"]) | beam.io.WriteToText(str(out)))
        written = sorted(Path(work, "text").glob("out*"))
        rows.append(("WriteToText", state, ", ".join(f"{f.name}: {f.stat().st_size} bytes" for f in written) or "none"))

        src = Path(work, "in.txt")
        src.write_text("1\n2\n3\n")
        state = run(flags, lambda p: p | beam.io.ReadFromText(str(src)) | beam.ParDo(Mark(work, "read")))
        rows.append(("ReadFromText | ParDo", state, f"{count(work, 'read', 'el-')}/3 elements"))

        state = run(flags, lambda p: (p | beam.Create([1, 2]) | beam.ParDo(EmitInFinishBundle())
                                      | beam.ParDo(Mark(work, "finish"))))
        rows.append(("output from finish_bundle", state, f"{count(work, 'finish', 'el-')} reached the next DoFn"))

    width = max(len(r[0]) for r in rows)
    for name, state, what in rows:
        print(f"{name:<{width}}  {state:<8}  {what}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
