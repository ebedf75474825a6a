"""CorpusBuilder: from analysed rows (stored scores) to decisions, shards and the catalog.

This is the late-binding half of the pipeline: no model runs here. It decides every track (stage
outcome, exact duplicates, near duplicates by audio fingerprint, config gates), assigns splits by artist or
track (one split per group of copies), lays samples into shards in a stable order, writes the shards atomically
(skipping ones already on disk with the same planned content), and commits the catalog last. ``songcorpus
rebuild`` calls it with a new config; ``curate`` (pipelines/curate.py) after the analysis phase.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.atomic import atomic_write_bytes
from songcorpus.io.disk_map import DiskMap
from songcorpus.io.fault_points import fault_point, passing
from songcorpus.pipelines.corpus.catalog_rows import write_catalog_tables
from songcorpus.pipelines.corpus.codebooks import fit_corpus_codebook, fit_corpus_units
from songcorpus.pipelines.corpus.decide import Decision, decide
from songcorpus.pipelines.corpus.planned_shards import (
    SHARD_MANIFEST,
    PendingShards,
    shard_family,
    write_shard_indexes,
    write_shards_here,
)
from songcorpus.pipelines.corpus.shard_plans import WINDOW_META_KEYS, ShardWriter, sample_of, sample_rows, stream_plans
from songcorpus.pipelines.corpus.splits import assign_split, split_groups
from songcorpus.pipelines.job.state_rows import PackedRows, SortedSpool, SpooledRows, chunked
from songcorpus.pipelines.sinks.hf_features import write_features
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, canonical_json, outcome_of, samples_result, source_of
from songcorpus.schemas.sample import sample_json_schema
from songcorpus.schemas.track import track_id_of
from songcorpus.transforms.corpus.near_duplicates import near_duplicate_groups

# Accepted rows per samples-phase engine call: the most full analysis rows the driver holds at once.
SAMPLES_CHUNK = 2048


def build_corpus(rows: Iterable[Row], config: PipelineConfig, out: Path, store: ArtefactStore,
                 lineages: dict[str, dict[str, Any]], run_samples: Callable[[list[Row]], Iterable[Row]],
                 progress: bool = True, write_shards: ShardWriter | None = None,
                 full_rows: Callable[[], Iterable[Row]] | None = None,
                 on_phase: Callable[[str, int | None], None] | None = None) -> DiskMap[Decision]:
    """Decide, fit the codebook, run the samples phase (``run_samples``: the engine), write shards (``write_shards``:
    the engine's workers, else :func:`write_shards_here`) and the catalog from their parts.

    ``rows`` may be slim (``state_rows.slim_row``: what decisions read) when ``full_rows`` streams the full rows in
    source order (the state file): the samples phase then gets them :data:`SAMPLES_CHUNK` at a time and the tracks
    table is written as they stream. Windows are spooled to a local file as the samples phase returns them and
    packed into shard plans in key order from there, :data:`PLANS_CHUNK` plans per shard-writer call; the windows
    table streams from the parts the writers return. Per-track state (slim rows, decisions, splits, window counts)
    and the window spools are on local disk (``SpooledRows``, ``DiskMap``, ``SortedSpool``): what the driver holds
    in memory does not grow with the tracks, only with the copies ``near`` finds and the shards' small parts. The
    decisions come back as a :class:`DiskMap`. ``on_phase(name, rows)`` is told each phase as it starts (decide,
    samples with its songs, shards, catalog: ``schemas/progress.py``), for the job's progress figures."""
    phase = on_phase or (lambda name, total: None)
    phase("decide", None)
    if not isinstance(rows, (PackedRows, SpooledRows)):  # these come from a state file, in source order already
        rows = sorted(rows, key=source_of)
    if full_rows is None:
        def full_rows() -> Iterable[Row]:
            return rows
    near = near_duplicate_groups(rows, config, store)
    decisions = decide(rows, config, near)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = shard_dir / SHARD_MANIFEST
    old_manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    accepted = SpooledRows(r for r in rows if decisions[source_of(r)].status == "accepted")
    groups = split_groups(rows, near)
    splits: DiskMap[str] = DiskMap((source_of(row), assign_split(row, config, groups[source_of(row)])) for row in accepted)
    groups.close()
    codebook = fit_corpus_codebook(accepted, splits, config, store) if accepted else None
    units = fit_corpus_units(accepted, splits, config, store) if accepted and config.profile == "full" else None
    accepted.close()
    if codebook is not None:  # next to the shards, so trainers and the evaluator can decode tokens without the cache
        atomic_write_bytes(out / "codec" / "codebook.npy", store.path(codebook["file"]).read_bytes())
        atomic_write_bytes(out / "codec" / "codebook.json", (json.dumps(codebook, indent=1, sort_keys=True) + "\n").encode())
    if units is not None:
        atomic_write_bytes(out / "codec" / "units.npy", store.path(units["file"]).read_bytes())
        atomic_write_bytes(out / "codec" / "units.json", (json.dumps(units, indent=1, sort_keys=True) + "\n").encode())

    pending = PendingShards(shard_dir)  # shard families this run may write, kept across a crash
    parts: dict[str, dict[str, Any]] = {}  # shard -> its part without its windows (small: files and checksums)
    n_windows: DiskMap[int] = DiskMap()  # source -> its windows in the shards
    n_gated: DiskMap[int] = DiskMap()  # source -> candidate windows the f0 confidence gate dropped
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out) as tmp:
        samples = SortedSpool(Path(tmp) / "samples.unsorted")  # "<split>\x1f<key>" -> the window's plan entry
        windows = SortedSpool(Path(tmp) / "windows.unsorted")  # shard -> its catalog windows rows
        try:
            if codebook is not None:
                phase("samples", len(splits))
                run_samples_phase(full_rows, splits, decisions, codebook, units, lineages, run_samples, samples, n_gated)
            planned: list[str] = []
            first: dict[tuple[str, ...], dict[str, Any]] = {}  # member set -> its key-first window (write_features)
            writer = write_shards or write_shards_here
            phase("shards", None)
            for plan_chunk in chunked(stream_plans(samples, config, store, old_manifest), PLANS_CHUNK):
                planned += [p.name for p in plan_chunk]
                pending.note(p.name for p in plan_chunk)
                for meta in (m for p in plan_chunk for m in p.samples):
                    members = tuple(sorted(meta["members"]))
                    if members not in first or meta["key"] < first[members]["key"]:
                        first[members] = meta
                for part in passing(writer(plan_chunk, shard_dir, store, progress), "shard-part"):
                    rows_of_part = part.pop("windows")
                    if windows.add(part["shard"], (canonical_json(rows_of_part) + "\n").encode()):
                        for src, n in sorted(Counter(w["source"] for w in rows_of_part).items()):
                            n_windows[src] = n_windows.get(src, 0) + n
                    parts[part["shard"]] = part
            phase("catalog", None)
            if sorted(parts) != sorted(planned):
                raise RuntimeError(f"the shard writer returned {len(parts)} catalog parts for {len(planned)} planned "
                                   f"shards")
            write_features(shard_dir, [sample_of(m, store) for m in first.values()],
                           sample_json_schema(full_profile=config.profile == "full"))
            new_manifest = {n: {"plan": parts[n]["plan"], "sha256": parts[n]["sha256"],
                                "n_samples": parts[n]["n_samples"], "split": parts[n]["split"],
                                "files": {f["file"]: f["sha256"] for f in parts[n]["files"]}}
                            for n in sorted(parts)}
            atomic_write_bytes(manifest_path, (json.dumps(new_manifest, indent=1, sort_keys=True) + "\n").encode())
            kept = {f["file"] for part in parts.values() for f in part["files"]}
            ours = pending.names | set(old_manifest)  # only shards songcorpus wrote here are ever removed
            for stale in sorted(shard_dir.glob("*.tar")) + sorted(shard_dir.glob("*.tar.tmp")):
                if stale.name not in kept and shard_family(stale.name) in ours:
                    stale.unlink()
            pending.clear()
            write_shard_indexes(shard_dir, parts)
            track_ids = {source_of(r): track_id_of(r) for r in rows if source_of(r) in near.kept_of}
            write_catalog_tables(out, config, store, lineages, full_rows, decisions, splits, n_windows, n_gated, track_ids,
                                 near, parts, windows)
        finally:
            samples.close()
            windows.close()
    return decisions


# Planned shards per call of the shard writer: the most plans (with their samples' members) the driver holds.
PLANS_CHUNK = 256


def run_samples_phase(full_rows: Callable[[], Iterable[Row]], splits: MutableMapping[str, str],
                      decisions: MutableMapping[str, Decision],
                      codebook: dict[str, Any], units: dict[str, Any] | None, lineages: dict[str, dict[str, Any]],
                      run_samples: Callable[[list[Row]], Iterable[Row]], spool: SortedSpool,
                      n_gated: MutableMapping[str, int]) -> None:
    """The samples phase over the accepted songs' full rows, :data:`SAMPLES_CHUNK` at a time; each window's plan
    entry goes to ``spool`` (keyed by split and key: the packing order); a song the phase rejects gets its
    decision and leaves ``splits``; ``n_gated`` gets each song's count of windows the f0 confidence gate dropped."""
    for chunk in chunked((r for r in full_rows() if source_of(r) in splits), SAMPLES_CHUNK):
        todo = sample_rows(chunk, splits, codebook, lineages)
        del chunk
        if units is not None:
            for r in todo:
                r["unit_codebook"] = {"file": units["file"], "sha256": units["sha256"]}
        for row in run_samples(todo):
            src, o = source_of(row), outcome_of(row)
            if o is not None:
                decisions[src] = Decision(o["status"], o["stage"], o["code"], o["reason"])
                splits.pop(src, None)
                continue
            split, track_id = splits[src], track_id_of(row)
            n_gated[src] = samples_result(row).get("n_f0_gated_windows", 0)
            for entry in samples_result(row)["samples"]:
                meta = {"key": entry["key"], "members": entry["members"], "source": src, "track_id": track_id,
                        "split": split, **{k: entry[k] for k in WINDOW_META_KEYS}}
                spool.add(f"{split}\x1f{entry['key']}", (canonical_json(meta) + "\n").encode())
        fault_point("samples-chunk")
