"""Each track's decision over its stored scores: the stage outcome, exact and near duplicates, the config's gates;
and the lineage (stage, version, model, config) of the fields a row carries.

No model runs here and nothing is written: ``build_corpus`` (pipelines/build_corpus.py) calls it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from songcorpus.io.disk_map import DiskMap
from songcorpus.pipelines.job.state_rows import scores_of
from songcorpus.schemas.config import PipelineConfig
from songcorpus.schemas.row import Row, outcome_of, results_of, source_of
from songcorpus.transforms.corpus.gates import apply_gates, check_gate_scores
from songcorpus.transforms.corpus.near_duplicates import NearDuplicates, exact_duplicates


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
            src, outcome = source_of(row), outcome_of(row)
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


def lineage_of(row: Row, lineages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: lineages[name] for name in results_of(row) if name in lineages}
