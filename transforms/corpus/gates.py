"""Late-binding gates: config thresholds applied over stored scores (DataTrove-style: a decision + a reason).

No model runs here. Changing a threshold and rebuilding re-decides every track from the catalog's
scores alone. A missing score (None: undefined for that audio) passes the gate; tracks where a
stage failed never reach the gates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from songcorpus.schemas.catalog import SCORE_COLUMNS
from songcorpus.schemas.config import Gate


@dataclass(frozen=True)
class GateDecision:
    stage: str
    code: str
    reason: str


def check_gate_scores(gates: Sequence[Gate]) -> None:
    unknown = [g.score for g in gates if g.score not in SCORE_COLUMNS]
    if unknown:
        raise ValueError(f"gates name unknown scores {unknown}; known scores: {', '.join(SCORE_COLUMNS)}")


def apply_gates(gates: Sequence[Gate], scores: Mapping[str, Any]) -> GateDecision | None:
    """The first gate the scores fail, or None when the track passes every gate."""
    for gate in gates:
        value = scores.get(gate.score)
        if value is None:
            continue
        stage = SCORE_COLUMNS[gate.score][1]
        if gate.min is not None and value < gate.min:
            return GateDecision(stage, gate.name, f"{gate.score}={value:.6g} < min {gate.min:g} (gate {gate.name})")
        if gate.max is not None and value > gate.max:
            return GateDecision(stage, gate.name, f"{gate.score}={value:.6g} > max {gate.max:g} (gate {gate.name})")
    return None
