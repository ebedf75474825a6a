"""Shard plans: which samples go in which shard, in a stable order, each plan complete enough for a worker that
sees only the artefact store (its digest tells a re-run whether the shard on disk is still the one planned).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from songcorpus.io.artefacts import ArtefactStore
from songcorpus.pipelines.corpus.decide import lineage_of
from songcorpus.pipelines.job.state_rows import SortedSpool, scores_of
from songcorpus.pipelines.sinks.shard_writer import Sample
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, canonical_json, results_of, source_of, track_of
from songcorpus.schemas.sample import group_suffixes


def sample_rows(accepted: list[Row], splits: Mapping[str, str], codebook: dict[str, str],
                lineages: dict[str, dict[str, Any]]) -> list[Row]:
    """Rows for the samples phase: what SampleStage reads besides the analysis results (a copy of the results
    dict, so an in-process runner never writes samples into the analysis rows that state/rows.jsonl records)."""
    return [{"track": track_of(r), "results": dict(results_of(r)), "outcome": None, "split": splits[source_of(r)],
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
WINDOW_META_KEYS = ("start_s", "duration_s", "reference_key", "augmentation", "f0_trust")


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


def member_path(store: ArtefactStore, rel: str) -> Path:
    """A sample member's local file (fetched into the mirror of an object-store cache; a missing one is reported
    by the caller with the sample it belongs to)."""
    try:
        return store.path(rel)
    except FileNotFoundError:
        return store.root / rel


def sample_of(meta: dict[str, Any], store: ArtefactStore) -> Sample:
    members = {suffix: member_path(store, rel) for suffix, rel in meta["members"].items()}
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
        samples = (_PlannedSample(sample_of(meta, store), meta) for meta in in_split)
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
