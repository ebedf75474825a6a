"""What scoring the lite separator against given stems costs the stems stage, side by side in one run.

Why: on a song whose source gives its stems, the stems stage uses them as given, and (``stems.evaluate_separator``)
also runs REPET-SIM and scores it against them, so a better separator is a measured improvement. This measures the
stage's CPU time per audio second on the demo's songs with stems, scoring on and off, so the share of songs worth
scoring (``stems.evaluate_separator_share``) is chosen knowing the price.

Run from the repository root:  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_separator_scoring.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.sources.demo import demo_manifest
from songcorpus.schemas.config import load_config
from songcorpus.schemas.row import new_row
from songcorpus.schemas.track import TrackRecord
from songcorpus.transforms.stages.ingest import IngestStage
from songcorpus.transforms.stages.stems import StemStage


def main() -> None:
    manifest = Path(demo_manifest())
    demo = manifest.parent
    songs = [r for r in map(json.loads, manifest.read_text().splitlines()) if r.get("vocals") and r.get("accompaniment")]
    print("| evaluate_separator | songs | audio s | stems stage x real time per core |\n|---|---|---|---|")
    for scoring in (True, False):
        config = load_config(overrides={"stems": {"evaluate_separator": scoring}})
        store = ArtefactStore(tempfile.mkdtemp())
        ingest, stems = IngestStage(config, store), StemStage(config, store)
        cpu = audio = 0.0
        for r in songs:
            track = TrackRecord(source=r["path"], path=str(demo / r["path"]), vocals=str(demo / r["vocals"]),
                                accompaniment=str(demo / r["accompaniment"]))
            row = new_row(track.to_dict())
            row["results"]["ingest"] = ingest.process_one(row)
            start = time.process_time()
            stems.process_one(row)
            cpu += time.process_time() - start
            audio += row["results"]["ingest"]["duration_s"]
        print(f"| {scoring} | {len(songs)} | {audio:.0f} | {audio / cpu:.1f} |")


if __name__ == "__main__":
    main()
