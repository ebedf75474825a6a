"""CorpusBuilder: from analysed rows (stored scores) to decisions, shards and the catalog.

This is the late-binding half of the pipeline: no model runs here. It decides every track (stage
outcome, exact duplicates, near duplicates by audio fingerprint, config gates), assigns splits by artist or
track (one split per group of copies), lays samples into
shards in a stable order, writes the shards atomically (skipping ones already on disk with the same
planned content), and commits the catalog last. ``songcorpus rebuild`` calls it with a new config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.atomic import atomic_write_bytes
from songcorpus.io.disk_map import DiskMap
from songcorpus.io.fault_points import fault_point, passing
from songcorpus.pipelines.catalog import write_catalog
from songcorpus.pipelines.hf_features import write_features
from songcorpus.pipelines.shard_writer import Sample, describe_shard, family_present, write_shard
from songcorpus.pipelines.state_rows import PackedRows, SortedSpool, SpooledRows, chunked, scores_of
from songcorpus.schemas.catalog import METHOD_COLUMNS
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, canonical_json
from songcorpus.schemas.sample import SAMPLE_SPEC_VERSION, group_file, group_suffixes, sample_json_schema
from songcorpus.schemas.track import METADATA_FIELDS, SPLITS, track_id_for, track_id_of
from songcorpus.transforms.caption import effective_caption
from songcorpus.transforms.gates import apply_gates, check_gate_scores
from songcorpus.transforms.near_duplicates import NearDuplicates, components, exact_duplicates, near_duplicate_groups

SHARD_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Decision:
    status: str
    stage: str | None = None
    code: str | None = None
    reason: str | None = None
    duplicate_of: str | None = None


def decision_map(items: Iterable[tuple[str, Decision]] = ()) -> DiskMap[Decision]:
    """Source -> decision, on local disk (``songcorpus/io/disk_map.py``): the driver holds none of them in memory."""
    return DiskMap(items, encode=dataclasses.astuple, decode=lambda v: Decision(*v))


def decide(rows: Iterable[Row], config: PipelineConfig, near: NearDuplicates | None = None) -> DiskMap[Decision]:
    """Per source: stage outcome first, then exact duplicates (the smallest source is kept), then near
    duplicates (``near``, when ``near_duplicates.reject``: one kept copy per group), then gates. One pass over
    ``rows`` (and one for the copies); the decisions go to disk."""
    check_gate_scores(config.gates)
    kept_of = exact_duplicates(rows)

    def decided() -> Iterator[tuple[str, Decision]]:
        for row in rows:
            src, outcome = row["track"]["source"], row["outcome"]
            if outcome is not None:
                yield src, Decision(outcome["status"], outcome["stage"], outcome["code"], outcome["reason"])
                continue
            kept = kept_of.get(src, src)
            if kept != src:
                yield src, Decision("rejected", "dedup", "duplicate", f"exact duplicate of the decoded audio of {kept}",
                                    kept)
                continue
            if near is not None and config.near_duplicates.reject and near.kept_of.get(src, src) != src:
                yield src, Decision("rejected", "fingerprint", "near_duplicate", near.reason(src), near.kept_of[src])
                continue
            gate = apply_gates(config.gates, scores_of(row))
            yield src, Decision("rejected", gate.stage, gate.code, gate.reason) if gate else Decision("accepted")

    return decision_map(decided())


def split_key(row: Row) -> str:
    """What one track's split hashes on by itself: the artist, else the input file's bytes."""
    track = row["track"]
    song = row["results"].get("ingest", {}).get("source_sha256")
    return track["metadata"].get("artist") or (f"file:{song}" if song else track_id_for(track["source"]))


def split_groups(rows: Iterable[Row], near: NearDuplicates | None) -> DiskMap[str]:
    """Source -> the key its split hashes on: the smallest :func:`split_key` of its connected component of
    (copies of one recording, ``near``) joined with (songs of one artist), so no copy and no artist crosses
    splits, whether or not near duplicates are rejected. A track alone keeps its own key.

    Tracks of one key are one component already, so only the keys that copies join are merged (a union-find over
    the keys of ``near``'s groups: memory for the copies, not the corpus); two passes over ``rows``, the result on
    disk."""
    kept_of = near.kept_of if near else {}
    key_of_copy: dict[str, str] = {}
    if kept_of:
        for r in rows:
            if r["track"]["source"] in kept_of:
                key_of_copy[r["track"]["source"]] = split_key(r)
    edges = [(key_of_copy[s], key_of_copy[kept]) for s, kept in kept_of.items()
             if s in key_of_copy and kept in key_of_copy]
    merged = components(sorted({k for e in edges for k in e}), edges)  # key -> smallest key of its component
    return DiskMap((r["track"]["source"], merged.get(k := split_key(r), k)) for r in rows)


def assign_split(row: Row, config: PipelineConfig, group: str | None = None) -> str:
    """The source's own split if it names one; else by hashing ``group`` (:func:`split_groups`: one key for
    all copies of a recording and all songs of an artist), by default the artist, or when it is unknown the
    input file's bytes (``ingest.source_sha256``), so every window of a song, and every song of an
    artist, lands in one split on every run, wherever the files are moved or however they are renamed."""
    track = row["track"]
    given = track["metadata"].get("split")
    if given in SPLITS:
        return given
    group = group or split_key(row)
    h = int.from_bytes(hashlib.sha256(f"{config.splits.salt}\x1f{group}".encode()).digest()[:8], "big") / 2**64
    if h < config.splits.train:
        return "train"
    return "valid" if h < config.splits.train + config.splits.valid else "test"


def lineage_of(row: Row, lineages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: lineages[name] for name in row["results"] if name in lineages}


def train_pool(accepted: Iterable[Row], splits: Mapping[str, str]) -> Iterator[Row]:
    """What corpus-level models are fit on: the train split's songs (all accepted songs when none is in train)."""
    in_train = any(splits[r["track"]["source"]] == "train" for r in accepted)
    return (r for r in accepted if not in_train or splits[r["track"]["source"]] == "train")


def fit_cached_centroids(store: ArtefactStore, name: str, settings_digest: str, files: list[str],
                         fit: Callable[[Any], Any], max_rows: int, seed: int) -> dict[str, Any] | None:
    """k-means centroids over the concatenated frame files, stored as ``.npy``; cached under ``name`` by the
    settings and the frame files, so an unchanged corpus never refits. ``fit`` subsamples to ``max_rows`` rows
    with ``seed`` (``kmeans.subsample_rows``); that draw is made here over the files' row counts and only the rows
    drawn are read (:func:`gather_rows`), so the driver holds ``max_rows`` frames, not the corpus's."""
    from songcorpus.transforms.codec import codebook_bytes, codebook_sha256

    if not files:
        return None
    key = hashlib.sha256("\x1f".join([settings_digest, *files]).encode()).hexdigest()
    cached = store.get_result(name, key)
    if cached is not None and store.exists(cached["file"]):
        return cached
    frames, n_total = gather_rows(store, files, max_rows, seed)
    centroids = fit(frames)
    entry = {"file": store.put_blob(codebook_bytes(centroids), ".npy"), "sha256": codebook_sha256(centroids),
             "fit_frames": n_total}
    store.put_result(name, key, entry)
    return entry


def gather_rows(store: ArtefactStore, files: list[str], max_rows: int, seed: int) -> tuple[Any, int]:
    """The rows ``subsample_rows(concatenation of files, max_rows, seed)`` would keep, in order, read file by file
    (memory-mapped: a file's rows not drawn are never loaded), and the concatenation's row count."""
    import numpy as np

    arrays = [np.load(store.path(f), mmap_mode="r", allow_pickle=False) for f in files]
    n_total = sum(a.shape[0] for a in arrays)
    if n_total <= max_rows:
        return np.concatenate([np.asarray(a) for a in arrays]), n_total
    wanted = np.sort(np.random.default_rng(seed).choice(n_total, max_rows, replace=False))
    parts, start = [], 0
    for a in arrays:
        lo, hi = np.searchsorted(wanted, [start, start + a.shape[0]])
        if hi > lo:
            parts.append(np.asarray(a[wanted[lo:hi] - start]))
        start += a.shape[0]
    return np.concatenate(parts), n_total


def fit_corpus_codebook(accepted: Iterable[Row], splits: Mapping[str, str], config: PipelineConfig,
                        store: ArtefactStore) -> dict[str, str] | None:
    """The embedded codec's codebook, fit on the train split's sampled frames (stage ``codec_frames``)."""
    from songcorpus.transforms.codec import fit_codebook

    files = [r["results"]["codec_frames"]["codec_frames_file"] for r in train_pool(accepted, splits)]
    return fit_cached_centroids(store, "codebook", config.codec.digest(), files,
                                lambda frames: fit_codebook(frames, config.codec), config.codec.fit_max_frames,
                                config.codec.seed)


def fit_corpus_units(accepted: Iterable[Row], splits: Mapping[str, str], config: PipelineConfig,
                     store: ArtefactStore) -> dict[str, Any] | None:
    """Full profile: the content-unit k-means over the train split's sampled HuBERT frames (stage
    ``unit_frames``)."""
    from songcorpus.transforms.content_units import FIT_MAX_FRAMES, fit_unit_codebook

    cfg = config.content_units
    files = [r["results"]["unit_frames"]["unit_frames_file"] for r in train_pool(accepted, splits)
             if "unit_frames" in r["results"]]
    return fit_cached_centroids(store, "unit_codebook", cfg.digest(), files,
                                lambda frames: fit_unit_codebook([frames], cfg.n_units, seed=0), FIT_MAX_FRAMES, 0)


def sample_rows(accepted: list[Row], splits: Mapping[str, str], codebook: dict[str, str],
                lineages: dict[str, dict[str, Any]]) -> list[Row]:
    """Rows for the samples phase: what SampleStage reads besides the analysis results (a copy of the results
    dict, so an in-process runner never writes samples into the analysis rows that state/rows.jsonl records)."""
    return [{"track": r["track"], "results": dict(r["results"]), "outcome": None, "split": splits[r["track"]["source"]],
             "codebook": {"file": codebook["file"], "sha256": codebook["sha256"]}, "scores": scores_of(r),
             "lineage": lineage_of(r, lineages)} for r in accepted]


def plan_shards(samples: list[Sample], split: str, config: PipelineConfig) -> list[tuple[str, list[Sample]]]:
    """Greedy packing in key order: a shard closes at ``max_samples`` or before exceeding ``max_bytes`` (of all
    its field groups together). Names are family names: the files are ``<name>.<group>.tar``."""
    return list(pack_shards(sorted(samples, key=lambda s: s.key), split, config))


def pack_shards(samples: Iterable[Any], split: str, config: PipelineConfig) -> Iterator[tuple[str, list[Any]]]:
    """:func:`plan_shards` over samples already in key order, each group yielded as it closes (anything with
    ``nbytes``; the driver streams a split's samples through this and holds one shard's worth)."""
    current: list[Any] = []
    size = 0
    cfg = config.shards
    index = 0
    for sample in samples:
        if current and (len(current) >= cfg.max_samples or size + sample.nbytes > cfg.max_bytes):
            yield f"{cfg.prefix}-{split}-{index:06d}", current
            current, size, index = [], 0, index + 1
        current.append(sample)
        size += sample.nbytes
    if current:
        yield f"{cfg.prefix}-{split}-{index:06d}", current


def plan_digest(samples: list[Sample]) -> str:
    """What a shard will hold: keys, member bytes, and content-addressed files by name and size."""
    h = hashlib.sha256()
    for s in samples:
        h.update(s.key.encode())
        for suffix in sorted(s.members):
            value = s.members[suffix]
            ident = (f"{value.name}:{value.stat().st_size}".encode() if isinstance(value, Path)
                     else hashlib.sha256(value).digest())
            h.update(suffix.encode() + ident)
    return h.hexdigest()


# What a window's catalog row takes from its sample entry (besides key, source, track id, split and members).
WINDOW_META_KEYS = ("start_s", "duration_s", "reference_key", "augmentation")


@dataclass(frozen=True)
class ShardPlan:
    """One shard to write, complete enough for a worker that sees only the artefact store and the shard folder:
    each sample's key, its members (store-relative paths) and its window's catalog fields. ``prior_sha256`` is the
    manifest's checksum of a shard written earlier from this very plan (kept when the file still matches)."""

    name: str
    split: str
    digest: str
    prior_sha256: str | None
    samples: list[dict[str, Any]]

    def to_json(self) -> str:
        return canonical_json({"name": self.name, "split": self.split, "digest": self.digest,
                               "prior_sha256": self.prior_sha256, "samples": self.samples})

    @classmethod
    def from_json(cls, text: str) -> ShardPlan:
        d = json.loads(text)
        return cls(d["name"], d["split"], d["digest"], d["prior_sha256"], d["samples"])


# (plans, shard folder or URL, store, progress) -> one catalog part per plan (:func:`write_planned_shard`), any order
ShardWriter = Callable[[list[ShardPlan], str | Path, ArtefactStore, bool], list[dict[str, Any]]]


def plan_field_groups(plan: ShardPlan) -> dict[str, list[str]]:
    """The field groups of a plan's family, each with the member suffixes it holds."""
    return group_suffixes(suffix for s in plan.samples for suffix in s["members"])


def write_planned_shard(plan: ShardPlan, shard_dir: str | Path, store: ArtefactStore) -> dict[str, Any]:
    """Write (or keep, when the files there are the ones ``plan`` made before) one shard family, and return its
    catalog part: the ``shards`` rows of its files, the plan digest and the family's ``windows`` rows. Runs on
    whichever worker the engine picks; the same plan gives the same bytes and part anywhere. ``shard_dir`` may be
    an object-store URL: the family is then written in a local temporary folder and uploaded (one PUT per file;
    a stored family of the same plan is fetched and checked instead), so the worker needs no disk shared with
    anyone."""
    from songcorpus.io import storage

    field_groups = plan_field_groups(plan)
    groups = list(field_groups)
    if storage.is_url(shard_dir):
        with tempfile.TemporaryDirectory(prefix="songcorpus-shard-") as tmp:
            urls = {g: storage.join(shard_dir, group_file(plan.name, g)) for g in groups}
            fetched = bool(plan.prior_sha256) and all(storage.exists(u) for u in urls.values())
            if fetched:
                for g, url in urls.items():
                    storage.download(url, Path(tmp) / group_file(plan.name, g))
            part = write_planned_shard(plan, Path(tmp), store)
            if not (fetched and part["sha256"] == plan.prior_sha256):
                for g, url in urls.items():
                    storage.upload(Path(tmp) / group_file(plan.name, g), url)
        return part
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    shard = (describe_shard(shard_dir, plan.name, groups)
             if plan.prior_sha256 and family_present(shard_dir, plan.name, groups) else None)
    if shard is None or shard.sha256 != plan.prior_sha256:
        # store.path: the file in place, or on an object-store cache fetched into this worker's mirror
        samples = [Sample(s["key"], {suffix: store.path(rel) for suffix, rel in s["members"].items()})
                   for s in plan.samples]
        shard = write_shard(shard_dir, plan.name, samples)
    meta = {s["key"]: s for s in plan.samples}
    windows = []
    for i, key in enumerate(sorted(shard.offsets)):
        m, offs = meta[key], shard.offsets[key]
        windows.append({
            "key": key, "track_id": m["track_id"], "source": m["source"], "shard": plan.name,
            "index_in_shard": i, "split": m["split"], "start_s": m["start_s"],
            "duration_s": m["duration_s"], "fields": ",".join(sorted(offs)),
            "bytes": sum(size for _, _, size in offs.values()),
            "offsets_json": json.dumps({k: list(v) for k, v in sorted(offs.items())}, separators=(",", ":")),
            "reference_key": m["reference_key"],
            "augmentation_json": None if m["augmentation"] is None else canonical_json(m["augmentation"]),
        })
    files = [{"file": f.name, "group": f.group, "sha256": f.sha256, "bytes": f.nbytes} for f in shard.files]
    return {"shard": plan.name, "split": plan.split, "plan": plan.digest, "sha256": shard.sha256,
            "bytes": shard.nbytes, "n_samples": len(plan.samples), "files": files, "field_groups": field_groups,
            "windows": windows}


class PendingShards:
    """The shard families a run is about to write, in ``shards/.pending.json`` before any of their files exist:
    after a crash the next run knows which files in the folder are its own leftovers (and may remove them) and
    which are not (and never touches them)."""

    FILE = ".pending.json"

    def __init__(self, shard_dir: Path) -> None:
        self.path = shard_dir / self.FILE
        self.names: set[str] = set(json.loads(self.path.read_text())) if self.path.exists() else set()

    def note(self, names: Iterable[str]) -> None:
        new = set(names) - self.names
        if new:
            self.names |= new
            atomic_write_bytes(self.path, (json.dumps(sorted(self.names)) + "\n").encode())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def shard_family(file_name: str) -> str:
    """``shard-train-000001.audio.tar`` -> ``shard-train-000001`` (a plain ``<family>.tar`` is its own)."""
    return file_name.split(".", 1)[0]


def write_shards_here(plans: list[ShardPlan], shard_dir: str | Path, store: ArtefactStore,
                      progress: bool = True) -> list[dict[str, Any]]:
    """The in-process shard writer (Ray's default): one shard after another in this process."""
    return [write_planned_shard(plan, shard_dir, store)
            for plan in tqdm(plans, desc="shards", unit="shard", disable=not progress)]


def _member(store: ArtefactStore, rel: str) -> Path:
    """A sample member's local file (fetched into the mirror of an object-store cache; a missing one is reported
    by the caller with the sample it belongs to)."""
    try:
        return store.path(rel)
    except FileNotFoundError:
        return store.root / rel


# Accepted rows per samples-phase engine call: the most full analysis rows the driver holds at once.
SAMPLES_CHUNK = 2048


def build_corpus(rows: Iterable[Row], config: PipelineConfig, out: Path, store: ArtefactStore,
                 lineages: dict[str, dict[str, Any]], run_samples: Callable[[list[Row]], Iterable[Row]],
                 progress: bool = True, write_shards: ShardWriter | None = None,
                 full_rows: Callable[[], Iterable[Row]] | None = None) -> DiskMap[Decision]:
    """Decide, fit the codebook, run the samples phase (``run_samples``: the engine), write shards (``write_shards``:
    the engine's workers, else :func:`write_shards_here`) and the catalog from their parts.

    ``rows`` may be slim (``state_rows.slim_row``: what decisions read) when ``full_rows`` streams the full rows in
    source order (the state file): the samples phase then gets them :data:`SAMPLES_CHUNK` at a time and the tracks
    table is written as they stream. Windows are spooled to a local file as the samples phase returns them and
    packed into shard plans in key order from there, :data:`PLANS_CHUNK` plans per shard-writer call; the windows
    table streams from the parts the writers return. Per-track state (slim rows, decisions, splits, window counts)
    and the window spools are on local disk (``SpooledRows``, ``DiskMap``, ``SortedSpool``): what the driver holds
    in memory does not grow with the tracks, only with the copies ``near`` finds and the shards' small parts. The
    decisions come back as a :class:`DiskMap`."""
    if not isinstance(rows, (PackedRows, SpooledRows)):  # these come from a state file, in source order already
        rows = sorted(rows, key=lambda r: r["track"]["source"])
    if full_rows is None:
        def full_rows() -> Iterable[Row]:
            return rows
    near = near_duplicate_groups(rows, config, store)
    decisions = decide(rows, config, near)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = shard_dir / SHARD_MANIFEST
    old_manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    accepted = SpooledRows(r for r in rows if decisions[r["track"]["source"]].status == "accepted")
    groups = split_groups(rows, near)
    splits: DiskMap[str] = DiskMap((row["track"]["source"], assign_split(row, config, groups[row["track"]["source"]]))
                                   for row in accepted)
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
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out) as tmp:
        samples = SortedSpool(Path(tmp) / "samples.unsorted")  # "<split>\x1f<key>" -> the window's plan entry
        windows = SortedSpool(Path(tmp) / "windows.unsorted")  # shard -> its catalog windows rows
        try:
            if codebook is not None:
                run_samples_phase(full_rows, splits, decisions, codebook, units, lineages, run_samples, samples)
            planned: list[str] = []
            first: dict[tuple[str, ...], dict[str, Any]] = {}  # member set -> its key-first window (write_features)
            writer = write_shards or write_shards_here
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
            if sorted(parts) != sorted(planned):
                raise RuntimeError(f"the shard writer returned {len(parts)} catalog parts for {len(planned)} planned "
                                   f"shards")
            write_features(shard_dir, [_sample_of(m, store) for m in first.values()],
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
            track_ids = {r["track"]["source"]: track_id_of(r) for r in rows if r["track"]["source"] in near.kept_of}
            write_catalog_tables(out, config, store, lineages, full_rows, decisions, splits, n_windows, track_ids,
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
                      run_samples: Callable[[list[Row]], Iterable[Row]], spool: SortedSpool) -> None:
    """The samples phase over the accepted songs' full rows, :data:`SAMPLES_CHUNK` at a time; each window's plan
    entry goes to ``spool`` (keyed by split and key: the packing order); a song the phase rejects gets its
    decision and leaves ``splits``."""
    for chunk in chunked((r for r in full_rows() if r["track"]["source"] in splits), SAMPLES_CHUNK):
        todo = sample_rows(chunk, splits, codebook, lineages)
        del chunk
        if units is not None:
            for r in todo:
                r["unit_codebook"] = {"file": units["file"], "sha256": units["sha256"]}
        for row in run_samples(todo):
            src = row["track"]["source"]
            if row["outcome"] is not None:
                o = row["outcome"]
                decisions[src] = Decision(o["status"], o["stage"], o["code"], o["reason"])
                splits.pop(src, None)
                continue
            split, track_id = splits[src], track_id_of(row)
            for entry in row["results"]["samples"]["samples"]:
                meta = {"key": entry["key"], "members": entry["members"], "source": src, "track_id": track_id,
                        "split": split, **{k: entry[k] for k in WINDOW_META_KEYS}}
                spool.add(f"{split}\x1f{entry['key']}", (canonical_json(meta) + "\n").encode())
        fault_point("samples-chunk")


def _sample_of(meta: dict[str, Any], store: ArtefactStore) -> Sample:
    members = {suffix: _member(store, rel) for suffix, rel in meta["members"].items()}
    missing = [str(p) for p in members.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"sample {meta['key']} of {meta['source']}: {len(missing)} members are missing from "
                                f"the cache (first {missing[0]}); run `songcorpus curate` again to recompute them")
    return Sample(meta["key"], members)


def stream_plans(spool: SortedSpool, config: PipelineConfig, store: ArtefactStore,
                 old_manifest: dict[str, Any]) -> Iterator[ShardPlan]:
    """Shard plans packed from the spooled windows, split by split in key order, one shard's samples at a time."""
    metas = (json.loads(line) for line in spool.sorted_lines())
    for split, in_split in itertools.groupby(metas, key=lambda m: m["split"]):
        samples = (_PlannedSample(_sample_of(meta, store), meta) for meta in in_split)
        for name, group in pack_shards(samples, split, config):
            digest = plan_digest([p.sample for p in group])
            prior = old_manifest.get(name) or {}
            yield ShardPlan(name, split, digest, prior.get("sha256") if prior.get("plan") == digest else None,
                            [p.meta for p in group])


@dataclass(frozen=True)
class _PlannedSample:
    sample: Sample
    meta: dict[str, Any]

    @property
    def nbytes(self) -> int:
        return self.sample.nbytes


def write_catalog_tables(out: Path, config: PipelineConfig, store: ArtefactStore, lineages: dict[str, dict[str, Any]],
                         full_rows: Callable[[], Iterable[Row]], decisions: Mapping[str, Decision],
                         splits: Mapping[str, str], n_windows: Mapping[str, int], track_ids: dict[str, str],
                         near: NearDuplicates, parts: dict[str, dict[str, Any]], windows: SortedSpool) -> None:
    """The catalog, its two big tables streamed: tracks from the full rows, windows from the shards' parts."""

    def tracks_rows() -> Iterator[dict[str, Any]]:
        for r in full_rows():
            src = r["track"]["source"]
            t = track_row(r, decisions[src], splits.get(src), n_windows.get(src, 0), lineages)
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


def write_shard_indexes(shard_dir: Path, parts: dict[str, dict[str, Any]]) -> None:
    """Per split, ``index-<split>.json``: a wids index of the families' ``meta`` files (JSON labels: wids and
    webdataset read it as it is) whose entries also name every group file of the family (``groups``), with the
    suffixes each group holds (``field_groups``); and ``index-<split>.<group>.json``, a plain wids index of one
    group's files (same keys, same order). A split with no samples has no index (readers name the splits that do)."""
    from songcorpus.schemas.sample import FIELD_GROUPS

    for split in SPLITS:
        shards = [n for n in sorted(parts) if parts[n]["split"] == split]
        wanted = {f"index-{split}.json", *(f"index-{split}.{g}.json" for g in FIELD_GROUPS)}
        written: set[str] = set()
        if shards:
            field_groups = parts[shards[0]]["field_groups"]  # one corpus has one member set (hf_features)
            head = {"__kind__": "wids-shard-index-v1", "wids_version": 1}

            def entry(n: str, f: dict[str, Any]) -> dict[str, Any]:
                return {"url": f["file"], "nsamples": parts[n]["n_samples"], "filesize": f["bytes"]}

            files = {n: {f["group"]: f for f in parts[n]["files"]} for n in shards}
            index = {**head, "name": f"songcorpus-{split}", "spec_version": SAMPLE_SPEC_VERSION,
                     "field_groups": {g: field_groups[g] for g in FIELD_GROUPS if g in field_groups},
                     "shardlist": [{**entry(n, files[n]["meta"]), "family": n,
                                    "groups": {g: {"url": f["file"], "filesize": f["bytes"], "sha256": f["sha256"]}
                                               for g, f in files[n].items()}} for n in shards]}
            atomic_write_bytes(shard_dir / f"index-{split}.json", (json.dumps(index, indent=1) + "\n").encode())
            written.add(f"index-{split}.json")
            for g in index["field_groups"]:
                one = {**head, "name": f"songcorpus-{split}-{g}",
                       "shardlist": [entry(n, files[n][g]) for n in shards]}
                atomic_write_bytes(shard_dir / f"index-{split}.{g}.json", (json.dumps(one, indent=1) + "\n").encode())
                written.add(f"index-{split}.{g}.json")
        for name in wanted - written:
            (shard_dir / name).unlink(missing_ok=True)


def field_rows(config: PipelineConfig, store: ArtefactStore, lineages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``fields`` table: every provided field with the stage, model and checksum that made it."""
    from songcorpus.pipelines.executor import PHASES, build_stages

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
    track = row["track"]
    meta = track["metadata"]
    ingest = row["results"].get("ingest", {})
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
        **{m: next((res[m] for res in row["results"].values() if m in res), None) for m in METHOD_COLUMNS},
        **({"classify_method": lineages["classify"]["model"]}  # the lite classifier names its model in lineage only
           if "classify" in row["results"] and "classify_method" not in row["results"]["classify"]
           and "classify" in lineages else {}),
        **dict(zip(("caption", "caption_method"), effective_caption(row), strict=True)),  # the source's, else generated
        "key": row["results"].get("key", {}).get("key"), "mode": row["results"].get("key", {}).get("mode"),
        "extra_json": canonical_json(track.get("extra") or {}),
        "lineage_json": canonical_json(lineage_of(row, lineages)),
        "n_windows": n_windows,
    }
