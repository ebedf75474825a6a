"""The catalog's rows: tracks from the stored scores and decisions, windows from the written shards, and the
fields table (every provided field with the stage, model and checksum that made it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.corpus.decide import Decision, lineage_of
from songcorpus.pipelines.job.state_rows import SortedSpool, scores_of
from songcorpus.pipelines.sinks.catalog import write_catalog
from songcorpus.schemas.catalog import METHOD_COLUMNS
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import (
    Row,
    canonical_json,
    has_result,
    optional_field,
    optional_result,
    result,
    results_of,
    source_of,
    track_of,
)
from songcorpus.schemas.track import METADATA_FIELDS, track_id_of
from songcorpus.transforms.corpus.near_duplicates import NearDuplicates
from songcorpus.transforms.registry import PHASES, build_stages
from songcorpus.transforms.stages.caption import effective_caption


def write_catalog_tables(out: Path, config: PipelineConfig, store: ArtefactStore, lineages: dict[str, dict[str, Any]],
                         full_rows: Callable[[], Iterable[Row]], decisions: Mapping[str, Decision],
                         splits: Mapping[str, str], n_windows: Mapping[str, int], n_gated: Mapping[str, int],
                         track_ids: dict[str, str], near: NearDuplicates, parts: dict[str, dict[str, Any]],
                         windows: SortedSpool) -> None:
    """The catalog, its two big tables streamed: tracks from the full rows, windows from the shards' parts;
    ``n_gated``: per source that made samples, the candidate windows the f0 confidence gate dropped."""

    def tracks_rows() -> Iterator[dict[str, Any]]:
        for r in full_rows():
            src = source_of(r)
            t = track_row(r, decisions[src], splits.get(src), n_windows.get(src, 0), lineages)
            t["n_f0_gated_windows"] = n_gated.get(src)
            # a group is named by its kept copy's id (null for a track with no copy)
            t["duplicate_group"] = track_ids[near.kept_of[src]] if src in near.kept_of else None
            yield t

    def windows_rows() -> Iterator[dict[str, Any]]:
        for line in windows.sorted_lines():
            yield from json.loads(line)

    shard_rows = [{"shard": f["file"], "family": n, "field_group": f["group"], "n_samples": parts[n]["n_samples"],
                   "bytes": f["bytes"], "sha256": f["sha256"], "split": parts[n]["split"]}
                  for n in sorted(parts) for f in parts[n]["files"]]
    write_catalog(out, {"tracks": tracks_rows(), "windows": windows_rows(), "shards": shard_rows,
                        "fields": field_rows(config, store, lineages)})


def field_rows(config: PipelineConfig, store: ArtefactStore, lineages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``fields`` table: every provided field with the stage, model and checksum that made it."""
    rows = []
    for phase in PHASES:
        for stage in build_stages(config, store, phase):
            lin = lineages.get(stage.name) if phase == "analysis" else None
            lin = lin or stage.lineage()
            rows += [{"stage": stage.name, "field": f, "phase": phase, "stage_version": str(lin["version"]),
                      "model": lin["model"], "model_checksum": lin["checksum"], "config_hash": lin["config_hash"]}
                     for f in stage.provides]
    return rows


def track_row(row: Row, decision: Decision, split: str | None, n_windows: int,
              lineages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    track = track_of(row)
    meta = track["metadata"]
    ingest = optional_result(row, "ingest") or {}
    return {
        "track_id": track_id_of(row),
        "source": track["source"],
        "status": decision.status,
        "stage": decision.stage,
        "reason_code": decision.code,
        "reason": decision.reason,
        "audio_sha256": ingest.get("audio_sha256"),
        "source_sha256": ingest.get("source_sha256"),
        "duplicate_of": decision.duplicate_of,
        "source_format": ingest.get("source_format"),
        "split": split,
        **scores_of(row),
        **{k: (str(meta[k]) if meta.get(k) is not None else None) for k in METADATA_FIELDS if k != "split"},
        "has_stems": bool(track.get("vocals") or track.get("accompaniment")),
        **{m: next((res[m] for res in results_of(row).values() if m in res), None) for m in METHOD_COLUMNS},
        **({"classify_method": lineages["classify"]["model"]}  # the lite classifier names its model in lineage only
           if has_result(row, "classify") and "classify_method" not in result(row, "classify")
           and "classify" in lineages else {}),
        **dict(zip(("caption", "caption_method"), effective_caption(row), strict=True)),  # the source's, else generated
        "key": optional_field(row, "key", "key"), "mode": optional_field(row, "key", "mode"),
        "extra_json": canonical_json(track.get("extra") or {}),
        "lineage_json": canonical_json(lineage_of(row, lineages)),
        "n_windows": n_windows,
        "n_f0_gated_windows": None,  # set by the caller, from the samples phase
    }
