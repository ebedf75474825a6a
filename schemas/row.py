"""The in-flight row every stage and engine carries: its shape, the accessors that read and write it, and the one
JSON form it (and every cache entry and shard metadata file) is written in.

A row stays a plain dict so every engine can carry it (Ray and Beam move it as JSON; cache entries and
``OUT/state/rows.jsonl`` hold it): :class:`Row` is its typed view, not a class of its own. It holds the input's
record (``track``: :class:`TrackDict`, ``TrackRecord.to_dict()``), the results of the stages run so far
(``results``: stage name -> the fields that stage ``provides``; :data:`RESULT_TYPES` types the ones other stages
and the driver read) and the ``outcome`` (None while the row is in play, else :class:`Outcome`: why a stage rejected
or failed it). The samples phase adds the driver's inputs (:data:`ROW_INPUTS`). On its way back from the workers a row
also carries ``stage_seconds`` (the seconds each stage spent on it in this phase: :func:`add_stage_seconds`), which the
driver takes off (:func:`take_stage_seconds`) for its progress figures before the row is kept anywhere, so it never
reaches the state file, a cache entry or the catalog.

Stages and the driver read each other's results through the accessors here (:func:`result`, :func:`audio_file`,
:func:`vocals_file`, :func:`source_of`...), not through string paths, so a reader finds the shape with
go-to-definition. Reads nothing from disk and writes nothing. Fails: a strict accessor on a row without the result
(a stage that did not run) raises :class:`MissingResult`, naming the stage, the field and the input; the tolerant
ones (:func:`optional_result`, :func:`optional_field`, :func:`source_sha256`, :func:`has_vocals`) give None or their
default instead, where a reader takes a stage that did not run as "not measured".
:func:`canonical_json` is byte-stable: sorted keys, no whitespace, UTF-8 kept as it is, NaN refused, so equal rows
give equal bytes and equal cache keys anywhere.
"""

# No ``from __future__ import annotations`` here: TypedDict reads Required/NotRequired from evaluated annotations
# (Python 3.11 counts a string ``NotRequired[...]`` as required).
import json
from typing import Any, Literal, NotRequired, Required, TypedDict, cast


class TrackDict(TypedDict, total=False):
    """``TrackRecord.to_dict()`` (schemas/track.py says what each field is). A slim row (``state_rows.slim_row``)
    of a decided input keeps ``source`` and ``metadata`` only."""

    source: Required[str]
    path: str
    vocals: str | None
    accompaniment: str | None
    metadata: dict[str, Any]
    extra: dict[str, Any]
    scan_error: str | None


class Outcome(TypedDict):
    """Why a row left the analysis: a stage's ``Rejection`` (``rejected``) or an ``InputError`` (``failed``), or a
    gate (``stage`` is then the gate's stage). ``early``: an early gate rejected it before its analysis finished."""

    status: Literal["rejected", "failed"]
    stage: str
    code: str
    reason: str
    early: NotRequired[bool]


class CodebookRef(TypedDict):
    """A corpus codebook the samples phase encodes with: its artefact-store path and sha256."""

    file: str
    sha256: str


class Row(TypedDict):
    """The in-flight row. ``results`` maps a stage name to the fields it provided (:data:`RESULT_TYPES`); the
    samples phase's rows also carry :data:`ROW_INPUTS` (the track's split, the corpus codebooks, its scores and
    its fields' lineage); ``stage_seconds`` is the timing a row carries back to the driver only (module docstring)."""

    track: TrackDict
    results: dict[str, dict[str, Any]]
    outcome: Outcome | None
    split: NotRequired[str]
    codebook: NotRequired[CodebookRef]
    unit_codebook: NotRequired[CodebookRef]
    scores: NotRequired[dict[str, Any]]
    lineage: NotRequired[dict[str, dict[str, Any]]]
    stage_seconds: NotRequired[dict[str, float]]


# The results other stages and the driver read, one TypedDict per stage: keys are exactly the providing stage's
# ``provides`` (tests/test_row_shape.py checks it), so the stage's docstring says what each field means.

class IngestResult(TypedDict):
    audio_sha256: str
    audio_file: str
    n_frames: int
    duration_s: float
    source_sample_rate: int
    source_channels: int
    source_format: str
    loudness_lufs: float | None
    clipping_ratio: float
    nonfinite_ratio: float
    source_sha256: str


class FingerprintResult(TypedDict):
    fingerprint_file: str
    fingerprint_items: int


class QualityResult(TypedDict):
    silence_ratio: float
    bandwidth_hz: float | None
    dc_offset: float
    snr_db: float | None


class ClassifyResult(TypedDict):
    """The lite (YAMNet) classifier's fields; the full one (AST) adds ``classify_method``."""

    speech_prob: float
    singing_prob: float
    music_prob: float
    speech_fraction: float
    music_tags: dict[str, list[list[Any]]]
    classify_method: NotRequired[str]


class StemsResult(TypedDict):
    vocals_file: str
    accompaniment_file: str
    vocals_sha256: str
    accompaniment_sha256: str
    stems_method: str
    has_vocals: bool
    vocal_energy_ratio: float
    stem_residual_db: float | None
    stem_length_fixed_frames: int
    separator_sdr_vocals: float | None
    separator_sdr_accompaniment: float | None
    separator_si_sdr_vocals: float | None


class VadResult(TypedDict):
    vad_segments: list[list[float]]
    vocal_activity: float
    speech_activity: float
    vad_method: str


class F0Result(TypedDict):
    f0_file: str
    periodicity_file: str
    f0_frames: int
    f0_voiced_fraction: float
    f0_median_hz: float | None
    f0_method: str
    f0_model_fraction: float
    f0_confidence: float | None  # mean confidence (activation at the chosen bin) over voiced frames


class StructureResult(TypedDict):
    tempo_bpm: float | None
    beats: list[float]
    downbeats: list[float]
    beats_per_bar: int | None
    sections: list[list[Any]]  # [start_s, end_s, label]
    structure_method: str


class KeyResult(TypedDict):
    key: str | None
    mode: str | None
    key_strength: float | None
    key_margin: float | None
    key_method: str | None


class CaptionResult(TypedDict):
    caption: str
    caption_method: str
    caption_facts: dict[str, Any]


class LyricsResult(TypedDict):
    lyrics_text: str
    lyrics_language: str | None
    lyrics_language_probability: float | None
    lyrics_segments: list[dict[str, Any]] | None
    lyrics_words: list[dict[str, Any]] | None
    lyrics_detail_file: str | None
    lyrics_method: str
    lyrics_flags: list[str]
    lyrics_cer: float | None


class CodecFramesResult(TypedDict):
    codec_frames_file: str
    codec_frames: int


class UnitFramesResult(TypedDict):
    unit_frames_file: str
    unit_frames: int


class SamplesResult(TypedDict):
    samples: list[dict[str, Any]]  # per window: key, start_s, duration_s, reference_key, augmentation, members
    n_candidate_windows: int
    n_f0_gated_windows: int  # candidate windows the f0 confidence gate dropped


# stage name -> the typed view of its result
RESULT_TYPES: dict[str, type] = {
    "ingest": IngestResult, "fingerprint": FingerprintResult, "quality": QualityResult, "classify": ClassifyResult,
    "stems": StemsResult, "vad": VadResult, "f0": F0Result, "structure": StructureResult, "key": KeyResult,
    "caption": CaptionResult, "lyrics": LyricsResult, "codec_frames": CodecFramesResult,
    "unit_frames": UnitFramesResult, "samples": SamplesResult,
}

# A stage requires ``track.<field>`` to read the input's own record (or its metadata), not an earlier stage's result.
TRACK_PREFIX = "track."

# What the driver puts on a row besides the track and the earlier stages' results, per phase: the samples phase
# gets the track's split, the corpus codebooks (store path + sha256), its scores and its fields' lineage.
ROW_INPUTS: dict[str, tuple[str, ...]] = {
    "analysis": (),
    "samples": ("split", "codebook", "unit_codebook", "scores", "lineage"),
}


class MissingResult(KeyError):
    """A row read for a stage's result (or one of its fields) that the row does not hold: the stage did not run
    before the reader, or its stored result is from a version without the field. A fault of the job's composition,
    not of the input (the runner stops the job with it)."""

    def __init__(self, stage: str, field: str | None = None, source: str | None = None, stage_ran: bool = False) -> None:
        super().__init__(stage, field, source, stage_ran)  # all of them: the error pickles across engines
        self.stage, self.field, self.source, self.stage_ran = stage, field, source, stage_ran

    def __str__(self) -> str:
        row = f"the row of input {self.source!r}" if self.source else "the row"
        if self.stage_ran:
            return (f"{row} has no {self.stage} field {self.field!r}: its {self.stage} result lacks it (from an older "
                    "version of the stage?)")
        if self.field is not None:
            wanted = f"field {self.field!r}"
        elif self.stage in RESULT_TYPES:
            wanted = f"fields ({', '.join(RESULT_TYPES[self.stage].__annotations__)})"
        else:
            wanted = "result"
        return f"{row} has no {self.stage} {wanted}: stage {self.stage} has not run on it"


def new_row(track: TrackDict | dict[str, Any]) -> Row:
    """A row as the analysis phase starts it: the input's record, no results, no outcome."""
    return {"track": cast(TrackDict, track), "results": {}, "outcome": None}


def track_of(row: Row) -> TrackDict:
    return row["track"]


def source_of(row: Row) -> str:
    """The input's source name: the row's key in the catalog, the state file and every per-track map."""
    return row["track"]["source"]


def outcome_of(row: Row) -> Outcome | None:
    """None while the row is in play; else why it was rejected or failed."""
    return row["outcome"]


def set_outcome(row: Row, status: Literal["rejected", "failed"], stage: str, code: str, reason: str, *,
                early: bool = False) -> None:
    outcome: Outcome = {"status": status, "stage": stage, "code": code, "reason": reason}
    if early:
        outcome["early"] = True
    row["outcome"] = outcome


def rejected_early(row: Row) -> bool:
    """Whether an early gate rejected the row before its analysis finished (a row without an outcome: no)."""
    return bool((row.get("outcome") or {}).get("early"))


def results_of(row: Row) -> dict[str, dict[str, Any]]:
    """Every stage result of the row, by stage name, in the order the stages ran."""
    return row["results"]


def has_result(row: Row, stage: str) -> bool:
    return stage in row["results"]


def set_result(row: Row, stage: str, fields: dict[str, Any]) -> None:
    row["results"][stage] = fields


def add_stage_seconds(row: Row, stage: str, seconds: float) -> None:
    """Add the seconds ``stage`` spent on the row (a worker's measure, carried back to the driver)."""
    spent = row.setdefault("stage_seconds", {})
    spent[stage] = spent.get(stage, 0.0) + seconds


def take_stage_seconds(row: Row) -> dict[str, float]:
    """Remove and return the row's stage timings (empty when it carries none): what the row holds afterwards is the
    same whatever the timings were, so stored rows stay byte-identical from run to run."""
    return row.pop("stage_seconds", None) or {}


def _source_or_none(row: Row) -> str | None:
    return (row.get("track") or {}).get("source")


def result(row: Row, stage: str) -> dict[str, Any]:
    """A stage's result; :class:`MissingResult` (naming the stage and what it provides) when it did not run."""
    found = row["results"].get(stage)
    if found is None:
        raise MissingResult(stage, source=_source_or_none(row))
    return found


def optional_result(row: Row, stage: str) -> dict[str, Any] | None:
    """A stage's result, or None when it did not run (a profile without the stage, a row decided before it)."""
    return row["results"].get(stage)


def result_field(row: Row, stage: str, field: str) -> Any:
    """One field of a stage's result; :class:`MissingResult` naming the stage and the field when either is absent."""
    found = row["results"].get(stage)
    if found is None:
        raise MissingResult(stage, field, _source_or_none(row))
    if field not in found:
        raise MissingResult(stage, field, _source_or_none(row), stage_ran=True)
    return found[field]


def optional_field(row: Row, stage: str, field: str) -> Any:
    """One field of a stage's result, or None when the stage did not run or its result lacks the field."""
    return (row["results"].get(stage) or {}).get(field)


def ingest_result(row: Row) -> IngestResult:
    return cast(IngestResult, result(row, "ingest"))


def vad_result(row: Row) -> VadResult:
    return cast(VadResult, result(row, "vad"))


def structure_result(row: Row) -> StructureResult:
    return cast(StructureResult, result(row, "structure"))


def caption_result(row: Row) -> CaptionResult:
    return cast(CaptionResult, result(row, "caption"))


def lyrics_result(row: Row) -> LyricsResult:
    return cast(LyricsResult, result(row, "lyrics"))


def samples_result(row: Row) -> SamplesResult:
    return cast(SamplesResult, result(row, "samples"))


def audio_file(row: Row) -> str:
    """The standardised mix in the artefact store (ingest)."""
    return result_field(row, "ingest", "audio_file")


def audio_sha256(row: Row) -> str:
    """The standardised mix's content identity (ingest): what every stage that reads the mix is keyed on."""
    return result_field(row, "ingest", "audio_sha256")


def source_sha256(row: Row) -> str | None:
    """The input file's sha256 (ingest); None for a row ingest never read, or state from before ingest version 3."""
    return optional_field(row, "ingest", "source_sha256")


def vocals_file(row: Row) -> str:
    return result_field(row, "stems", "vocals_file")


def vocals_sha256(row: Row) -> str:
    return result_field(row, "stems", "vocals_sha256")


def accompaniment_file(row: Row) -> str:
    return result_field(row, "stems", "accompaniment_file")


def accompaniment_sha256(row: Row) -> str:
    return result_field(row, "stems", "accompaniment_sha256")


def has_vocals(row: Row) -> bool:
    """Whether the stems stage found a vocal stem that is not silent (a result from before it recorded this: yes);
    the stems stage must have run."""
    found = row["results"].get("stems")
    if found is None:
        raise MissingResult("stems", "has_vocals", _source_or_none(row))
    return found.get("has_vocals", True)


def canonical_json(obj: Any) -> str:
    """The one JSON encoding used for rows, cache entries and shard metadata (byte-stable)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


__all__ = [
    "RESULT_TYPES", "ROW_INPUTS", "TRACK_PREFIX", "CaptionResult", "ClassifyResult", "CodebookRef", "CodecFramesResult",
    "F0Result", "FingerprintResult", "IngestResult", "KeyResult", "LyricsResult", "MissingResult", "Outcome",
    "QualityResult", "Row", "SamplesResult", "StemsResult", "StructureResult", "TrackDict", "UnitFramesResult",
    "VadResult", "accompaniment_file", "accompaniment_sha256", "add_stage_seconds", "audio_file", "audio_sha256",
    "canonical_json", "caption_result", "has_result", "has_vocals", "ingest_result", "lyrics_result", "new_row",
    "optional_field", "optional_result", "outcome_of", "rejected_early", "result", "result_field", "results_of", "samples_result",
    "set_outcome", "set_result", "source_of", "source_sha256", "structure_result", "take_stage_seconds", "track_of",
    "vad_result", "vocals_file", "vocals_sha256",
]
