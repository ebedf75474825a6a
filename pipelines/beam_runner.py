"""Apache Beam runner: the same stage groups as Ray, as ParDos.

Locally it uses the DirectRunner in multi-processing mode (``--workers`` processes); any Beam
pipeline options given in ``engine.beam_options`` (e.g. ``--runner=FlinkRunner``,
``--runner=DataflowRunner --project=...``) pass through unchanged. ``DoFn.setup`` builds the stages
once per worker; model weights load on the first cache miss. Results come back through text files
in a scratch folder, then the driver builds the corpus exactly as for Ray.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Iterator

from songcorpus.pipelines.executor import StageGroup, build_stages, group_stages
from songcorpus.schemas.config import PipelineConfig
from songcorpus.transforms.artefacts import ArtefactStore
from songcorpus.transforms.base import Row, canonical_json

try:
    import apache_beam as beam
except ImportError:  # pragma: no cover - apache-beam is a hard dependency; this keeps the message clear
    beam = None


def _group_dofn_class():
    class GroupDoFn(beam.DoFn):
        def __init__(self, config_json: str, store_root: str, phase: str, stage_names: list[str]) -> None:
            self.config_json = config_json
            self.store_root = store_root
            self.phase = phase
            self.stage_names = stage_names
            self.group: StageGroup | None = None

        def setup(self) -> None:
            config = PipelineConfig.model_validate_json(self.config_json)
            stages = [s for s in build_stages(config, ArtefactStore(self.store_root), self.phase)
                      if s.name in self.stage_names]
            self.group = StageGroup(stages)

        def process(self, payload: str) -> Iterator[str]:
            assert self.group is not None
            (row,) = self.group([json.loads(payload)])
            yield canonical_json(row)

    return GroupDoFn


def run_beam(rows: list[Row], config: PipelineConfig, store_root: str, progress: bool = True,
             phase: str = "analysis") -> list[Row]:
    if beam is None:
        raise RuntimeError("apache-beam is not installed: pip install apache-beam")
    from apache_beam.options.pipeline_options import PipelineOptions

    engine = config.engine
    flags = list(engine.beam_options)
    if not any(f.startswith("--runner") for f in flags):
        flags += ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                  f"--direct_num_workers={engine.workers}"]
    store = ArtefactStore(store_root)
    groups = group_stages(build_stages(config, store, phase))
    config_json = config.model_dump_json()
    dofn_cls = _group_dofn_class()
    scratch_root = store.root / "tmp"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="beam-rows-", dir=scratch_root) as scratch:
        out_prefix = os.path.join(scratch, "rows")
        with beam.Pipeline(options=PipelineOptions(flags)) as pipeline:
            pcoll = (pipeline
                     | "Tracks" >> beam.Create([canonical_json(r) for r in rows])
                     | "Spread" >> beam.Reshuffle())
            for group in groups:
                pcoll = pcoll | group.name >> beam.ParDo(
                    dofn_cls(config_json, str(store_root), phase, [s.name for s in group.stages]))
            _ = pcoll | "Collect" >> beam.io.WriteToText(out_prefix, file_name_suffix=".jsonl")
        results: list[Row] = []
        for path in sorted(glob.glob(out_prefix + "*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                results.extend(json.loads(line) for line in fh if line.strip())
    return results
