"""Writing planned shards: one plan to one shard family (atomic files, kept when already written from the same
plan), the crash journal of families about to be written, and the shard manifest and indexes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.io.atomic import atomic_write_bytes
from songcorpus.pipelines.corpus.shard_plans import ShardPlan, plan_field_groups
from songcorpus.pipelines.sinks.shard_writer import Sample, describe_shard, family_present, write_shard
from songcorpus.schemas.row import canonical_json
from songcorpus.schemas.sample import SAMPLE_SPEC_VERSION, group_file
from songcorpus.schemas.track import SPLITS

SHARD_MANIFEST = "manifest.json"


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
            "f0_trust": m.get("f0_trust"),
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
